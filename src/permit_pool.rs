//! The one door an exchange takes its upstream permit through, with two implementations
//! chosen at start-up: this process's own [`PermitQueue`], or the pool several instances share
//! through Redis ([`SharedPool`], with `cluster.redis_url`). The exchange does not know which.

use std::time::Duration;

use crate::cluster::{ClusterHealth, SharedPermit, SharedPool, SharedWaiter};
use crate::permit_queue::{self, PermitQueue, QueueError};

/// Shared by all requests; cheap to clone.
#[derive(Clone)]
pub enum PermitPool {
    Local(PermitQueue),
    Shared(SharedPool),
}

/// How a request entered the pool.
pub enum Entry {
    /// A permit was free: no waiting.
    Ready(UpstreamPermit),
    /// The request waits; `position` is 1 for the next to be served.
    Queued(Waiter),
}

/// A permit to hold one upstream request open. Dropping it frees the slot.
pub enum UpstreamPermit {
    Local(permit_queue::UpstreamPermit),
    Shared(SharedPermit),
}

/// A request waiting for a permit. Dropping it (the client left) leaves the queue at once.
pub enum Waiter {
    Local(permit_queue::Waiter),
    Shared(SharedWaiter),
}

impl PermitPool {
    /// A pool local to this process: `capacity` permits, at most `max_queue` waiting, each for
    /// at most `timeout`.
    pub fn local(capacity: usize, max_queue: usize, timeout: Duration) -> Self {
        Self::Local(PermitQueue::new(capacity, max_queue, timeout))
    }

    /// Takes a free permit, or a place in the queue, or refuses when the queue is full.
    pub async fn enter(&self) -> Result<Entry, QueueError> {
        match self {
            Self::Local(queue) => Ok(match queue.enter()? {
                permit_queue::Entry::Ready(permit) => Entry::Ready(UpstreamPermit::Local(permit)),
                permit_queue::Entry::Queued(waiter) => Entry::Queued(Waiter::Local(waiter)),
            }),
            Self::Shared(pool) => Ok(match pool.enter().await? {
                crate::cluster::SharedEntry::Ready(permit) => {
                    Entry::Ready(UpstreamPermit::Shared(permit))
                }
                crate::cluster::SharedEntry::Queued(waiter) => {
                    Entry::Queued(Waiter::Shared(waiter))
                }
            }),
        }
    }

    /// Permits in all (over every instance, when shared).
    pub fn capacity(&self) -> usize {
        match self {
            Self::Local(queue) => queue.capacity(),
            Self::Shared(pool) => pool.capacity(),
        }
    }

    /// Permits held (by this process, when shared).
    pub fn in_use(&self) -> usize {
        match self {
            Self::Local(queue) => queue.in_use(),
            Self::Shared(pool) => pool.in_use(),
        }
    }

    /// Permits free (as this process sees it, when shared).
    pub fn available(&self) -> usize {
        self.capacity().saturating_sub(self.in_use())
    }

    /// Requests waiting for a permit now (on this process, when shared).
    pub fn waiting(&self) -> usize {
        match self {
            Self::Local(queue) => queue.waiting(),
            Self::Shared(pool) => pool.waiting(),
        }
    }

    /// Whether Redis answers, when the pool is shared.
    pub fn cluster(&self) -> Option<&ClusterHealth> {
        match self {
            Self::Local(_) => None,
            Self::Shared(pool) => Some(pool.health()),
        }
    }

    /// Calls made to Redis so far (0 for a local pool).
    pub fn redis_calls(&self) -> u64 {
        match self {
            Self::Local(_) => 0,
            Self::Shared(pool) => pool.redis_calls(),
        }
    }

    /// Stops the shared pool's background work; call once the exchanges have ended.
    pub fn close(&self) {
        if let Self::Shared(pool) = self {
            pool.close();
        }
    }
}

impl UpstreamPermit {
    /// Resolves when the permit is taken back (its lease could not be renewed): the upstream
    /// request must end now. A local permit is never taken back.
    pub async fn lost(&self) {
        match self {
            Self::Local(_) => std::future::pending().await,
            Self::Shared(permit) => permit.lost().await,
        }
    }
}

impl Waiter {
    pub fn position(&self) -> usize {
        match self {
            Self::Local(waiter) => waiter.position(),
            Self::Shared(waiter) => waiter.position(),
        }
    }

    /// Waits for this request's turn; fails with [`QueueError::Timeout`] past the queue timeout.
    pub async fn wait(self) -> Result<UpstreamPermit, QueueError> {
        match self {
            Self::Local(waiter) => waiter.wait().await.map(UpstreamPermit::Local),
            Self::Shared(waiter) => waiter.wait().await.map(UpstreamPermit::Shared),
        }
    }
}
