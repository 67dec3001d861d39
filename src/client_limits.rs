//! Per-client limits on answers: at most `limits.per_key_max_concurrent` requests open at
//! once and `limits.per_key_requests_per_minute` started per minute (a token bucket holding
//! `limits.per_key_burst`), so one client cannot fill the shared permit queue. A client is its
//! API key's id, or its IP address when the proxy runs without keys. A refusal says when to
//! try again. With `[cluster]` the counts are kept in Redis, over every instance
//! ([`SharedPool::admit_client`]); while Redis is away, each instance counts on its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::cluster::{SharedClientSlot, SharedPool};
use crate::config::LimitsConfig;

/// Past this many tracked clients, the ones at rest (nothing open, bucket full) are forgotten.
const PRUNE_ABOVE: usize = 4_096;

#[derive(Clone)]
pub struct ClientLimits {
    inner: Arc<Inner>,
    /// The pool whose Redis keeps the counts over every instance, with `[cluster]`.
    shared: Option<SharedPool>,
}

struct Inner {
    max_concurrent: usize,
    /// Tokens per second and bucket size; `None` when the rate is unlimited.
    rate: Option<(f64, f64)>,
    clients: Mutex<HashMap<String, ClientState>>,
}

struct ClientState {
    open: usize,
    tokens: f64,
    refilled: Instant,
}

/// Why a client was refused.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("this client already has {limit} answers open; wait for one to finish")]
    Concurrency { limit: usize },
    #[error("this client is starting answers faster than its rate allows")]
    Rate { retry_after: Duration },
}

impl Refusal {
    /// The label `/metrics` counts it under.
    pub fn limit(&self) -> &'static str {
        match self {
            Self::Concurrency { .. } => "concurrency",
            Self::Rate { .. } => "rate",
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Concurrency { .. } => "client_concurrency_limit",
            Self::Rate { .. } => "client_rate_limit",
        }
    }

    /// Whole seconds until a retry can succeed, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        match self {
            Self::Concurrency { .. } => 1,
            Self::Rate { retry_after } => (retry_after.as_secs_f64().ceil() as u64).max(1),
        }
    }
}

/// One admitted request; the client's count goes down when it is dropped (the exchange ended).
pub struct ClientSlot {
    inner: Option<(Arc<Inner>, String)>,
    _shared: Option<SharedClientSlot>,
}

impl ClientLimits {
    pub fn new(config: &LimitsConfig) -> Self {
        let rate = (config.per_key_requests_per_minute > 0).then(|| {
            (
                f64::from(config.per_key_requests_per_minute) / 60.0,
                f64::from(config.per_key_burst.max(1)),
            )
        });
        Self {
            inner: Arc::new(Inner {
                max_concurrent: config.per_key_max_concurrent,
                rate,
                clients: Mutex::new(HashMap::new()),
            }),
            shared: None,
        }
    }

    /// The same limits counted over every instance of `pool`.
    pub fn shared(mut self, pool: SharedPool) -> Self {
        self.shared = Some(pool);
        self
    }

    fn unlimited(&self) -> bool {
        self.inner.max_concurrent == 0 && self.inner.rate.is_none()
    }

    /// Counts a new request for `client`, over every instance when the pool is shared and
    /// Redis answers, or says which limit refuses it.
    pub async fn admit(&self, client: &str) -> Result<ClientSlot, Refusal> {
        if self.unlimited() {
            return Ok(ClientSlot::free());
        }
        if let Some(pool) = self.shared.as_ref().filter(|p| p.health().is_up()) {
            let counted = pool
                .admit_client(client, self.inner.max_concurrent, self.inner.rate)
                .await;
            // Redis did not answer: this instance counts on its own meanwhile.
            if let Ok(verdict) = counted {
                return verdict.map(|shared| ClientSlot {
                    inner: None,
                    _shared: shared,
                });
            }
        }
        self.admit_here(client)
    }

