//! Deltas that arrive in one burst leave in one write.
//!
//! hyper's HTTP/1.1 client hands a response body over one chunk at a time: its connection task
//! decodes a chunk, and decodes the next only once the exchange has taken the first. So even
//! when the upstream sent a whole answer in one segment, every chunk costs the exchange a wait,
//! and a delta put in the client's queue at once would wake the client's connection for a
//! socket write of its own (about 20 writes per answer instead of 2 over HTTP/2).
//!
//! An exchange therefore holds the deltas of a burst in a [`Burst`]. After each chunk, the next
//! one gets one turn of the scheduler to arrive (the connection task that decodes it runs in
//! that turn); if it has not, the burst is over and its deltas go to the client together.
//! Nothing waits for company: the first text of an answer is never held at all, and neither is
//! a delta that came after the upstream was quiet for [`PACED_GAP`] or more (a paced answer,
//! a token every few milliseconds): it goes out at once, without the scheduler turn, which
//! would cost the exchange a second poll per chunk for nothing.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::Poll;

use super::AnswerEvent;

/// A chunk that came after the upstream was quiet this long starts no burst: the chunks of a
/// burst come microseconds apart, a paced answer's milliseconds.
pub const PACED_GAP: std::time::Duration = std::time::Duration::from_millis(1);

/// Deltas held in one burst at most.
const MAX_BURST: usize = 32;

/// Deltas received but not yet handed to the client, oldest first.
#[derive(Debug, Default)]
pub struct Burst {
    events: Vec<AnswerEvent>,
}

impl Burst {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Adds `event`; true once the burst holds [`MAX_BURST`] events, a frame's worth: a long
    /// burst goes out in pieces rather than all at its end.
    pub fn push(&mut self, event: AnswerEvent) -> bool {
        self.events.push(event);
        self.events.len() >= MAX_BURST
    }

    /// The waiting events, in order, leaving the burst empty (its room is kept for the next).
    pub fn drain(&mut self) -> std::vec::Drain<'_, AnswerEvent> {
        self.events.drain(..)
    }
}

/// `next`'s output if it is ready now or after the scheduler has run every other ready task
/// once; `None` if it is still pending then (it stays usable, and its wake-ups are registered).
pub async fn ready_within_a_turn<F: Future>(mut next: Pin<&mut F>) -> Option<F::Output> {
    let mut turned = false;
    poll_fn(|cx| match next.as_mut().poll(cx) {
        Poll::Ready(output) => Poll::Ready(Some(output)),
        Poll::Pending if !turned => {
            turned = true;
            // A task that wakes itself goes to the back of the run queue: tasks it woke
            // (the upstream connection, about to decode the next chunk) run first.
            cx.waker().wake_by_ref();
            Poll::Pending
        }
        Poll::Pending => Poll::Ready(None),
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::pin::pin;

    use tokio::sync::oneshot;

    use super::*;

    #[tokio::test]
    async fn a_value_sent_by_a_task_that_runs_in_the_turn_is_caught() {
        let (tx, rx) = oneshot::channel();
        // Spawned before the wait: it is ready to run when the waiting task yields its turn.
        let sender = crate::lifecycle::Lifecycle::new()
            .spawn(async move { tx.send(7).expect("receiver alive") });
        let mut rx = pin!(rx);
        let got = ready_within_a_turn(rx.as_mut()).await;
        assert_eq!(got.map(|r| r.expect("sent")), Some(7));
        sender.await.expect("sender task");
    }

    #[tokio::test]
    async fn a_value_not_there_after_a_turn_is_left_to_the_caller() {
        let (tx, rx) = oneshot::channel::<u32>();
        let mut rx = pin!(rx);
        assert!(ready_within_a_turn(rx.as_mut()).await.is_none());
        tx.send(3).expect("receiver alive");
        assert_eq!(
            rx.await.expect("sent"),
            3,
            "the future still works after `None`"
        );
    }

    #[test]
    fn a_burst_is_full_at_max_burst_and_drains_in_order() {
        let mut burst = Burst::default();
        for i in 1..MAX_BURST {
            assert!(!burst.push(AnswerEvent::Delta(i.to_string())));
        }
        assert!(burst.push(AnswerEvent::Delta(MAX_BURST.to_string())));
        let texts: Vec<String> = burst
            .drain()
            .map(|event| match event {
                AnswerEvent::Delta(text) => text,
                other => panic!("expected a delta, got {other:?}"),
            })
            .collect();
        let expected: Vec<String> = (1..=MAX_BURST).map(|i| i.to_string()).collect();
        assert_eq!(texts, expected);
        assert!(burst.is_empty());
    }
}
