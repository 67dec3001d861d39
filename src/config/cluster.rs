//! `[cluster]`: several instances sharing one permit pool and one queue through Redis.

use serde::{Deserialize, Serialize};

/// What an instance does while Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnRedisDown {
    /// Keep serving on `local_share` permits of this instance's own.
    Local,
    /// Refuse answers (503 `cluster_unavailable`) until Redis is back.
    Reject,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `redis://HOST:PORT/DB`. Empty: permits and queue are this process's own.
    pub redis_url: String,
    /// Name of the environment variable holding Redis's password, if any (a password in the
    /// URL wins).
    pub password_env: String,
    /// Key prefix: instances with the same name share one pool and one queue.
    pub name: String,
    /// A permit not renewed within this is taken back (a crashed instance's).
    pub lease_ms: u64,
    /// `local` or `reject`.
    pub on_redis_down: OnRedisDown,
    /// Permits per instance while Redis is down, with `on_redis_down = "local"`.
    pub local_share: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis_url: String::new(),
            password_env: "CHAT_PROXY_REDIS_PASSWORD".into(),
            name: "chat-proxy".into(),
            lease_ms: 10_000,
            on_redis_down: OnRedisDown::Local,
            local_share: 1,
        }
    }
}

impl ClusterConfig {
    pub fn enabled(&self) -> bool {
        !self.redis_url.trim().is_empty()
    }
}