    /// Counts on this instance alone.
    pub fn admit_here(&self, client: &str) -> Result<ClientSlot, Refusal> {
        if self.unlimited() {
            return Ok(ClientSlot::free());
        }
        let inner = &self.inner;
        let now = Instant::now();
        let mut clients = inner.clients.lock().expect("client limits lock");
        if clients.len() > PRUNE_ABOVE {
            clients.retain(|_, state| !inner.at_rest(state, now));
        }
        let burst = inner.rate.map_or(0.0, |(_, burst)| burst);
        let state = clients
            .entry(client.to_owned())
            .or_insert_with(|| ClientState {
                open: 0,
                tokens: burst,
                refilled: now,
            });
        if inner.max_concurrent > 0 && state.open >= inner.max_concurrent {
            return Err(Refusal::Concurrency {
                limit: inner.max_concurrent,
            });
        }
        if let Some((per_second, burst)) = inner.rate {
            state.tokens = state.tokens_at(now, per_second).min(burst);
            state.refilled = now;
            if state.tokens < 1.0 {
                let retry_after = Duration::from_secs_f64((1.0 - state.tokens) / per_second);
                return Err(Refusal::Rate { retry_after });
            }
            state.tokens -= 1.0;
        }
        state.open += 1;
        Ok(ClientSlot {
            inner: Some((inner.clone(), client.to_owned())),
            _shared: None,
        })
    }

    /// Clients tracked now (for tests of the pruning).
    pub fn tracked(&self) -> usize {
        self.inner.clients.lock().expect("client limits lock").len()
    }
}

impl Inner {
    fn at_rest(&self, state: &ClientState, now: Instant) -> bool {
        state.open == 0
            && self
                .rate
                .is_none_or(|(per_second, burst)| state.tokens_at(now, per_second) >= burst)
    }
}

impl ClientState {
    /// The bucket's tokens at `now`, refilled since `refilled` and not yet capped at the burst.
    fn tokens_at(&self, now: Instant, per_second: f64) -> f64 {
        self.tokens + now.duration_since(self.refilled).as_secs_f64() * per_second
    }
}

impl ClientSlot {
    /// A slot no limit counts.
    fn free() -> Self {
        Self {
            inner: None,
            _shared: None,
        }
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        if let Some((inner, client)) = self.inner.take() {
            let mut clients = inner.clients.lock().expect("client limits lock");
            if let Some(state) = clients.get_mut(&client) {
                state.open = state.open.saturating_sub(1);
                if inner.at_rest(state, Instant::now()) {
                    clients.remove(&client);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(concurrent: usize, per_minute: u32, burst: u32) -> ClientLimits {
        ClientLimits::new(&LimitsConfig {
            per_key_max_concurrent: concurrent,
            per_key_requests_per_minute: per_minute,
            per_key_burst: burst,
            ..LimitsConfig::default()
        })
    }

    #[test]
    fn unlimited_by_default_tracks_nothing() {
        let limits = ClientLimits::new(&LimitsConfig::default());
        let slots: Vec<_> = (0..100)
            .map(|_| limits.admit_here("a").expect("admitted"))
            .collect();
        assert_eq!(slots.len(), 100);
        assert_eq!(limits.tracked(), 0);
    }

    #[test]
    fn concurrency_is_counted_per_client_and_freed_on_drop() {
        let limits = limits(2, 0, 0);
        let a1 = limits.admit_here("a").expect("first");
        let _a2 = limits.admit_here("a").expect("second");
        assert_eq!(
            limits.admit_here("a").err(),
            Some(Refusal::Concurrency { limit: 2 })
        );
        let _b = limits
            .admit_here("b")
            .expect("another client is not affected");
        drop(a1);
        let _a3 = limits.admit_here("a").expect("a slot was freed");
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_allows_a_burst_then_refills_and_says_when() {
        let limits = limits(0, 60, 3);
        for _ in 0..3 {
            drop(limits.admit_here("a").expect("within the burst"));
        }
        let Err(Refusal::Rate { retry_after }) = limits.admit_here("a") else {
            panic!("the fourth at once is refused");
        };
        assert_eq!(retry_after, Duration::from_secs(1));
        assert_eq!(Refusal::Rate { retry_after }.retry_after_secs(), 1);
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(
            limits.admit_here("a").is_err(),
            "half a token is not enough"
        );
        tokio::time::advance(Duration::from_millis(500)).await;
        drop(limits.admit_here("a").expect("one token refilled"));
        drop(
            limits
                .admit_here("b")
                .expect("another client has its own bucket"),
        );
    }

    #[tokio::test(start_paused = true)]
    async fn clients_at_rest_are_forgotten() {
        let limits = limits(1, 60, 1);
        drop(limits.admit_here("a").expect("admitted"));
        assert_eq!(limits.tracked(), 1, "its bucket is still refilling");
        tokio::time::advance(Duration::from_secs(2)).await;
        for n in 0..=PRUNE_ABOVE {
            drop(limits.admit_here(&format!("client-{n}")).expect("admitted"));
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        let _slot = limits.admit_here("late").expect("admitted");
        assert_eq!(
            limits.tracked(),
            1,
            "only the client with an open request is left"
        );
    }
}
