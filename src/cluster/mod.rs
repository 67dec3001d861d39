//! Several instances, one upstream limit (`[cluster]`): the permit pool and its queue kept in
//! Redis, so `limits.max_concurrent_upstream` counts over every instance with the same
//! `cluster.name`.
//! - [`redis_pool`]: the Lua scripts that take, queue, grant and give back permits atomically;
//! - [`pool`]: [`SharedPool`], the process's side: leases renewed while requests run, waiters
//!   woken when a permit frees, a local share while Redis is away;
//! - [`wake`]: the pub/sub listener that hears of freed permits;
//! - [`health`]: whether Redis answers, for `/health`, `/metrics` and the log.

mod health;
mod pool;
mod redis_pool;
mod wake;

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

pub use health::ClusterHealth;
pub use pool::{SharedClientSlot, SharedEntry, SharedPermit, SharedPool, SharedWaiter};

use crate::config::ClusterConfig;

/// How talking to Redis failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("Redis did not answer within {} ms", .0.as_millis())]
    Timeout(Duration),
}

/// The Redis client for `config`, with the password from `password_env` when the URL has none.
pub fn redis_client(config: &ClusterConfig) -> anyhow::Result<redis::Client> {
    use anyhow::Context as _;
    let client = redis::Client::open(config.redis_url.trim())
        .context("cluster.redis_url is not a Redis URL")?;
    let password = std::env::var(&config.password_env)
        .ok()
        .filter(|p| !p.is_empty())
        .map(SecretString::from);
    match password {
        Some(password)
            if client
                .get_connection_info()
                .redis_settings()
                .password()
                .is_none() =>
        {
            let info = client.get_connection_info().clone();
            let settings = info
                .redis_settings()
                .clone()
                .set_password(password.expose_secret());
            redis::Client::open(info.set_redis_settings(settings))
                .context("cluster.redis_url with the password from cluster.password_env")
        }
        _ => Ok(client),
    }
}

/// The URL without its password, for the log.
pub fn describe(url: &str) -> String {
    match url::Url::parse(url.trim()) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            url.to_string()
        }
        Err(_) => "(not a URL)".to_owned(),
    }
}
