//! What an exchange has handed its client and the client has not taken yet.
//!
//! An exchange reads the upstream at the upstream's pace, whatever its client does, so that a
//! client that stops reading cannot keep a permit. The events wait for the client in a queue
//! kept here with their size: at most `limits.max_buffered_answer_bytes` per
//! exchange, and `limits.max_buffered_answer_bytes_total` over all of them. An exchange whose
//! client lets its backlog fill, or takes nothing from it for `server.client_write_timeout_ms`,
//! ends as `client_too_slow` (see [`Backlog::stalled`]).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use tokio::sync::Notify;
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
    /// The events themselves. A queue of its own rather than a channel: tokio's unbounded
    /// channel costs 1.4 KiB per exchange before its first event (its state in 128-byte
    /// lines and a first block of 32 slots), this about 100 bytes.
    queue: Mutex<Queue>,
    /// The client's task, woken when an event arrives or the last sender is dropped.
    reader: AtomicWaker,
    /// Set when the client's end is dropped: nothing sent from then on is read.
    reader_gone: AtomicBool,
    /// Wakes an exchange waiting for its client to leave.
    reader_left: Notify,
}

#[derive(Debug)]
struct Queue {
    events: VecDeque<AnswerEvent>,
    /// The [`Sender`]s alive: with none left and no event, the client's end has ended.
    senders: usize,
}

impl Backlog {
    pub(super) fn new(budget: Arc<BufferBudget>) -> Arc<Self> {
        Arc::new(Self {
            budget,
            bytes: AtomicUsize::new(0),
            progress_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            drained: Notify::new(),
            queue: Mutex::new(Queue {
                events: VecDeque::new(),
                senders: 0,
            }),
            reader: AtomicWaker::new(),
            reader_gone: AtomicBool::new(false),
            reader_left: Notify::new(),
        })
    }

    /// The queue. A panic while it was held left it whole (each change is one call), so a
    /// poisoned lock is taken as it is.
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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

/// The queue of `backlog`: the exchange's end, and the client's.
pub(super) fn channel(backlog: Arc<Backlog>) -> (Sender, AnswerEvents) {
    backlog.queue().senders = 1;
    let sender = Sender {
        backlog: backlog.clone(),
    };
    (sender, AnswerEvents { backlog })
}

/// The exchange's end of its events. The client's end ends once every clone is dropped and
/// every event taken.
#[derive(Debug)]
pub(super) struct Sender {
    backlog: Arc<Backlog>,
}

impl Sender {
    /// Queues `event` for the client, or gives it back if the client is gone. Its weight is
    /// the caller's to count.
    pub(super) fn send(&self, event: AnswerEvent) -> Result<(), AnswerEvent> {
        let backlog = &*self.backlog;
        {
            let mut queue = backlog.queue();
            // Checked under the lock the client's end drains with when it is dropped: an event
            // is either given back here or drained there, never left behind.
            if backlog.reader_gone.load(Ordering::Acquire) {
                return Err(event);
            }
            queue.events.push_back(event);
        }
        backlog.reader.wake();
        Ok(())
    }

    /// The backlog the events are counted in.
    pub(super) fn backlog(&self) -> &Backlog {
        &self.backlog
    }

    /// Whether the client's end is gone.
    pub(super) fn is_closed(&self) -> bool {
        self.backlog.reader_gone.load(Ordering::Acquire)
    }

    /// Resolves once the client's end is gone.
    pub(super) async fn closed(&self) {
        let backlog = &*self.backlog;
        loop {
            let notified = backlog.reader_left.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the flag is read: a leaving client from now on wakes it.
            notified.as_mut().enable();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }
}

impl Clone for Sender {
    fn clone(&self) -> Self {
        self.backlog.queue().senders += 1;
        Self {
            backlog: self.backlog.clone(),
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let last = {
            let mut queue = self.backlog.queue();
            queue.senders -= 1;
            queue.senders == 0
        };
        if last {
            self.backlog.reader.wake();
        }
    }
}

/// The client's end of an exchange: its events, in order. Taking one frees its bytes.
#[derive(Debug)]
pub struct AnswerEvents {
    backlog: Arc<Backlog>,
}

impl AnswerEvents {
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<AnswerEvent>> {
        if let Some(polled) = self.try_recv() {
            return polled;
        }
        // Registered before looking again: an event sent from now on wakes this task.
        self.backlog.reader.register(cx.waker());
        self.try_recv().unwrap_or(Poll::Pending)
    }

    /// The next event, the end, or `None` when the exchange may still send.
    fn try_recv(&mut self) -> Option<Poll<Option<AnswerEvent>>> {
        let next = {
            let mut queue = self.backlog.queue();
            match queue.events.pop_front() {
                Some(event) => Some(event),
                None if queue.senders == 0 => return Some(Poll::Ready(None)),
                None => None,
            }
        }?;
        self.backlog.take(weight(&next));
        Some(Poll::Ready(Some(next)))
    }

