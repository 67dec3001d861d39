//! What an exchange has handed its client and the client has not taken yet.
//!
//! An exchange reads the upstream at the upstream's pace, whatever its client does, so that a
//! client that stops reading cannot keep a permit. The events wait for the client in an
//! unbounded channel whose size is kept here: at most `limits.max_buffered_answer_bytes` per
//! exchange, and `limits.max_buffered_answer_bytes_total` over all of them. An exchange whose
//! client lets its backlog fill, or takes nothing from it for `server.client_write_timeout_ms`,
//! ends as `client_too_slow` (see [`Backlog::stalled`]).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use super::events::AnswerEvent;

/// How much may wait for clients, and for how long without being taken.
#[derive(Debug, Clone, Copy)]
pub struct BacklogLimits {
    pub per_exchange: usize,
    pub total: usize,
    pub write_timeout: Duration,
}

/// The bytes waiting for every client together. One per application.
#[derive(Debug)]
pub struct BufferBudget {
    limits: BacklogLimits,
    used: AtomicUsize,
}

impl BufferBudget {
    pub fn new(limits: BacklogLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            used: AtomicUsize::new(0),
        })
    }

    /// Bytes waiting for clients now, for `/metrics`.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// The client did not keep up: its backlog is full, or it took nothing for too long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TooSlow;

/// One exchange's events not yet taken by its client; shared by the exchange's
/// [`Outbox`](super::outbox::Outbox) and the client's [`AnswerEvents`].
#[derive(Debug)]
pub(super) struct Backlog {
    budget: Arc<BufferBudget>,
    bytes: AtomicUsize,
    /// Milliseconds since `epoch` of the last sign of a reader: an event taken, or the backlog
    /// becoming non-empty. It counts only while the backlog is not empty.
    progress_ms: AtomicU64,
    epoch: Instant,
    /// Wakes an exchange waiting for its client to take everything.
    drained: Notify,
}

