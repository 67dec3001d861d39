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
            // Boxed: the shared wait's state is three times the local one's, and every
            // exchange's state would be as large as the largest, clustered or not.
            Self::Shared(waiter) => Box::pin(waiter.wait()).await.map(UpstreamPermit::Shared),
        }
    }
}

/// The same behaviour, checked on both implementations: the local queue always, the shared
/// pool when `CHAT_PROXY_TEST_REDIS_URL` names a Redis (each test under a pool name of its own).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClusterConfig;
    use crate::lifecycle::Lifecycle;

    async fn pools(capacity: usize, max_queue: usize, timeout_ms: u64) -> Vec<PermitPool> {
        let timeout = Duration::from_millis(timeout_ms);
        let mut pools = vec![PermitPool::local(capacity, max_queue, timeout)];
        if let Ok(url) = std::env::var("CHAT_PROXY_TEST_REDIS_URL") {
            let config = ClusterConfig {
                redis_url: url,
                name: format!("unit-{}", uuid::Uuid::new_v4().simple()),
                lease_ms: 2_000,
                ..ClusterConfig::default()
            };
            let shared =
                SharedPool::start(&config, capacity, max_queue, timeout, &Lifecycle::new())
                    .await
                    .expect("the test Redis answers");
            pools.push(PermitPool::Shared(shared));
        }
        pools
    }

    async fn acquire(pool: &PermitPool) -> Result<UpstreamPermit, QueueError> {
        match pool.enter().await? {
            Entry::Ready(permit) => Ok(permit),
            Entry::Queued(waiter) => waiter.wait().await,
        }
    }

    fn queued(entry: Result<Entry, QueueError>) -> Waiter {
        match entry.expect("room in the queue") {
            Entry::Queued(waiter) => waiter,
            Entry::Ready(_) => panic!("must queue"),
        }
    }

    /// Until `check` holds: the shared pool gives back through its dispatcher.
    async fn settles(check: impl Fn() -> bool) {
        for _ in 0..100 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("did not settle");
    }

    #[tokio::test]
    async fn free_permits_are_taken_without_queueing() {
        for pool in pools(2, 10, 5_000).await {
            let a = acquire(&pool).await.expect("free permit");
            let _b = acquire(&pool).await.expect("free permit");
            assert_eq!(pool.in_use(), 2);
            drop(a);
            assert_eq!(pool.in_use(), 1);
            assert_eq!(pool.waiting(), 0);
            // The freed permit is free again for the next one, without waiting.
            settles(|| pool.available() == 1).await;
        }
    }

    #[tokio::test]
    async fn beyond_max_queue_is_refused_at_once_and_leaving_makes_room() {
        for pool in pools(1, 2, 5_000).await {
            let _held = acquire(&pool).await.expect("free permit");
            let w1 = queued(pool.enter().await);
            let w2 = queued(pool.enter().await);
            assert_eq!((w1.position(), w2.position()), (1, 2));
            assert!(matches!(
                pool.enter().await,
                Err(QueueError::Full { max_queue: 2 })
            ));
            drop(w1);
            // The shared queue is left through the dispatcher: the place frees shortly.
            let mut w3 = None;
            for _ in 0..100 {
                match pool.enter().await {
                    Ok(entry) => {
                        w3 = Some(queued(Ok(entry)));
                        break;
                    }
                    Err(QueueError::Full { .. }) => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(err) => panic!("{err}"),
                }
            }
            let w3 = w3.expect("room again once w1 left");
            assert_eq!(w3.position(), 2, "w1 left, w2 is first");
            drop((w2, w3));
            settles(|| pool.waiting() == 0).await;
        }
    }

    #[tokio::test]
    async fn waiting_past_the_timeout_fails() {
        for pool in pools(1, 10, 300).await {
            let _held = acquire(&pool).await.expect("free permit");
            let err = acquire(&pool).await.err().expect("times out");
            assert!(
                matches!(err, QueueError::Timeout { waited } if waited >= Duration::from_millis(300))
            );
            assert_eq!(pool.waiting(), 0);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiters_are_served_first_come_first_served() {
        for pool in pools(1, 100, 20_000).await {
            let held = acquire(&pool).await.expect("free permit");
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let lifecycle = Lifecycle::new();
            let mut tasks = Vec::new();
            for i in 0..20 {
                let waiter = queued(pool.enter().await);
                assert_eq!(waiter.position(), i + 1);
                let tx = tx.clone();
                tasks.push(lifecycle.spawn(async move {
                    let permit = waiter.wait().await.expect("served");
                    tx.send(i).expect("receiver alive");
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    drop(permit);
                }));
            }
            drop(held);
            for task in tasks {
                task.await.expect("task ran");
            }
            drop(tx);
            let mut order = Vec::new();
            while let Some(i) = rx.recv().await {
                order.push(i);
            }
            assert_eq!(
                order,
                (0..20).collect::<Vec<_>>(),
                "{}",
                if pool.cluster().is_some() {
                    "shared"
                } else {
                    "local"
                }
            );
        }
    }

    #[tokio::test]
    async fn a_caller_dropped_mid_entry_leaves_nothing_taken() {
        for pool in pools(1, 10, 5_000).await {
            // Each call is dropped after its first poll: on the shared pool its script is on
            // its way to Redis, and may take the permit or a ticket after the caller is gone.
            for yields in 0..40 {
                let entering = pool.enter();
                futures::pin_mut!(entering);
                for _ in 0..=yields {
                    if futures::poll!(entering.as_mut()).is_ready() {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
            }
            // A new caller gets the permit: nothing the dropped ones took is kept.
            let got = tokio::time::timeout(Duration::from_secs(3), async {
                loop {
                    match pool.enter().await {
                        Ok(Entry::Ready(permit)) => return permit,
                        Ok(Entry::Queued(waiter)) => match waiter.wait().await {
                            Ok(permit) => return permit,
                            Err(err) => panic!("{err}"),
                        },
                        // The dropped callers' places are on their way back.
                        Err(QueueError::Full { .. }) => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(err) => panic!("{err}"),
                    }
                }
            })
            .await;
            assert!(
                got.is_ok(),
                "a dropped caller kept the permit or a place ahead ({})",
                if pool.cluster().is_some() {
                    "shared"
                } else {
                    "local"
                }
            );
        }
    }
}
