//! The shared pool's Redis side: one connection that reconnects by itself, and one typed call
//! per Lua script (`lua/`). Every change to the pool is one script, so it is atomic; no RESP is
//! written here.

use std::sync::Mutex;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, ScriptInvocation};

use super::ClusterError;

macro_rules! pool_script {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("lua/prelude.lua"),
            include_str!($file)
        ))
    };
}

/// What `enter` gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entered {
    /// A permit, leased under the ticket's id.
    Permit,
    /// `max_queue` already wait.
    Full,
    /// At the back of the queue: `position` is 1 for the next to be served, `seq` the arrival;
    /// `served_now` when a permit is already free for it.
    Queued {
        position: usize,
        seq: u64,
        served_now: bool,
    },
}

/// What `take` gave: tickets granted a permit, and tickets no longer queued.
#[derive(Debug, Default)]
pub struct Taken {
    pub granted: Vec<String>,
    pub gone: Vec<String>,
}

pub struct PoolRedis {
    connection: ConnectionManager,
    /// `chat-proxy:{NAME}:pool:` — the braces keep every key in one cluster slot.
    prefix: String,
    /// `chat-proxy:{NAME}:client:`, where the per-client counts live.
    client_prefix: String,
    /// This process's id among the instances.
    instance: String,
    lease_ms: u64,
    /// Longest a call may take; past it, Redis counts as down.
    call_timeout: Duration,
    /// The pool generation last seen; a different one means Redis lost the pool.
    known: Mutex<String>,
    enter: Script,
    take: Script,
    give_back: Script,
    heartbeat: Script,
    client_admit: Script,
    client_release: Script,
}

/// What the per-client limits over every instance said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientVerdict {
    Admitted,
    /// `per_key_max_concurrent` answers are open.
    Concurrency,
    /// No token in the client's bucket for this long.
    Rate(Duration),
}

impl PoolRedis {
    /// Connects lazily: nothing is sent until the first call.
    pub fn new(
        client: redis::Client,
        name: &str,
        instance: String,
        lease_ms: u64,
        call_timeout: Duration,
    ) -> Result<Self, ClusterError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(call_timeout))
            .set_response_timeout(Some(call_timeout))
            .set_number_of_retries(1)
            .set_max_delay(call_timeout);
        let connection = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self {
            connection,
            prefix: format!("chat-proxy:{{{name}}}:pool:"),
            client_prefix: format!("chat-proxy:{{{name}}}:client:"),
            instance,
            lease_ms,
            call_timeout,
            known: Mutex::new(String::new()),
            enter: pool_script!("lua/enter.lua"),
            take: pool_script!("lua/take.lua"),
            give_back: pool_script!("lua/give_back.lua"),
            heartbeat: pool_script!("lua/heartbeat.lua"),
            client_admit: pool_script!("lua/client_admit.lua"),
            client_release: pool_script!("lua/client_release.lua"),
        })
    }

    /// The channel a freed permit is announced on.
    pub fn wake_channel(&self) -> String {
        format!("{}wake", self.prefix)
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// A permit at once, a place in the queue, or a refusal.
    pub async fn enter(
        &self,
        ticket: &str,
        capacity: usize,
        max_queue: usize,
    ) -> Result<Entered, ClusterError> {
        let mut call = self.invocation(&self.enter);
        call.arg(ticket).arg(capacity).arg(max_queue);
        let (generation, status, seq, served_now): (String, i64, u64, u8) = self.run(&call).await?;
        self.note(generation);
        Ok(match status {
            0 => Entered::Permit,
            -1 => Entered::Full,
            position => Entered::Queued {
                position: usize::try_from(position).unwrap_or(usize::MAX),
                seq,
                served_now: served_now == 1,
            },
        })
    }

    /// Grants what can be granted to `tickets`, this instance's waiters in arrival order.
    pub async fn take(&self, capacity: usize, tickets: &[&str]) -> Result<Taken, ClusterError> {
        let mut call = self.invocation(&self.take);
        call.arg(capacity).arg(tickets);
        let (generation, granted, gone): (String, Vec<String>, Vec<String>) =
            self.run(&call).await?;
        self.note(generation);
        Ok(Taken { granted, gone })
    }

    /// Gives back permits and leaves the queue, for lease ids and tickets alike; true when
    /// this instance's own waiters are first in line for what was freed.
    pub async fn give_back(&self, capacity: usize, ids: &[String]) -> Result<bool, ClusterError> {
        let mut call = self.invocation(&self.give_back);
        call.arg(capacity).arg(ids);
        let mine: u8 = self.run(&call).await?;
        Ok(mine == 1)
    }

    /// Keeps this instance alive and counts `running` as its leases; returns how many of them
    /// Redis had lost (restarted, or they began while it was away).
    pub async fn heartbeat(
        &self,
        capacity: usize,
        running: &[String],
    ) -> Result<u64, ClusterError> {
        let mut call = self.invocation(&self.heartbeat);
        call.arg(capacity).arg(running);
        let (generation, counted): (String, u64) = self.run(&call).await?;
        self.note(generation);
        Ok(counted)
    }

    /// Where a client's counts live.
    pub fn client_base(&self, client: &str) -> String {
        format!("{}{client}", self.client_prefix)
    }

    /// Counts a new answer of the client at `base` under `slot`, or says which limit refuses
    /// it. `rate` is per second and the bucket's size.
    pub async fn client_admit(
        &self,
        base: &str,
        slot: &str,
        max_open: usize,
        rate: Option<(f64, f64)>,
    ) -> Result<ClientVerdict, ClusterError> {
        let (per_second, burst) = rate.unwrap_or((0.0, 0.0));
        let mut call = self.invocation(&self.client_admit);
        call.arg(base)
            .arg(slot)
            .arg(max_open)
            .arg(per_second.to_string())
            .arg(burst.to_string());
        let (verdict, wait_ms): (String, u64) = self.run(&call).await?;
        Ok(match verdict.as_str() {
            "concurrency" => ClientVerdict::Concurrency,
            "rate" => ClientVerdict::Rate(Duration::from_millis(wait_ms)),
            _ => ClientVerdict::Admitted,
        })
    }

    /// Ends open answers: pairs of a client's base and a slot id.
    pub async fn client_release(&self, slots: &[(String, String)]) -> Result<(), ClusterError> {
        let mut call = self.invocation(&self.client_release);
        for (base, slot) in slots {
            call.arg(base).arg(slot);
        }
        let _: i64 = self.run(&call).await?;
        Ok(())
    }

    fn invocation<'a>(&self, script: &'a Script) -> ScriptInvocation<'a> {
        let known = self.known.lock().expect("generation lock").clone();
        let mut call = script.prepare_invoke();
        call.arg(&self.prefix)
            .arg(&self.instance)
            .arg(self.lease_ms)
            .arg(known);
        call
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        call: &ScriptInvocation<'_>,
    ) -> Result<T, ClusterError> {
        let mut connection = self.connection.clone();
        match tokio::time::timeout(self.call_timeout, call.invoke_async(&mut connection)).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(ClusterError::Timeout(self.call_timeout)),
        }
    }

    fn note(&self, generation: String) {
        let mut known = self.known.lock().expect("generation lock");
        if *known != generation {
            if !known.is_empty() {
                tracing::warn!(
                    "the shared permit pool was lost (Redis restarted); running requests are counted again before new ones start"
                );
            }
            *known = generation;
        }
    }
}
