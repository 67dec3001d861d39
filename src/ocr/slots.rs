//! Room for decoded pages: an image is decoded, prepared and recognised only with a slot, and
//! there are as many slots as engines. That bounds the server's memory for images whatever
//! arrives at once (each slot holds one page of at most `ocr.max_pixels` while it decodes), and
//! it is where interactive work goes first: a free slot goes to a waiting `/ocr` request or tool
//! call before any batch job item, each kind in order of arrival.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Who waits for a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// `/ocr`, `/ocr_handler` and the model's tool calls: someone is waiting for the answer.
    Interactive,
    /// Items of `POST /ocr/jobs`.
    Batch,
}

#[derive(Debug, Clone)]
pub struct PageSlots {
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    free: usize,
    interactive: VecDeque<oneshot::Sender<Slot>>,
    batch: VecDeque<oneshot::Sender<Slot>>,
}

/// A slot, given back when dropped (to the next waiter, interactive ones first).
#[derive(Debug)]
pub struct Slot {
    state: Option<Arc<Mutex<State>>>,
}

impl PageSlots {
    pub fn new(count: usize) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                free: count.max(1),
                interactive: VecDeque::new(),
                batch: VecDeque::new(),
            })),
        }
    }

    /// Waits for a slot. Dropping the wait leaves the queue (a slot handed to it meanwhile goes
    /// on to the next waiter).
    pub async fn acquire(&self, priority: Priority) -> Slot {
        let receiver = {
            let mut state = self.state.lock().expect("page slots lock");
            if state.free > 0 {
                state.free -= 1;
                return Slot {
                    state: Some(self.state.clone()),
                };
            }
            let (sender, receiver) = oneshot::channel();
            match priority {
                Priority::Interactive => state.interactive.push_back(sender),
                Priority::Batch => state.batch.push_back(sender),
            }
            receiver
        };
        receiver
            .await
            .expect("a waiter's sender is only dropped after sending")
    }

    /// Waiters now, for tests.
    #[cfg(test)]
    fn waiting(&self) -> (usize, usize) {
        let state = self.state.lock().expect("page slots lock");
        (state.interactive.len(), state.batch.len())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(shared) = self.state.take() else {
            return;
        };
        let mut state = shared.lock().expect("page slots lock");
        loop {
            let next = match state.interactive.pop_front() {
                Some(next) => next,
                None => match state.batch.pop_front() {
                    Some(next) => next,
                    None => {
                        state.free += 1;
                        return;
                    }
                },
            };
            let slot = Slot {
                state: Some(shared.clone()),
            };
            match next.send(slot) {
                Ok(()) => return,
                // That waiter left: its slot comes back here as `unsent`, which must not run
                // this drop again (it would re-lock).
                Err(mut unsent) => {
                    unsent.state = None;
                }
            }
        }
    }
}

#[cfg(test)]
#[expect(
    clippy::disallowed_methods,
    reason = "the waiters are tasks of the test, not of the product"
)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_freed_slot_goes_to_interactive_work_before_batch_items() {
        let slots = PageSlots::new(1);
        let held = slots.acquire(Priority::Batch).await;
        let batch = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire(Priority::Batch).await }
        });
        while slots.waiting() != (0, 1) {
            tokio::task::yield_now().await;
        }
        let interactive = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire(Priority::Interactive).await }
        });
        while slots.waiting() != (1, 1) {
            tokio::task::yield_now().await;
        }
        drop(held);
        let first = interactive.await.expect("interactive waiter");
        assert!(!batch.is_finished(), "the batch item came first but waits");
        drop(first);
        drop(batch.await.expect("batch waiter"));
        assert_eq!(slots.state.lock().expect("lock").free, 1);
    }

    #[tokio::test]
    async fn a_waiter_that_left_does_not_lose_the_slot() {
        let slots = PageSlots::new(1);
        let held = slots.acquire(Priority::Interactive).await;
        let gone = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire(Priority::Interactive).await }
        });
        while slots.waiting() != (1, 0) {
            tokio::task::yield_now().await;
        }
        gone.abort();
        let _ = gone.await;
        drop(held);
        assert_eq!(slots.state.lock().expect("lock").free, 1);
        let _again = slots.acquire(Priority::Batch).await;
    }
}
