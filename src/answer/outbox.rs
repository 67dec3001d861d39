//! The client's side of one exchange: the queue its events go into, and what ends an
//! exchange early: the client leaving (the queue's reader is dropped), the client not
//! keeping up (see [`backlog`](super::backlog)), the exchange's time running out, and shutdown.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::backlog::{AnswerEvents, Backlog, BufferBudget, Sender, channel, weight};
use super::events::AnswerEvent;
use super::woken::WhenWoken;

/// Why an exchange stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Interrupt {
    ClientGone,
    /// The client let its backlog fill, or took nothing from it for too long.
    ClientTooSlow,
    /// The exchange's whole time (`upstream.total_timeout_ms`) is over.
    OutOfTime,
    Shutdown,
}

/// Cheap to clone: a sender (which holds the backlog) and a token.
#[derive(Clone)]
pub(super) struct Outbox {
    tx: Sender,
    /// Cancelled when shutdown's grace period is over.
    stop_streams: CancellationToken,
    /// When the exchange must be over; none while it waits for its first permit.
    deadline: Option<Instant>,
}

impl Outbox {
    /// The exchange's outbox and the client's end of it.
    pub(super) fn new(
        budget: Arc<BufferBudget>,
        stop_streams: CancellationToken,
    ) -> (Self, AnswerEvents) {
        let (tx, events) = channel(Backlog::new(budget));
        let outbox = Self {
            tx,
            stop_streams,
            deadline: None,
        };
        (outbox, events)
    }

    /// From now on every wait ends at `deadline`.
    pub(super) fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = Some(deadline);
    }

    /// Resolves with the first reason the exchange must stop, checked in the order of the
    /// variants: the client leaving, not keeping up, the deadline, shutdown. Polled only when
    /// one of them woke it (see [`WhenWoken`]), not each time the exchange's task runs.
    pub(super) fn interruption(&self) -> WhenWoken<impl Future<Output = Interrupt> + '_> {
        let deadline = async {
            match self.deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        WhenWoken::new(async move {
            tokio::select! {
                biased;
                () = self.tx.closed() => Interrupt::ClientGone,
                () = self.tx.backlog().stalled() => Interrupt::ClientTooSlow,
                () = deadline => Interrupt::OutOfTime,
                () = self.stop_streams.cancelled() => Interrupt::Shutdown,
            }
        })
    }

    /// Awaits `work` unless the exchange must stop first; dropping `work` then releases
    /// whatever it held (queue place, permit, upstream connection).
    pub(super) fn guarded<F: Future>(
        &self,
        work: F,
    ) -> Watched<WhenWoken<impl Future<Output = Interrupt> + '_>, F> {
        watched(self.interruption(), work)
    }

    /// Queues `event` for the client, at once: the exchange never waits for its reader.
    pub(super) fn emit(&self, event: AnswerEvent) -> Result<(), Interrupt> {
        // The order `interruption` would find them in.
        if self.tx.is_closed() {
            return Err(Interrupt::ClientGone);
        }
        let weight = weight(&event);
        if self.tx.backlog().add(weight).is_err() {
            return Err(Interrupt::ClientTooSlow);
        }
        if self.stop_streams.is_cancelled() {
            self.tx.backlog().take(weight);
            return Err(Interrupt::Shutdown);
        }
        self.send_counted(event, weight)
    }

    /// Sends the event that ends a failed stream, past the backlog's limit if need be: a
    /// client that reads again learns why its answer stopped.
    pub(super) fn emit_last(&self, event: AnswerEvent) {
        let weight = weight(&event);
        // Counted, though over the limit, so the budget stays exact when it is taken.
        self.tx.backlog().add_over_limit(weight);
        let _ = self.send_counted(event, weight);
    }

    /// Sends an event whose `weight` is already counted; a client gone gives it back.
    fn send_counted(&self, event: AnswerEvent, weight: usize) -> Result<(), Interrupt> {
        self.tx.send(event).map_err(|_| {
            self.tx.backlog().take(weight);
            Interrupt::ClientGone
        })
    }

    /// Resolves when the client has taken every event, or with why it never will.
    pub(super) async fn delivered(&self) -> Result<(), Interrupt> {
        let interruption = pin!(self.interruption());
        tokio::select! {
            // Checked first: a client that took `done` and then closed was served.
            biased;
            () = self.tx.backlog().drained() => Ok(()),
            interrupt = interruption => Err(interrupt),
        }
    }
}

/// `work`'s output, unless `interruption` comes first. The caller may pass a pinned reference to
/// an interruption it keeps across calls.
///
/// A plain struct rather than an `async fn`: an `async fn` keeps the future it is given both as
/// its argument and as the value it awaits, so each level of nesting doubled the exchange's
/// state (a round's state was 5 KiB for a 1.4 KiB upstream call).
pub(super) fn watched<I, F>(interruption: I, work: F) -> Watched<I, F>
where
    I: Future<Output = Interrupt>,
    F: Future,
{
    Watched { interruption, work }
}

pin_project_lite::pin_project! {
    /// See [`watched`].
    pub(super) struct Watched<I, F> {
        #[pin]
        interruption: I,
        #[pin]
        work: F,
    }
}