impl Backlog {
    pub(super) fn new(budget: Arc<BufferBudget>) -> Arc<Self> {
        Arc::new(Self {
            budget,
            bytes: AtomicUsize::new(0),
            progress_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            drained: Notify::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Counts `weight` more bytes waiting, or refuses them when either limit would be passed.
    /// An empty backlog always takes one event, however large: a client that keeps up is never
    /// cut off because other clients hold the shared budget.
    pub(super) fn add(&self, weight: usize) -> Result<(), TooSlow> {
        let limits = &self.budget.limits;
        let before = self.bytes.load(Ordering::Acquire);
        if before > 0 {
            let total = self.budget.used.load(Ordering::Relaxed);
            if before + weight > limits.per_exchange || total + weight > limits.total {
                return Err(TooSlow);
            }
        }
        self.add_over_limit(weight);
        Ok(())
    }

    /// Counts `weight` more bytes waiting, whatever the limits say.
    pub(super) fn add_over_limit(&self, weight: usize) {
        if self.bytes.fetch_add(weight, Ordering::AcqRel) == 0 {
            self.progress_ms.store(self.now_ms(), Ordering::Release);
        }
        self.budget.used.fetch_add(weight, Ordering::Relaxed);
    }

    /// The client took `weight` bytes (or they were never sent).
    pub(super) fn take(&self, weight: usize) {
        self.progress_ms.store(self.now_ms(), Ordering::Release);
        self.budget.used.fetch_sub(weight, Ordering::Relaxed);
        if self.bytes.fetch_sub(weight, Ordering::AcqRel) == weight {
            self.drained.notify_one();
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.bytes.load(Ordering::Acquire) == 0
    }

    /// Resolves when the client has taken everything.
    pub(super) async fn drained(&self) {
        loop {
            let notified = self.drained.notified();
            if self.is_empty() {
                return;
            }
            notified.await;
        }
    }

    /// Resolves once the backlog has held events for `server.client_write_timeout_ms` with
    /// nothing taken. Sleeps between checks: no polling loop.
    pub(super) async fn stalled(&self) {
        let timeout =
            u64::try_from(self.budget.limits.write_timeout.as_millis()).unwrap_or(u64::MAX);
        loop {
            let now = self.now_ms();
            let wake = if self.is_empty() {
                // Nothing waits: a stall can begin no sooner than a full timeout from now.
                now.saturating_add(timeout)
            } else {
                let deadline = self
                    .progress_ms
                    .load(Ordering::Acquire)
                    .saturating_add(timeout);
                if now >= deadline {
                    return;
                }
                deadline
            };
            tokio::time::sleep_until(self.epoch + Duration::from_millis(wake)).await;
        }
    }
}

/// What an event costs in the backlog: its text, plus a flat amount for its frame.
pub(super) fn weight(event: &AnswerEvent) -> usize {
    const FRAME: usize = 64;
    match event {
        AnswerEvent::Delta(text) => text.len() + FRAME,
        AnswerEvent::Meta(_) | AnswerEvent::Queued { .. } => FRAME,
        // A tool's result or a call's arguments may be a few kilobytes.
        _ => 16 * FRAME,
    }
}

/// The client's end of an exchange: its events, in order. Taking one frees its bytes.
#[derive(Debug)]
pub struct AnswerEvents {
    rx: mpsc::UnboundedReceiver<AnswerEvent>,
    backlog: Arc<Backlog>,
}

impl AnswerEvents {
    pub(super) fn new(rx: mpsc::UnboundedReceiver<AnswerEvent>, backlog: Arc<Backlog>) -> Self {
        Self { rx, backlog }
    }

    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<AnswerEvent>> {
        let polled = self.rx.poll_recv(cx);
        if let Poll::Ready(Some(event)) = &polled {
            self.backlog.take(weight(event));
        }
        polled
    }

    pub fn recv(&mut self) -> impl Future<Output = Option<AnswerEvent>> + '_ {
        std::future::poll_fn(|cx| self.poll_recv(cx))
    }
}

impl Drop for AnswerEvents {
    /// The events left unread are dropped with the channel: their bytes go back to the shared
    /// budget. The backlog keeps counting them, so the exchange sees they were never taken.
    fn drop(&mut self) {
        self.rx.close();
        while let Ok(event) = self.rx.try_recv() {
            self.backlog
                .budget
                .used
                .fetch_sub(weight(&event), Ordering::Relaxed);
        }
    }
}

/// A client's end fed by hand, for tests of what reads it.
#[cfg(test)]
pub(crate) fn test_channel() -> (TestSender, AnswerEvents) {
    let (tx, rx) = mpsc::unbounded_channel();
    let backlog = Backlog::new(BufferBudget::new(BacklogLimits {
        per_exchange: usize::MAX,
        total: usize::MAX,
        write_timeout: Duration::from_secs(3600),
    }));
    let sender = TestSender {
        tx,
        backlog: backlog.clone(),
    };
    (sender, AnswerEvents::new(rx, backlog))
}

#[cfg(test)]
pub(crate) struct TestSender {
    tx: mpsc::UnboundedSender<AnswerEvent>,
    backlog: Arc<Backlog>,
}

#[cfg(test)]
impl TestSender {
    pub(crate) async fn send(
        &self,
        event: AnswerEvent,
    ) -> Result<(), mpsc::error::SendError<AnswerEvent>> {
        self.backlog.add_over_limit(weight(&event));
        self.tx.send(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backlog(per_exchange: usize, total: usize) -> Arc<Backlog> {
        Backlog::new(BufferBudget::new(BacklogLimits {
            per_exchange,
            total,
            write_timeout: Duration::from_secs(30),
        }))
    }

    #[test]
    fn a_full_backlog_refuses_more_but_always_takes_one_event() {
        let backlog = backlog(100, 1000);
        assert_eq!(
            backlog.add(500),
            Ok(()),
            "an empty backlog takes any one event"
        );
        assert_eq!(backlog.add(1), Err(TooSlow));
        backlog.take(500);
        assert!(backlog.is_empty());
        assert_eq!(backlog.add(60), Ok(()));
        assert_eq!(backlog.add(40), Ok(()));
        assert_eq!(backlog.add(1), Err(TooSlow));
        assert_eq!(backlog.budget.used(), 100);
    }

    #[test]
    fn the_shared_budget_limits_every_exchange_together() {
        let budget = BufferBudget::new(BacklogLimits {
            per_exchange: 100,
            total: 150,
            write_timeout: Duration::from_secs(30),
        });
        let (a, b) = (Backlog::new(budget.clone()), Backlog::new(budget.clone()));
        assert_eq!(a.add(50), Ok(()));
        assert_eq!(a.add(50), Ok(()));
        assert_eq!(b.add(40), Ok(()));
        assert_eq!(b.add(20), Err(TooSlow), "150 bytes would be passed");
        a.take(50);
        assert_eq!(b.add(20), Ok(()));
        assert_eq!(budget.used(), 110);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_is_time_with_events_waiting_and_none_taken() {
        let backlog = backlog(1000, 1000);
        let started = Instant::now();
        backlog.add(10).expect("room");
        tokio::time::sleep(Duration::from_secs(20)).await;
        backlog.add(10).expect("room");
        backlog.take(10);
        // Taken at 20 s: the stall counts from there.
        backlog.stalled().await;
        assert_eq!(started.elapsed(), Duration::from_secs(50));
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_backlog_never_stalls() {
        let backlog = backlog(1000, 1000);
        let stalled = tokio::time::timeout(Duration::from_secs(120), backlog.stalled()).await;
        assert!(stalled.is_err(), "nothing waited, so nothing stalled");
    }

    #[tokio::test]
    async fn dropping_the_reader_gives_the_unread_bytes_back() {
        let budget = BufferBudget::new(BacklogLimits {
            per_exchange: 1000,
            total: 1000,
            write_timeout: Duration::from_secs(30),
        });
        let backlog = Backlog::new(budget.clone());
        let (tx, rx) = mpsc::unbounded_channel();
        let mut events = AnswerEvents::new(rx, backlog.clone());
        for text in ["a", "b"] {
            let event = AnswerEvent::Delta(text.to_owned());
            backlog.add(weight(&event)).expect("room");
            tx.send(event).expect("open");
        }
        assert!(matches!(events.recv().await, Some(AnswerEvent::Delta(t)) if t == "a"));
        assert_eq!(budget.used(), weight(&AnswerEvent::Delta("b".into())));
        drop(events);
        assert_eq!(budget.used(), 0);
        assert!(
            !backlog.is_empty(),
            "the exchange sees that `b` was never taken"
        );
    }
}
