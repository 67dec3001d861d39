//! The permit queue in front of the upstream: one `tokio::sync::Semaphore` (first come, first
//! served) with `max_concurrent_upstream` permits, a bound on how many may wait, and a wait limit.
//! Its behaviour is tested in [`crate::permit_pool`], whose tests run on both implementations.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Why a request got no permit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("{max_queue} requests are already waiting for the model")]
    Full { max_queue: usize },
    #[error("no model capacity became free within {} ms", .waited.as_millis())]
    Timeout { waited: Duration },
    /// The permit pool shared through Redis cannot be reached, and `cluster.on_redis_down`
    /// is `reject`.
    #[error("the shared permit pool (Redis) cannot be reached; retry shortly")]
    Unavailable,
}

impl QueueError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Full { .. } => "queue_full",
            Self::Timeout { .. } => "queue_timeout",
            Self::Unavailable => "cluster_unavailable",
        }
    }
}

/// Shared by all requests; cheap to clone.
#[derive(Debug, Clone)]
pub struct PermitQueue {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    semaphore: Arc<Semaphore>,
    capacity: usize,
    max_queue: usize,
    timeout: Duration,
    waiting: AtomicUsize,
    /// Monotonic ticket counters: a waiter's position is its ticket minus the tickets served
    /// or abandoned before it, which the semaphore's FIFO order makes exact.
    issued: AtomicU64,
    left: AtomicU64,
}

/// A permit to hold one upstream request open. Dropping it frees the slot.
#[derive(Debug)]
pub struct UpstreamPermit {
    _permit: OwnedSemaphorePermit,
}

/// How a request entered the queue.
pub enum Entry {
    /// A permit was free: no waiting.
    Ready(UpstreamPermit),
    /// The request waits; `position` is 1 for the next to be served.
    Queued(Waiter),
}

/// A request waiting for a permit. Dropping it (the client left) leaves the queue at once.
pub struct Waiter {
    queue: PermitQueue,
    position: usize,
    counted: bool,
    /// Its place in the semaphore's own queue, taken when it entered: the order of service is
    /// the order of entry, not the order in which the waiting tasks first run. Taken by `wait`.
    acquire: Option<Acquire>,
}

type Acquiring = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

enum Acquire {
    Waiting(Acquiring),
    /// A permit came free between entering and waiting.
    Granted(OwnedSemaphorePermit),
}

impl PermitQueue {
    pub fn new(capacity: usize, max_queue: usize, timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                semaphore: Arc::new(Semaphore::new(capacity)),
                capacity,
                max_queue,
                timeout,
                waiting: AtomicUsize::new(0),
                issued: AtomicU64::new(0),
                left: AtomicU64::new(0),
            }),
        }
    }

    /// Takes a free permit, or joins the queue, or refuses when `max_queue` already wait.
    pub fn enter(&self) -> Result<Entry, QueueError> {
        // Tokio hands released permits to waiters before making them available, so a
        // successful `try_acquire` never jumps the queue.
        if let Ok(permit) = self.inner.semaphore.clone().try_acquire_owned() {
            return Ok(Entry::Ready(UpstreamPermit { _permit: permit }));
        }
        let inner = &self.inner;
        let mut waiting = inner.waiting.load(Ordering::Acquire);
        loop {
            if waiting >= inner.max_queue {
                return Err(QueueError::Full {
                    max_queue: inner.max_queue,
                });
            }
            match inner.waiting.compare_exchange_weak(
                waiting,
                waiting + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => waiting = now,
            }
        }
        let ticket = inner.issued.fetch_add(1, Ordering::AcqRel);
        let left = inner.left.load(Ordering::Acquire);
        let position = usize::try_from(ticket.saturating_sub(left)).unwrap_or(usize::MAX) + 1;
        // Polled once now, so the semaphore queues it at once.
        let mut acquiring: Acquiring = Box::pin(inner.semaphore.clone().acquire_owned());
        let acquire = match acquiring
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(Ok(permit)) => Acquire::Granted(permit),
            Poll::Ready(Err(_closed)) => {
                unreachable!("the permit queue's semaphore is never closed")
            }
            Poll::Pending => Acquire::Waiting(acquiring),
        };
        Ok(Entry::Queued(Waiter {
            queue: self.clone(),
            position,
            counted: true,
            acquire: Some(acquire),
        }))
    }

    /// Waits in line (bounded by the queue timeout) and returns the permit.
    pub async fn acquire(&self) -> Result<UpstreamPermit, QueueError> {
        match self.enter()? {
            Entry::Ready(permit) => Ok(permit),
            Entry::Queued(waiter) => waiter.wait().await,
        }
    }

    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    pub fn in_use(&self) -> usize {
        self.inner.capacity - self.available()
    }

    pub fn available(&self) -> usize {
        self.inner.semaphore.available_permits()
    }

    /// Requests waiting for a permit now.
    pub fn waiting(&self) -> usize {
        self.inner.waiting.load(Ordering::Acquire)
    }

    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }
}

impl Waiter {
    pub fn position(&self) -> usize {
        self.position
    }

    /// Waits for this request's turn; fails with [`QueueError::Timeout`] past the queue timeout.
    pub async fn wait(mut self) -> Result<UpstreamPermit, QueueError> {
        let started = Instant::now();
        let outcome = match self.acquire.take().expect("a waiter waits once") {
            Acquire::Granted(permit) => Ok(Ok(permit)),
            Acquire::Waiting(acquiring) => {
                tokio::time::timeout(self.queue.inner.timeout, acquiring).await
            }
        };
        self.leave();
        match outcome {
            Ok(Ok(permit)) => Ok(UpstreamPermit { _permit: permit }),
            Ok(Err(_closed)) => unreachable!("the permit queue's semaphore is never closed"),
            Err(_) => Err(QueueError::Timeout {
                waited: started.elapsed(),
            }),
        }
    }

    fn leave(&mut self) {
        if std::mem::take(&mut self.counted) {
            self.queue.inner.waiting.fetch_sub(1, Ordering::AcqRel);
            self.queue.inner.left.fetch_add(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.leave();
    }
}
