//! The client's side of one exchange: the channel its events go into, and the two things that
//! end an exchange early, the client leaving (the channel's receiver is dropped) and shutdown.

use std::future::Future;
use std::pin::{Pin, pin};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::events::AnswerEvent;

/// Why an exchange stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Interrupt {
    ClientGone,
    Shutdown,
}

/// Cheap to clone: a sender and a token.
#[derive(Clone)]
pub(super) struct Outbox {
    tx: mpsc::Sender<AnswerEvent>,
    /// Cancelled when shutdown's grace period is over.
    stop_streams: CancellationToken,
}

impl Outbox {
    pub(super) fn new(tx: mpsc::Sender<AnswerEvent>, stop_streams: CancellationToken) -> Self {
        Self { tx, stop_streams }
    }

    /// Puts the first event in the new, empty channel without waiting: it cannot be full, and a
    /// closed one means the client left, which the first `emit` notices.
    pub(super) fn put_first(&self, event: AnswerEvent) {
        let _ = self.tx.try_send(event);
    }

    /// Free slots in the channel now.
    pub(super) fn capacity(&self) -> usize {
        self.tx.capacity()
    }

    /// Resolves when the client has left.
    pub(super) fn client_gone(&self) -> impl Future<Output = ()> + '_ {
        self.tx.closed()
    }

    /// Resolves when the streams must end.
    pub(super) fn shutdown(&self) -> impl Future<Output = ()> + '_ {
        self.stop_streams.cancelled()
    }

    /// Awaits `work` unless the client leaves or shutdown ends the streams first; dropping
    /// `work` then releases whatever it held (queue place, permit, upstream connection).
    pub(super) async fn guarded<F: Future>(&self, work: F) -> Result<F::Output, Interrupt> {
        let client_gone = pin!(self.client_gone());
        let shutdown = pin!(self.shutdown());
        watched(client_gone, shutdown, work).await
    }

    /// Queues `event` for the client. When the channel has room (the client keeps up), that is
    /// a `try_send`; only a full channel waits, guarded like any other wait.
    pub(super) async fn emit(&self, event: AnswerEvent) -> Result<(), Interrupt> {
        // The order `guarded` would find them in.
        if self.tx.is_closed() {
            return Err(Interrupt::ClientGone);
        }
        if self.stop_streams.is_cancelled() {
            return Err(Interrupt::Shutdown);
        }
        match self.tx.try_send(event) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Interrupt::ClientGone),
            // Boxed: a slow reader is the rare case, and the wait's state would otherwise be
            // part of every exchange's task, queued ones included.
            Err(mpsc::error::TrySendError::Full(event)) => {
                match Box::pin(self.guarded(self.tx.send(event))).await? {
                    Ok(()) => Ok(()),
                    Err(_) => Err(Interrupt::ClientGone),
                }
            }
        }
    }

    /// Sends the final error if the client is still there; a slow reader gets a moment, not forever.
    pub(super) async fn emit_last(&self, event: AnswerEvent) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.tx.send(event)).await;
    }
}

/// `work`'s output, unless the client leaves or shutdown ends the streams first (checked in
/// that order). The caller makes the two waits, so it can keep them across calls.
pub(super) async fn watched<F: Future>(
    client_gone: Pin<&mut impl Future<Output = ()>>,
    shutdown: Pin<&mut impl Future<Output = ()>>,
    work: F,
) -> Result<F::Output, Interrupt> {
    tokio::select! {
        biased;
        () = client_gone => Err(Interrupt::ClientGone),
        () = shutdown => Err(Interrupt::Shutdown),
        output = work => Ok(output),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An outbox whose one-slot channel already holds the delta `a`.
    async fn with_full_channel() -> (Outbox, mpsc::Receiver<AnswerEvent>) {
        let (tx, rx) = mpsc::channel(1);
        let outbox = Outbox::new(tx, CancellationToken::new());
        assert!(outbox.emit(delta("a")).await.is_ok());
        (outbox, rx)
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
    async fn a_full_channel_waits_for_the_reader_and_keeps_the_order() {
        let (outbox, mut rx) = with_full_channel().await;
        let second = outbox.emit(delta("b"));
        tokio::pin!(second);
        assert!(
            futures::poll!(second.as_mut()).is_pending(),
            "sent into a full channel"
        );
        assert_eq!(text(rx.recv().await), "a");
        assert!(second.await.is_ok());
        assert_eq!(text(rx.recv().await), "b");
    }

    #[tokio::test]
    async fn a_client_leaving_ends_a_wait_for_room() {
        let (outbox, rx) = with_full_channel().await;
        let waiting = outbox.emit(delta("b"));
        tokio::pin!(waiting);
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        drop(rx);
        assert_eq!(waiting.await, Err(Interrupt::ClientGone));
        assert_eq!(outbox.emit(delta("c")).await, Err(Interrupt::ClientGone));
    }

    #[tokio::test]
    async fn shutdown_ends_a_wait_for_room_and_stops_later_events() {
        let (outbox, _rx) = with_full_channel().await;
        let waiting = outbox.emit(delta("b"));
        tokio::pin!(waiting);
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        outbox.stop_streams.cancel();
        assert_eq!(waiting.await, Err(Interrupt::Shutdown));
        assert_eq!(outbox.emit(delta("c")).await, Err(Interrupt::Shutdown));
    }
}
