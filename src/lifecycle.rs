//! The server's lifecycle in one handle: the trackers that own every task shutdown waits for,
//! the draining flag that refuses new work, and the signal that ends the streams still open when
//! the grace period is over.
//!
//! Every task the crate starts is spawned here (clippy's `disallowed_methods` forbids
//! `tokio::spawn` elsewhere), in one of two kinds:
//! - work ([`Lifecycle::spawn`]): exchanges, OCR jobs and recognitions. Shutdown waits for all of
//!   it before the log writer drains, so every record is handed over first.
//! - services ([`Lifecycle::spawn_service`]): the log writer, the demo model and the upstream
//!   probe, which run until their own stop. Shutdown waits for them last, after stopping them.

use std::future::Future;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Cheap to clone: every clone is the same lifecycle.
#[derive(Clone, Default)]
pub struct Lifecycle(Arc<Inner>);

#[derive(Default)]
struct Inner {
    /// Owns every exchange, job and recognition, so shutdown waits for them.
    tasks: TaskTracker,
    /// Owns the services that run until their own stop.
    services: TaskTracker,
    /// Cancelled when shutdown begins: new work is refused with 503 and `/health` says so, and
    /// background loops (the upstream probe) end.
    draining: CancellationToken,
    /// Cancelled when shutdown's grace period is over: streams still running end with an error.
    stop_streams: CancellationToken,
}

impl Lifecycle {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `work` in a task that shutdown waits for.
    pub fn spawn<F>(&self, work: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.0.tasks.spawn(work)
    }

    /// Runs a service that ends when its owner stops it; shutdown waits for it last.
    pub fn spawn_service<F>(&self, service: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.0.services.spawn(service)
    }

    pub fn is_draining(&self) -> bool {
        self.0.draining.is_cancelled()
    }

    /// Shutdown has begun: refuse new work from now on.
    pub fn begin_draining(&self) {
        self.0.draining.cancel();
    }

    /// Cancelled when shutdown begins.
    pub fn draining(&self) -> &CancellationToken {
        &self.0.draining
    }

    /// Cancelled when the streams still open must end.
    pub fn stop_streams(&self) -> &CancellationToken {
        &self.0.stop_streams
    }

    /// Takes no more work and waits for all of it spawned so far.
    pub async fn wait_for_tasks(&self) {
        self.0.tasks.close();
        self.0.tasks.wait().await;
    }

    /// Takes no more services and waits for the ones started (their owners stopped them).
    pub async fn wait_for_services(&self) {
        self.0.services.close();
        self.0.services.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_waits_for_every_spawned_task() {
        let lifecycle = Lifecycle::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = lifecycle.spawn(async move {
            rx.await.expect("sender kept");
            7
        });
        let mut waiting = std::pin::pin!(lifecycle.wait_for_tasks());
        assert!(futures::poll!(waiting.as_mut()).is_pending(), "a task runs");
        tx.send(()).expect("task waits");
        waiting.await;
        assert_eq!(task.await.expect("task ran"), 7);
    }

    #[tokio::test]
    async fn services_are_waited_for_apart_from_work() {
        let lifecycle = Lifecycle::new();
        let stop = tokio_util::sync::CancellationToken::new();
        let stopped = stop.clone();
        lifecycle.spawn_service(async move { stopped.cancelled().await });
        lifecycle.wait_for_tasks().await;
        let mut waiting = std::pin::pin!(lifecycle.wait_for_services());
        assert!(
            futures::poll!(waiting.as_mut()).is_pending(),
            "a service runs until stopped"
        );
        stop.cancel();
        waiting.await;
    }

    #[test]
    fn draining_is_shared_by_every_clone() {
        let lifecycle = Lifecycle::new();
        let clone = lifecycle.clone();
        assert!(!clone.is_draining());
        lifecycle.begin_draining();
        assert!(clone.is_draining());
    }
}