impl<I, F> Future for Watched<I, F>
where
    I: Future<Output = Interrupt>,
    F: Future,
{
    type Output = Result<F::Output, Interrupt>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // The interruption first: work that is ready is not taken past a reason to stop.
        if let Poll::Ready(interrupt) = this.interruption.poll(cx) {
            return Poll::Ready(Err(interrupt));
        }
        this.work.poll(cx).map(Ok)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::backlog::BacklogLimits;
    use super::*;

    /// An outbox allowing `per_exchange` bytes, stalled after 30 s.
    fn outbox(per_exchange: usize) -> (Outbox, AnswerEvents) {
        let budget = BufferBudget::new(BacklogLimits {
            per_exchange,
            total: usize::MAX,
            write_timeout: Duration::from_secs(30),
        });
        Outbox::new(budget, CancellationToken::new())
    }

    fn delta(text: &str) -> AnswerEvent {
        AnswerEvent::Delta(text.to_owned())
    }

    fn text(event: Option<AnswerEvent>) -> String {
        match event {
            Some(AnswerEvent::Delta(text)) => text,
            other => panic!("expected a delta, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn events_never_wait_for_the_reader_until_the_backlog_is_full() {
        let (outbox, mut events) = outbox(1000);
        for piece in ["a", "b", "c"] {
            assert_eq!(outbox.emit(delta(piece)), Ok(()));
        }
        let big = "x".repeat(1000);
        assert_eq!(outbox.emit(delta(&big)), Err(Interrupt::ClientTooSlow));
        assert_eq!(text(events.recv().await), "a");
        assert_eq!(text(events.recv().await), "b");
        assert_eq!(text(events.recv().await), "c");
        assert_eq!(
            outbox.emit(delta(&big)),
            Ok(()),
            "an empty backlog takes one event"
        );
    }

    #[tokio::test]
    async fn a_client_leaving_stops_the_events() {
        let (outbox, events) = outbox(1000);
        drop(events);
        assert_eq!(outbox.emit(delta("a")), Err(Interrupt::ClientGone));
        assert_eq!(
            outbox.guarded(std::future::pending::<()>()).await,
            Err(Interrupt::ClientGone)
        );
    }

    #[tokio::test]
    async fn a_reason_to_stop_wins_over_work_that_is_ready() {
        let (left, events) = outbox(1000);
        drop(events);
        assert_eq!(
            left.guarded(std::future::ready(7)).await,
            Err(Interrupt::ClientGone)
        );
        let (reading, _events) = outbox(1000);
        assert_eq!(reading.guarded(std::future::ready(7)).await, Ok(7));
    }

    #[test]
    fn a_guarded_wait_holds_its_work_once() {
        let (outbox, _events) = outbox(1000);
        let work = async {
            let big = [0u8; 4096];
            std::future::pending::<()>().await;
            big.len()
        };
        let work_size = std::mem::size_of_val(&work);
        let interruption_size = std::mem::size_of_val(&outbox.interruption());
        let guarded = outbox.guarded(work);
        // An `async fn` here kept the work twice (argument and awaited value): 8 KiB and more.
        assert!(
            std::mem::size_of_val(&guarded) <= work_size + interruption_size + 16,
            "{} bytes for {work_size} of work",
            std::mem::size_of_val(&guarded)
        );
    }

    #[tokio::test]
    async fn shutdown_ends_waits_and_stops_later_events() {
        let (outbox, _events) = outbox(1000);
        let waiting = outbox.guarded(std::future::pending::<()>());
        tokio::pin!(waiting);
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        outbox.stop_streams.cancel();
        assert_eq!(waiting.await, Err(Interrupt::Shutdown));
        assert_eq!(outbox.emit(delta("c")), Err(Interrupt::Shutdown));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_takes_nothing_ends_the_wait_as_too_slow() {
        let (outbox, _events) = outbox(1000);
        let started = Instant::now();
        outbox.emit(delta("a")).expect("room");
        assert_eq!(
            outbox.guarded(std::future::pending::<()>()).await,
            Err(Interrupt::ClientTooSlow)
        );
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_ends_every_wait() {
        let (mut outbox, _events) = outbox(1000);
        outbox.set_deadline(Instant::now() + Duration::from_secs(5));
        assert_eq!(
            outbox.guarded(std::future::pending::<()>()).await,
            Err(Interrupt::OutOfTime)
        );
    }

    #[tokio::test]
    async fn delivered_once_the_client_took_everything_even_if_it_then_left() {
        let (outbox, mut events) = outbox(1000);
        outbox.emit(delta("a")).expect("room");
        let delivery = outbox.delivered();
        tokio::pin!(delivery);
        assert!(futures::poll!(delivery.as_mut()).is_pending());
        assert_eq!(text(events.recv().await), "a");
        drop(events);
        assert_eq!(delivery.await, Ok(()));
    }

    #[tokio::test]
    async fn not_delivered_when_the_client_leaves_with_events_unread() {
        let (outbox, events) = outbox(1000);
        outbox.emit(delta("a")).expect("room");
        drop(events);
        assert_eq!(outbox.delivered().await, Err(Interrupt::ClientGone));
    }
}
