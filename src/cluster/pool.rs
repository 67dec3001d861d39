//! [`SharedPool`]: this process's side of the pool kept in Redis.
//!
//! - A request takes a permit or a ticket with one script call (`enter`). A permit is a lease
//!   held under the ticket's id.
//! - One task per process (the dispatcher) owns everything else, one call at a time, so its
//!   calls never race each other:
//!   - when a permit frees (a pub/sub message naming this process, its own give-back, or its
//!     own tick), it asks Redis to grant this process's waiters, in arrival order, what the
//!     global queue allows;
//!   - it gives back permits and tickets that requests dropped, and retries those Redis did
//!     not take;
//!   - every quarter lease it renews this process's liveness and counts its running requests
//!     as leases again if Redis lost them;
//!   - if renewing has failed for half a lease, it ends the requests holding leases (before
//!     anyone else can get them), with an error for their clients.
//! - While Redis is away, requests run on `cluster.local_share` permits of this process
//!   (`on_redis_down = "local"`) or are refused (`"reject"`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ClusterError;
use super::health::ClusterHealth;
use super::redis_pool::{ClientVerdict, Entered, PoolRedis};
use super::wake::{self, Wakes};
use crate::client_limits::Refusal;
use crate::config::{ClusterConfig, OnRedisDown};
use crate::lifecycle::Lifecycle;
use crate::permit_queue::{self, PermitQueue, QueueError};

/// Shared by all requests; cheap to clone.
#[derive(Clone)]
pub struct SharedPool {
    inner: Arc<Inner>,
}

struct Inner {
    redis: PoolRedis,
    health: ClusterHealth,
    capacity: usize,
    max_queue: usize,
    timeout: Duration,
    /// This process's permits while Redis is away (`local_share`), and their queue.
    local: PermitQueue,
    /// Requests running on this process, by lease id.
    running: Mutex<HashMap<String, Running>>,
    /// This process's requests in the shared queue, by arrival number.
    waiters: Mutex<BTreeMap<u64, Waiting>>,
    /// What requests dropped, for the dispatcher to give back.
    give_back: mpsc::UnboundedSender<Returned>,
    wakes: Arc<Wakes>,
    /// Calls to Redis, for the benchmark's round trips per request.
    calls: AtomicU64,
    stop: CancellationToken,
}

/// What a request gives back when it is dropped.
enum Returned {
    /// A lease id or a ticket.
    Pool(String),
    /// A client's open answer: its key base and slot id.
    ClientSlot(String, String),
}

/// One open answer counted against its client over every instance; dropping it ends it.
pub struct SharedClientSlot {
    pool: Arc<Inner>,
    base: String,
    slot: String,
}

struct Running {
    /// Cancelled when its lease can no longer be renewed.
    lost: CancellationToken,
    /// Whether Redis counts it: false for a request begun on the local share while Redis was
    /// away, until a heartbeat counts it. Only leases are ended when renewing fails.
    leased: bool,
    /// Whether a heartbeat has sent it (and so may have made it a lease): then it is given
    /// back when it ends, even if that heartbeat's answer has not come yet.
    reported: bool,
}

struct Waiting {
    ticket: String,
    grant: oneshot::Sender<Result<SharedPermit, QueueError>>,
}

/// One upstream request's permit. Dropping it gives it back.
pub struct SharedPermit {
    id: String,
    pool: Arc<Inner>,
    lost: CancellationToken,
    /// Set when the permit is one of the local share.
    _local: Option<permit_queue::UpstreamPermit>,
}

/// A request waiting in the shared queue (or, while Redis is away, in the local one).
/// Dropping it leaves the queue.
pub struct SharedWaiter {
    position: usize,
    /// Taken by `wait`; what is left when dropped leaves the queue.
    wait: Option<WaitIn>,
}

enum WaitIn {
    Shared {
        pool: Arc<Inner>,
        seq: u64,
        grant: oneshot::Receiver<Result<SharedPermit, QueueError>>,
    },
    Local {
        pool: Arc<Inner>,
        waiter: permit_queue::Waiter,
    },
}

/// How a request entered the pool.
pub enum SharedEntry {
    Ready(SharedPermit),
    Queued(SharedWaiter),
}