    pub fn recv(&mut self) -> impl Future<Output = Option<AnswerEvent>> + '_ {
        std::future::poll_fn(|cx| self.poll_recv(cx))
    }
}

impl Drop for AnswerEvents {
    /// The events left unread are dropped with the client's end: their bytes go back to the
    /// shared budget. The backlog keeps counting them, so the exchange sees they were never
    /// taken.
    fn drop(&mut self) {
        let backlog = &*self.backlog;
        backlog.reader_gone.store(true, Ordering::Release);
        let unread = std::mem::take(&mut backlog.queue().events);
        for event in unread {
            backlog
                .budget
                .used
                .fetch_sub(weight(&event), Ordering::Relaxed);
        }
        backlog.reader_left.notify_waiters();
    }
}

/// A client's end fed by hand, for tests of what reads it.
#[cfg(test)]
pub(crate) fn test_channel() -> (TestSender, AnswerEvents) {
    let backlog = Backlog::new(BufferBudget::new(BacklogLimits {
        per_exchange: usize::MAX,
        total: usize::MAX,
        write_timeout: Duration::from_secs(3600),
    }));
    let (tx, events) = channel(backlog);
    (TestSender { tx }, events)
}

#[cfg(test)]
pub(crate) struct TestSender {
    tx: Sender,
}

#[cfg(test)]
impl TestSender {
    pub(crate) async fn send(&self, event: AnswerEvent) -> Result<(), AnswerEvent> {
        self.tx.backlog.add_over_limit(weight(&event));
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

    fn delta(text: &str) -> AnswerEvent {
        AnswerEvent::Delta(text.to_owned())
    }

    fn text(event: Option<AnswerEvent>) -> Option<String> {
        match event {
            Some(AnswerEvent::Delta(text)) => Some(text),
            None => None,
            Some(other) => panic!("expected a delta, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn events_arrive_in_order_and_the_end_only_after_every_sender_and_event() {
        let (tx, mut events) = channel(backlog(1000, 1000));
        let second = tx.clone();
        tx.send(delta("a")).expect("open");
        drop(tx);
        second.send(delta("b")).expect("open");
        second.send(delta("c")).expect("open");
        assert_eq!(text(events.recv().await).as_deref(), Some("a"));
        // One sender is left: no end yet, though nothing waits.
        assert_eq!(text(events.recv().await).as_deref(), Some("b"));
        drop(second);
        assert_eq!(
            text(events.recv().await).as_deref(),
            Some("c"),
            "sent before the end"
        );
        assert_eq!(text(events.recv().await), None);
        assert_eq!(text(events.recv().await), None, "and it stays ended");
    }

    /// A waker that notes it was woken.
    #[derive(Default)]
    struct Flag(AtomicBool);

    impl std::task::Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_waiting_reader_is_woken_by_an_event_and_by_the_last_sender_leaving() {
        let (tx, mut events) = channel(backlog(1000, 1000));
        let flag = Arc::new(Flag::default());
        let waker = std::task::Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(events.poll_recv(&mut cx).is_pending());
        tx.send(delta("a")).expect("open");
        assert!(flag.0.swap(false, Ordering::SeqCst), "woken by the event");
        assert!(matches!(events.poll_recv(&mut cx), Poll::Ready(Some(_))));
        let second = tx.clone();
        assert!(events.poll_recv(&mut cx).is_pending());
        drop(tx);
        assert!(!flag.0.load(Ordering::SeqCst), "a sender is left");
        drop(second);
        assert!(
            flag.0.load(Ordering::SeqCst),
            "woken by the last sender leaving"
        );
        assert!(matches!(events.poll_recv(&mut cx), Poll::Ready(None)));
    }

    #[tokio::test]
    async fn a_reader_leaving_refuses_later_events_and_wakes_whoever_waits_for_it() {
        let (tx, events) = channel(backlog(1000, 1000));
        let mut closed = std::pin::pin!(tx.closed());
        assert!(futures::poll!(closed.as_mut()).is_pending());
        assert!(!tx.is_closed());
        drop(events);
        tokio::time::timeout(Duration::from_secs(5), closed)
            .await
            .expect("woken");
        assert!(tx.is_closed());
        assert!(matches!(tx.send(delta("late")), Err(AnswerEvent::Delta(t)) if t == "late"));
        tx.closed().await;
    }

    #[tokio::test]
    async fn dropping_the_reader_gives_the_unread_bytes_back() {
        let budget = BufferBudget::new(BacklogLimits {
            per_exchange: 1000,
            total: 1000,
            write_timeout: Duration::from_secs(30),
        });
        let backlog = Backlog::new(budget.clone());
        let (tx, mut events) = channel(backlog.clone());
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
