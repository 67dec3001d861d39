//! A future polled only after it asked to be.
//!
//! An exchange waits on its upstream chunk and, beside it, on everything that could end it
//! early (the client leaving, a stalled backlog, the deadline, shutdown, a lost permit). Each
//! `select!` polls every branch whenever the task wakes, and the task wakes for every chunk:
//! so each chunk used to poll two timers and three `Notify` waiters (each poll of a waiting
//! `Notified` takes its `Notify`'s lock) just to learn that nothing had happened.
//!
//! [`WhenWoken`] gives its future a waker of its own. It polls the future the first time, and
//! afterwards only once that waker has been woken; the task's waker is woken with it. A wake
//! that comes at any moment is kept in an atomic flag, so none is lost.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures::task::AtomicWaker;

/// The flag the future's wake-ups set, and the task to wake with them.
struct Gate {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Gate {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

pin_project_lite::pin_project! {
    /// `future`, polled only when it has been woken since its last poll.
    pub struct WhenWoken<F> {
        #[pin]
        future: F,
        gate: Arc<Gate>,
        waker: Waker,
    }
}

impl<F: Future> WhenWoken<F> {
    pub fn new(future: F) -> Self {
        let gate = Arc::new(Gate {
            // The first poll goes through, so the future can register its wake-ups.
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(gate.clone());
        Self {
            future,
            gate,
            waker,
        }
    }
}

impl<F: Future> Future for WhenWoken<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        // Registered before the flag is read: a wake from now on reaches this task.
        this.gate.task.register(cx.waker());
        if !this.gate.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.future.poll(&mut Context::from_waker(this.waker))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use tokio::sync::Notify;

    use super::*;

    #[tokio::test]
    async fn the_future_is_polled_once_then_only_when_it_woke() {
        let polls = AtomicUsize::new(0);
        let notify = Notify::new();
        let mut notified = std::pin::pin!(notify.notified());
        let counted = std::future::poll_fn(|cx| {
            polls.fetch_add(1, Ordering::Relaxed);
            notified.as_mut().poll(cx)
        });
        let mut waiting = std::pin::pin!(WhenWoken::new(counted));
        for _ in 0..5 {
            assert!(futures::poll!(waiting.as_mut()).is_pending());
        }
        assert_eq!(
            polls.load(Ordering::Relaxed),
            1,
            "polled again with no wake"
        );
        notify.notify_one();
        waiting.await;
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_inside_still_fires() {
        let started = tokio::time::Instant::now();
        let slept = WhenWoken::new(tokio::time::sleep(std::time::Duration::from_secs(3)));
        tokio::select! {
            () = slept => {}
            () = std::future::pending::<()>() => unreachable!(),
        }
        assert_eq!(started.elapsed(), std::time::Duration::from_secs(3));
    }
}