impl SharedPool {
    /// The pool for `config`. With `on_redis_down = "reject"`, a Redis that cannot be reached
    /// now is a start-up error; with `"local"`, the process starts degraded.
    pub async fn start(
        config: &ClusterConfig,
        capacity: usize,
        max_queue: usize,
        timeout: Duration,
        lifecycle: &Lifecycle,
    ) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let client = super::redis_client(config)?;
        let lease = Duration::from_millis(config.lease_ms);
        let tick = beat_interval(lease);
        let instance = uuid::Uuid::new_v4().simple().to_string();
        let redis = PoolRedis::new(
            client.clone(),
            &config.name,
            instance,
            config.lease_ms,
            tick,
        )
        .context("cluster.redis_url")?;
        let health = ClusterHealth::new(config.on_redis_down, config.local_share);
        let (give_back, returned) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            redis,
            health,
            capacity,
            max_queue,
            timeout,
            local: PermitQueue::new(config.local_share, max_queue, timeout),
            running: Mutex::new(HashMap::new()),
            waiters: Mutex::new(BTreeMap::new()),
            give_back,
            wakes: Arc::new(Wakes::default()),
            calls: AtomicU64::new(0),
            stop: CancellationToken::new(),
        });
        match inner.beat().await {
            Ok(()) => tracing::info!(
                redis = %super::describe(&config.redis_url),
                name = %config.name,
                instance = inner.redis.instance(),
                capacity,
                "cluster: upstream permits shared through Redis"
            ),
            Err(err) if config.on_redis_down == OnRedisDown::Reject => {
                return Err(anyhow::anyhow!(err)).with_context(|| {
                    format!(
                        "cluster: cannot reach Redis at {} (on_redis_down = \"reject\")",
                        super::describe(&config.redis_url)
                    )
                });
            }
            Err(err) => inner.health.down(&err),
        }
        lifecycle.spawn_service(wake::listen(
            client,
            inner.redis.wake_channel(),
            inner.redis.instance().to_owned(),
            inner.wakes.clone(),
            tick,
            inner.stop.clone(),
        ));
        lifecycle.spawn_service(inner.clone().dispatch(returned, tick, lease));
        Ok(Self { inner })
    }

    /// Takes a free permit, or a ticket in the queue, or refuses when the queue is full.
    pub async fn enter(&self) -> Result<SharedEntry, QueueError> {
        let inner = &self.inner;
        if !inner.health.is_up() {
            return inner.enter_degraded();
        }
        let ticket = uuid::Uuid::new_v4().simple().to_string();
        // If this future is dropped mid-call (the client left), what the call took goes back.
        let unclaimed = Unclaimed::new(inner, Returned::Pool(ticket.clone()));
        let wakes_before = inner.wakes.seen();
        inner.calls.fetch_add(1, Ordering::Relaxed);
        let entered = inner
            .redis
            .enter(&ticket, inner.capacity, inner.max_queue)
            .await;
        unclaimed.claim();
        match entered {
            Ok(Entered::Permit) => Ok(SharedEntry::Ready(inner.permit(ticket, true, None))),
            Ok(Entered::Full) => Err(QueueError::Full {
                max_queue: inner.max_queue,
            }),
            Ok(Entered::Queued {
                position,
                seq,
                served_now,
            }) => {
                let (grant, granted) = oneshot::channel();
                inner
                    .waiters
                    .lock()
                    .expect("waiters lock")
                    .insert(seq, Waiting { ticket, grant });
                if served_now || inner.wakes.seen() != wakes_before {
                    // A permit is free for it already, or one freed while this ticket was on
                    // its way: ask now.
                    inner.wakes.notify.notify_one();
                }
                Ok(SharedEntry::Queued(SharedWaiter {
                    position,
                    wait: Some(WaitIn::Shared {
                        pool: inner.clone(),
                        seq,
                        grant: granted,
                    }),
                }))
            }
            Err(err) => {
                inner.health.down(&err);
                // The call may have run: whatever it took goes back once Redis answers.
                let _ = inner.give_back.send(Returned::Pool(ticket));
                inner.enter_degraded()
            }
        }
    }

    /// Counts a new answer of `client` against the per-client limits over every instance.
    /// `Err` when Redis did not answer: the caller counts it locally instead.
    pub async fn admit_client(
        &self,
        client: &str,
        max_open: usize,
        rate: Option<(f64, f64)>,
    ) -> Result<Result<Option<SharedClientSlot>, Refusal>, ClusterError> {
        let inner = &self.inner;
        let base = inner.redis.client_base(client);
        let slot = uuid::Uuid::new_v4().simple().to_string();
        inner.calls.fetch_add(1, Ordering::Relaxed);
        let unclaimed = Unclaimed::new(inner, Returned::ClientSlot(base.clone(), slot.clone()));
        let verdict = inner.redis.client_admit(&base, &slot, max_open, rate).await;
        unclaimed.claim();
        let verdict = verdict.inspect_err(|err| inner.health.down(err))?;
        Ok(match verdict {
            ClientVerdict::Admitted => Ok((max_open > 0).then(|| SharedClientSlot {
                pool: inner.clone(),
                base,
                slot,
            })),
            ClientVerdict::Concurrency => Err(Refusal::Concurrency { limit: max_open }),
            ClientVerdict::Rate(retry_after) => Err(Refusal::Rate { retry_after }),
        })
    }

    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// Permits this process holds now.
    pub fn in_use(&self) -> usize {
        self.inner.running.lock().expect("running lock").len()
    }

    /// This process's requests waiting now.
    pub fn waiting(&self) -> usize {
        self.inner.waiters.lock().expect("waiters lock").len() + self.inner.local.waiting()
    }

    pub fn health(&self) -> &ClusterHealth {
        &self.inner.health
    }

    /// Calls made to Redis so far.
    pub fn redis_calls(&self) -> u64 {
        self.inner.calls.load(Ordering::Relaxed)
    }

    /// Stops the dispatcher once the requests have ended: what they gave back goes to Redis
    /// first.
    pub fn close(&self) {
        self.inner.stop.cancel();
    }
}

