//! Whether the upstream can be reached, for `/health/ready`. Every upstream call tells (any HTTP
//! answer means reachable, a failed connection means not), and while no call has told for
//! `upstream.health_check_ms`, a probe asks: `GET {base_url}/models`, where any HTTP status,
//! even 401 or 404, means the upstream is there.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What the last call or probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reach {
    /// Nothing has been tried yet (the first probe runs at start-up).
    Unknown,
    Reachable,
    Unreachable,
}

/// Shared by the client (which reports each call) and the probe.
#[derive(Debug)]
pub struct Reachability {
    state: AtomicU8,
    /// Milliseconds since `epoch` of the last report.
    reported_ms: AtomicU64,
    epoch: Instant,
}

impl Default for Reachability {
    fn default() -> Self {
        Self {
            state: AtomicU8::new(0),
            reported_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

impl Reachability {
    pub fn now(&self) -> Reach {
        match self.state.load(Ordering::Acquire) {
            1 => Reach::Reachable,
            2 => Reach::Unreachable,
            _ => Reach::Unknown,
        }
    }

    /// A call or probe got an HTTP answer (`true`) or could not connect (`false`).
    pub fn report(&self, reachable: bool) {
        let state = if reachable { 1 } else { 2 };
        let before = self.state.swap(state, Ordering::AcqRel);
        self.reported_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Release);
        if before != state {
            if reachable {
                tracing::info!("upstream reachable");
            } else {
                tracing::warn!("upstream unreachable: /health/ready reports not ready");
            }
        }
    }

    fn since_report(&self) -> Duration {
        let now = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.reported_ms.load(Ordering::Acquire)))
    }
}

/// Probes `url` whenever no call has reported for `every`, until `stop`.
pub async fn probe(
    reach: Arc<Reachability>,
    http: reqwest::Client,
    url: reqwest::Url,
    every: Duration,
    stop: CancellationToken,
) {
    let mut first = true;
    loop {
        let idle = reach.since_report();
        if first || idle >= every {
            first = false;
            let answered = tokio::time::timeout(every, http.get(url.clone()).send()).await;
            reach.report(matches!(answered, Ok(Ok(_))));
        }
        let wait = every
            .saturating_sub(reach.since_report())
            .max(Duration::from_millis(10));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => return,
        }
    }
}
