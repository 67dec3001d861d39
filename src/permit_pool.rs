//! The one door an exchange takes its upstream permit through. Today the pool is this process's
//! own [`PermitQueue`]; a pool shared by several instances becomes its second implementation
//! here, and the exchange does not change.

use std::time::Duration;

use crate::permit_queue::{Entry, PermitQueue, QueueError};

/// Shared by all requests; cheap to clone.
#[derive(Debug, Clone)]
pub struct PermitPool {
    local: PermitQueue,
}

impl PermitPool {
    /// A pool local to this process: `capacity` permits, at most `max_queue` waiting, each for
    /// at most `timeout`.
    pub fn local(capacity: usize, max_queue: usize, timeout: Duration) -> Self {
        Self {
            local: PermitQueue::new(capacity, max_queue, timeout),
        }
    }

    /// Takes a free permit, or a place in the queue, or refuses when the queue is full.
    pub fn enter(&self) -> Result<Entry, QueueError> {
        self.local.enter()
    }

    /// Permits in all.
    pub fn capacity(&self) -> usize {
        self.local.capacity()
    }

    pub fn in_use(&self) -> usize {
        self.local.in_use()
    }

    pub fn available(&self) -> usize {
        self.local.available()
    }

    /// Requests waiting for a permit now.
    pub fn waiting(&self) -> usize {
        self.local.waiting()
    }
}