impl Inner {
    fn permit(
        self: &Arc<Self>,
        id: String,
        leased: bool,
        local: Option<permit_queue::UpstreamPermit>,
    ) -> SharedPermit {
        let lost = CancellationToken::new();
        self.running.lock().expect("running lock").insert(
            id.clone(),
            Running {
                lost: lost.clone(),
                leased,
                reported: false,
            },
        );
        SharedPermit {
            id,
            pool: self.clone(),
            lost,
            _local: local,
        }
    }

    /// Entry while Redis is away, as `on_redis_down` says.
    fn enter_local(&self) -> Result<permit_queue::Entry, QueueError> {
        if self.health.on_down() == OnRedisDown::Reject {
            return Err(QueueError::Unavailable);
        }
        self.local.enter()
    }

    /// A local-share permit or place, while Redis is away.
    fn enter_degraded(self: &Arc<Self>) -> Result<SharedEntry, QueueError> {
        Ok(match self.enter_local()? {
            permit_queue::Entry::Ready(permit) => SharedEntry::Ready(self.local_permit(permit)),
            permit_queue::Entry::Queued(waiter) => SharedEntry::Queued(SharedWaiter {
                position: waiter.position(),
                wait: Some(WaitIn::Local {
                    pool: self.clone(),
                    waiter,
                }),
            }),
        })
    }

    /// Leaves the shared queue, unless the dispatcher already took the ticket out.
    fn leave(&self, seq: u64) {
        let waiting = self.waiters.lock().expect("waiters lock").remove(&seq);
        if let Some(waiting) = waiting {
            let _ = self.give_back.send(Returned::Pool(waiting.ticket));
        }
    }

    fn local_permit(self: &Arc<Self>, permit: permit_queue::UpstreamPermit) -> SharedPermit {
        let id = uuid::Uuid::new_v4().simple().to_string();
        self.permit(id, false, Some(permit))
    }

    /// The dispatcher: the one task that grants, gives back and renews (see the module's doc).
    async fn dispatch(
        self: Arc<Self>,
        mut returned: mpsc::UnboundedReceiver<Returned>,
        tick: Duration,
        lease: Duration,
    ) {
        let mut to_give_back = GivenBack::default();
        let mut last_renewed = Instant::now();
        let mut next_beat = Instant::now() + tick;
        loop {
            tokio::select! {
                biased;
                Some(item) = returned.recv() => {
                    to_give_back.add(item);
                    while let Ok(item) = returned.try_recv() {
                        to_give_back.add(item);
                    }
                    if !self.send_back(&mut to_give_back).await {
                        // The freed permits are first for other instances' waiters.
                        continue;
                    }
                }
                () = self.stop.cancelled() => break,
                () = self.wakes.notify.notified() => {}
                () = tokio::time::sleep_until(next_beat) => {
                    next_beat = Instant::now() + tick;
                    let started = Instant::now();
                    match self.beat().await {
                        Ok(()) => {
                            last_renewed = started;
                            self.health.up();
                        }
                        Err(err) => self.health.down(&err),
                    }
                    if last_renewed.elapsed() > lease / 2 {
                        self.end_unrenewed();
                    }
                    self.send_back(&mut to_give_back).await;
                }
            }
            self.grant().await;
        }
        // Shutdown: the requests have ended; what they gave back goes to Redis now.
        while let Ok(item) = returned.try_recv() {
            to_give_back.add(item);
        }
        self.send_back(&mut to_give_back).await;
    }

