//! Whether this instance reaches Redis. A change is logged once, shown by `/health`
//! (`"cluster": "ok" | "degraded"`) and `/metrics` (`chat_proxy_cluster_up`), and waiters are
//! told through the watch.

use tokio::sync::watch;

use crate::config::OnRedisDown;

#[derive(Clone)]
pub struct ClusterHealth {
    up: watch::Sender<bool>,
    on_down: OnRedisDown,
    local_share: usize,
}

impl ClusterHealth {
    /// Starts up until a call says otherwise.
    pub fn new(on_down: OnRedisDown, local_share: usize) -> Self {
        Self {
            up: watch::Sender::new(true),
            on_down,
            local_share,
        }
    }

    pub fn is_up(&self) -> bool {
        *self.up.borrow()
    }

    /// What `/health` shows.
    pub fn label(&self) -> &'static str {
        if self.is_up() { "ok" } else { "degraded" }
    }

    pub fn on_down(&self) -> OnRedisDown {
        self.on_down
    }

    /// Redis failed a call: logged the first time only.
    pub fn down(&self, error: &dyn std::fmt::Display) {
        if self.up.send_replace(false) {
            match self.on_down {
                OnRedisDown::Local => tracing::error!(
                    error = %error,
                    local_share = self.local_share,
                    "cluster degraded: Redis cannot be reached; answers run on this instance's local share of permits until it is back"
                ),
                OnRedisDown::Reject => tracing::error!(
                    error = %error,
                    "cluster degraded: Redis cannot be reached; answers are refused (503 cluster_unavailable) until it is back"
                ),
            }
        }
    }

    /// Redis answered again: logged the first time only.
    pub fn up(&self) {
        if !self.up.send_replace(true) {
            tracing::info!("cluster ok: Redis is back; permits and queue are shared again");
        }
    }

    /// Resolves when Redis is found down.
    pub async fn went_down(&self) {
        let mut up = self.up.subscribe();
        let _ = up.wait_for(|up| !*up).await;
    }
}
