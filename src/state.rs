//! The handles every handler shares, cheap to clone.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::answer::{AnswerContext, AnswerEvent, AnswerRequest, Exchange};
use crate::config::Config;
use crate::limiter::Entry;

#[derive(Clone)]
pub struct AppState {
    /// Settings as loaded at start-up.
    pub config: Arc<Config>,
    /// What every `/answer` exchange needs: the upstream client, the permit queue, the stop signal.
    pub answer: AnswerContext,
    /// Owns every exchange task, so shutdown waits for them (and for what they log).
    pub tasks: TaskTracker,
    /// Set when shutdown begins: new work is refused with 503 and `/health` says so.
    draining: Arc<AtomicBool>,
    /// Exchanges running now, for `/health`.
    exchanges_open: Arc<AtomicUsize>,
}

impl AppState {
    pub fn new(config: Arc<Config>, answer: AnswerContext) -> Self {
        Self {
            config,
            answer,
            tasks: TaskTracker::new(),
            draining: Arc::new(AtomicBool::new(false)),
            exchanges_open: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn begin_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn exchanges_open(&self) -> usize {
        self.exchanges_open.load(Ordering::Acquire)
    }

    /// Runs one exchange in its own tracked task; its events go to `tx` only.
    pub fn start_exchange(
        &self,
        request_id: String,
        request: AnswerRequest,
        entry: Entry,
        tx: mpsc::Sender<AnswerEvent>,
        received: Instant,
    ) {
        let exchange = Exchange::new(self.answer.clone(), tx, received);
        let open = self.exchanges_open.clone();
        open.fetch_add(1, Ordering::AcqRel);
        self.tasks.spawn(async move {
            let outcome = exchange.run(request_id.clone(), request, entry).await;
            open.fetch_sub(1, Ordering::AcqRel);
            tracing::info!(
                request_id,
                status = outcome.status.as_str(),
                queue_ms = outcome.timings.queue_ms,
                ttft_ms = outcome.timings.ttft_ms,
                total_ms = outcome.timings.total_ms,
                "answer finished"
            );
        });
    }
}