    /// Renews this process's liveness and counts its running requests as leases.
    async fn beat(&self) -> Result<(), ClusterError> {
        let running: Vec<String> = self
            .running
            .lock()
            .expect("running lock")
            .iter_mut()
            .map(|(id, entry)| {
                entry.reported = true;
                id.clone()
            })
            .collect();
        self.calls.fetch_add(1, Ordering::Relaxed);
        let counted = self.redis.heartbeat(self.capacity, &running).await?;
        let mut all = self.running.lock().expect("running lock");
        for id in &running {
            if let Some(entry) = all.get_mut(id) {
                entry.leased = true;
            }
        }
        if counted > 0 {
            tracing::info!(
                counted,
                "cluster: running requests counted in the shared pool again"
            );
        }
        Ok(())
    }

    /// Ends every request whose lease can no longer be renewed, before it expires.
    fn end_unrenewed(&self) {
        let running = self.running.lock().expect("running lock");
        let mut ended = 0;
        for entry in running.values().filter(|r| r.leased) {
            if !entry.lost.is_cancelled() {
                entry.lost.cancel();
                ended += 1;
            }
        }
        if ended > 0 {
            tracing::warn!(
                ended,
                "cluster: permit leases could not be renewed; their requests end before the leases expire"
            );
        }
    }

    /// Gives back what requests dropped; what Redis does not take now is kept for later.
    /// True when this process's own waiters are first in line for the permits freed.
    async fn send_back(&self, given: &mut GivenBack) -> bool {
        if !self.health.is_up() {
            return false;
        }
        let mut mine = false;
        if !given.pool.is_empty() {
            self.calls.fetch_add(1, Ordering::Relaxed);
            match self.redis.give_back(self.capacity, &given.pool).await {
                Ok(first_in_line) => {
                    given.pool.clear();
                    mine = first_in_line;
                }
                Err(err) => {
                    self.health.down(&err);
                    return false;
                }
            }
        }
        if !given.client_slots.is_empty() {
            self.calls.fetch_add(1, Ordering::Relaxed);
            match self.redis.client_release(&given.client_slots).await {
                Ok(()) => given.client_slots.clear(),
                Err(err) => self.health.down(&err),
            }
        }
        mine
    }

    /// Asks Redis for permits for this process's waiters, first come first served.
    async fn grant(self: &Arc<Self>) {
        if !self.health.is_up() {
            return;
        }
        let tickets: Vec<(u64, String)> = {
            let waiters = self.waiters.lock().expect("waiters lock");
            waiters
                .iter()
                .take(self.capacity)
                .map(|(seq, w)| (*seq, w.ticket.clone()))
                .collect()
        };
        if tickets.is_empty() {
            return;
        }
        let names: Vec<&str> = tickets.iter().map(|(_, t)| t.as_str()).collect();
        self.calls.fetch_add(1, Ordering::Relaxed);
        let taken = match self.redis.take(self.capacity, &names).await {
            Ok(taken) => taken,
            Err(err) => {
                self.health.down(&err);
                return;
            }
        };
        for (seq, ticket) in &tickets {
            let outcome = if taken.granted.contains(ticket) {
                true
            } else if taken.gone.contains(ticket) {
                false
            } else {
                continue;
            };
            let waiting = self.waiters.lock().expect("waiters lock").remove(seq);
            let Some(waiting) = waiting else {
                // It left meanwhile: its ticket is already on its way back.
                continue;
            };
            let sent = if outcome {
                let permit = self.permit(waiting.ticket, true, None);
                // A waiter that left drops the permit with the channel, which gives it back.
                waiting.grant.send(Ok(permit))
            } else {
                tracing::warn!("cluster: a queued ticket was dropped by Redis; the request fails");
                waiting.grant.send(Err(QueueError::Unavailable))
            };
            drop(sent);
        }
    }
}

impl SharedPermit {
    /// Resolves when the lease can no longer be renewed: the request must end now.
    pub async fn lost(&self) {
        self.lost.cancelled().await;
    }
}

impl Drop for SharedPermit {
    fn drop(&mut self) {
        let entry = self
            .pool
            .running
            .lock()
            .expect("running lock")
            .remove(&self.id);
        if entry.is_some_and(|e| e.leased || e.reported) {
            let _ = self
                .pool
                .give_back
                .send(Returned::Pool(std::mem::take(&mut self.id)));
        }
    }
}

impl SharedWaiter {
    /// 1 for the next to be served, over every instance.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Waits for this request's turn, at most `limits.queue_timeout_ms` in all.
    pub async fn wait(mut self) -> Result<SharedPermit, QueueError> {
        let started = Instant::now();
        let wait = self.wait.take().expect("a waiter waits once");
        match wait {
            WaitIn::Local { pool, waiter } => {
                let permit = waiter.wait().await?;
                Ok(pool.local_permit(permit))
            }
            WaitIn::Shared {
                pool,
                seq,
                mut grant,
            } => {
                let leave = Leave {
                    pool: pool.clone(),
                    seq,
                };
                let deadline = started + pool.timeout;
                let redis_went_down = tokio::select! {
                    granted = &mut grant => {
                        return granted.unwrap_or(Err(QueueError::Unavailable));
                    }
                    () = tokio::time::sleep_until(deadline) => false,
                    () = pool.health.went_down() => true,
                };
                drop(leave);
                // A grant that came at the last moment still counts.
                if let Ok(granted) = grant.try_recv() {
                    return granted;
                }
                if !redis_went_down {
                    return Err(QueueError::Timeout {
                        waited: started.elapsed(),
                    });
                }
                // Redis went away while this request waited.
                match pool.enter_local()? {
                    permit_queue::Entry::Ready(permit) => Ok(pool.local_permit(permit)),
                    permit_queue::Entry::Queued(waiter) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        match tokio::time::timeout(left, waiter.wait()).await {
                            Ok(permit) => Ok(pool.local_permit(permit?)),
                            Err(_) => Err(QueueError::Timeout {
                                waited: started.elapsed(),
                            }),
                        }
                    }
                }
            }
        }
    }
}

/// Leaves the shared queue when dropped (the waiting future was dropped, or is done).
struct Leave {
    pool: Arc<Inner>,
    seq: u64,
}

impl Drop for Leave {
    fn drop(&mut self) {
        self.pool.leave(self.seq);
    }
}

impl Drop for SharedWaiter {
    fn drop(&mut self) {
        if let Some(WaitIn::Shared { pool, seq, .. }) = &self.wait {
            pool.leave(*seq);
        }
    }
}

impl Drop for SharedClientSlot {
    fn drop(&mut self) {
        let _ = self.pool.give_back.send(Returned::ClientSlot(
            std::mem::take(&mut self.base),
            std::mem::take(&mut self.slot),
        ));
    }
}

/// What a Redis call may take, given back if the caller is dropped before the call returns.
struct Unclaimed<'a> {
    pool: &'a Inner,
    item: Option<Returned>,
}

impl<'a> Unclaimed<'a> {
    fn new(pool: &'a Inner, item: Returned) -> Self {
        Self {
            pool,
            item: Some(item),
        }
    }

    /// The call returned: its caller owns what it took.
    fn claim(mut self) {
        self.item = None;
    }
}

impl Drop for Unclaimed<'_> {
    fn drop(&mut self) {
        if let Some(item) = self.item.take() {
            let _ = self.pool.give_back.send(item);
        }
    }
}

/// What the dispatcher has yet to give back.
#[derive(Default)]
struct GivenBack {
    pool: Vec<String>,
    client_slots: Vec<(String, String)>,
}

impl GivenBack {
    fn add(&mut self, item: Returned) {
        match item {
            Returned::Pool(id) => self.pool.push(id),
            Returned::ClientSlot(base, slot) => self.client_slots.push((base, slot)),
        }
    }
}

/// How often the dispatcher renews: a quarter lease, at most once a second.
fn beat_interval(lease: Duration) -> Duration {
    (lease / 4).min(Duration::from_secs(1))
}
