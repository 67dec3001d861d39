//! Several instances on one permit pool in Redis: prints numbers, asserts nothing (results go in
//! BENCHMARKS.md).
//!
//!   scripts/redis-up.sh && cargo bench --bench cluster
//!
//! A mock model in this process notes when each upstream request starts and when its stream
//! ends. In front of it, as their own processes: three release proxies sharing one pool
//! (`[cluster]`, Redis on 127.0.0.1:6379 or `CHAT_PROXY_BENCH_REDIS_URL`), and one proxy with
//! its own local pool, for reference. In one run, rounds interleaved:
//! - throughput: 600 requests, 60 at a time, spread over the three instances (and the same on
//!   the single local one), against the bound of 5 permits / the upstream's latency;
//! - hand-over: with 1 permit, 150 requests queued at once; for each request that waited, the
//!   time from the previous stream's end at the mock to its own start at the mock (p50/p99),
//!   shared against local;
//! - Redis calls per request: the instances' `chat_proxy_cluster_redis_calls_total`, and the
//!   commands Redis itself counted (`INFO stats`), over the requests served.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use futures::StreamExt;
use serde_json::json;

#[path = "support/proxy.rs"]
#[allow(dead_code, reason = "shared with the other benchmarks")]
mod proxy;
mod support;
use proxy::Proxy;
use support::percentile;

const CHUNKS: usize = 20;
const THROUGHPUT_REQUESTS: usize = 600;
const THROUGHPUT_CONCURRENCY: usize = 60;
const HANDOVER_REQUESTS: usize = 150;
const ROUNDS: usize = 2;

fn main() {
    support::run(run());
}

/// When each upstream request started and when its stream ended, at the mock.
#[derive(Default)]
struct Timeline {
    starts: Vec<Instant>,
    ends: Vec<Instant>,
}

#[derive(Clone)]
struct Mock {
    timeline: Arc<Mutex<Timeline>>,
    first_chunk: Duration,
    gap: Duration,
}

/// A streaming `/chat/completions`: `CHUNKS` chunks, then `[DONE]`; the end is noted when the
/// last byte is handed to the connection.
async fn completions(mock: Mock) -> axum::response::Response {
    mock.timeline
        .lock()
        .expect("timeline")
        .starts
        .push(Instant::now());
    let timeline = mock.timeline.clone();
    let chunks = futures::stream::unfold(0usize, move |i| {
        let mock = mock.clone();
        async move {
            if i > CHUNKS {
                return None;
            }
            tokio::time::sleep(if i == 0 { mock.first_chunk } else { mock.gap }).await;
            let data = if i == CHUNKS {
                "data: [DONE]\n\n".to_owned()
            } else {
                format!(
                    "data: {}\n\n",
                    json!({"choices": [{"index": 0, "delta": {"content": format!("w{i} ")}}]})
                )
            };
            Some((Ok::<_, Infallible>(Bytes::from(data)), i + 1))
        }
    });
    let noted = chunks.chain(futures::stream::once(async move {
        timeline.lock().expect("timeline").ends.push(Instant::now());
        Ok(Bytes::new())
    }));
    axum::response::Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(noted))
        .expect("response")
}

async fn start_mock(first_chunk: Duration, gap: Duration) -> (Mock, SocketAddr) {
    let mock = Mock {
        timeline: Arc::default(),
        first_chunk,
        gap,
    };
    let served = mock.clone();
    let app = axum::Router::new().route(
        "/chat/completions",
        axum::routing::post(move || completions(served.clone())),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    #[expect(
        clippy::disallowed_methods,
        reason = "the benchmark's mock, not the product"
    )]
    tokio::spawn(async move { axum::serve(listener, app).await });
    (mock, addr)
}

/// A setup under test: one or more proxies in front of one mock.
struct Setup {
    name: &'static str,
    mock: Mock,
    proxies: Vec<Proxy>,
}

impl Setup {
    async fn start(
        name: &'static str,
        dir: &std::path::Path,
        permits: usize,
        instances: usize,
        cluster: Option<&str>,
        first_chunk: Duration,
        gap: Duration,
    ) -> Self {
        let (mock, addr) = start_mock(first_chunk, gap).await;
        let extra = cluster.map_or_else(String::new, |redis| {
            let pool = uuid::Uuid::new_v4().simple();
            format!("[cluster]\nredis_url = \"{redis}\"\nname = \"bench-{pool}\"\n")
        });
        let proxies = (0..instances)
            .map(|_| Proxy::start_with(dir, &format!("http://{addr}"), permits, &extra))
            .collect();
        Self {
            name,
            mock,
            proxies,
        }
    }

    /// The two setups compared, each warmed: three instances sharing a pool through `redis`,
    /// and one instance with its own pool.
    async fn pair(
        dir: &std::path::Path,
        redis: &str,
        permits: usize,
        first_chunk: Duration,
        gap: Duration,
    ) -> [Self; 2] {
        let shared = Self::start(
            "3 instances, shared pool",
            dir,
            permits,
            3,
            Some(redis),
            first_chunk,
            gap,
        )
        .await;
        let local = Self::start(
            "1 instance, local pool",
            dir,
            permits,
            1,
            None,
            first_chunk,
            gap,
        )
        .await;
        // Warm the connections.
        for setup in [&shared, &local] {
            drive(&setup.urls(), 20, 10).await;
        }
        [shared, local]
    }

    fn urls(&self) -> Vec<String> {
        self.proxies
            .iter()
            .map(|p| format!("http://{}/answer", p.addr))
            .collect()
    }

    fn reset(&self) {
        *self.mock.timeline.lock().expect("timeline") = Timeline::default();
    }

    async fn redis_calls(&self) -> f64 {
        let mut calls = 0.0;
        for proxy in &self.proxies {
            let text = reqwest::get(format!("http://{}/metrics", proxy.addr))
                .await
                .expect("metrics")
                .text()
                .await
                .expect("text");
            calls += text
                .lines()
                .find_map(|l| l.strip_prefix("chat_proxy_cluster_redis_calls_total "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0);
        }
        calls
    }
}

/// Sends `count` requests, `concurrency` at a time, over `urls` in turn; returns the seconds
/// it took. Every request must complete.
async fn drive(urls: &[String], count: usize, concurrency: usize) -> f64 {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let outcomes: Vec<bool> = futures::stream::iter(0..count)
        .map(|i| {
            let client = client.clone();
            let url = urls[i % urls.len()].clone();
            async move {
                let Ok(response) = client
                    .post(url)
                    .json(&json!({"user_input": format!("q{i}"), "stream": false}))
                    .send()
                    .await
                else {
                    return false;
                };
                response.status().is_success()
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let failed = outcomes.iter().filter(|ok| !**ok).count();
    assert_eq!(failed, 0, "{failed} requests failed");
    started.elapsed().as_secs_f64()
}

/// The upstream's own latency: the median start-to-end at the mock.
fn upstream_latency(timeline: &Timeline) -> f64 {
    // Streams end in about the order they start (same length); pair them by rank.
    let mut starts = timeline.starts.clone();
    let mut ends = timeline.ends.clone();
    starts.sort();
    ends.sort();
    let mut spans: Vec<f64> = starts
        .iter()
        .zip(&ends)
        .map(|(s, e)| e.duration_since(*s).as_secs_f64())
        .collect();
    percentile(&mut spans, 50.0)
}

/// With one permit: each start's distance from the end before it, in ms.
fn handovers(timeline: &Timeline) -> Vec<f64> {
    let mut ends = timeline.ends.clone();
    ends.sort();
    let mut starts = timeline.starts.clone();
    starts.sort();
    starts
        .iter()
        .filter_map(|start| {
            let previous = ends.iter().rev().find(|end| *end <= start)?;
            Some(start.duration_since(*previous).as_secs_f64() * 1000.0)
        })
        .collect()
}

/// Commands Redis has processed so far.
fn redis_commands(url: &str) -> f64 {
    let output = std::process::Command::new("redis-cli")
        .args(["-u", url, "INFO", "stats"])
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("total_commands_processed")
}

async fn run() {
    let redis = std::env::var("CHAT_PROXY_BENCH_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned());
    let dir = tempfile::tempdir().expect("temp dir");
    let first_chunk = Duration::from_millis(100);
    let gap = Duration::from_millis(10);

    println!(
        "throughput: {THROUGHPUT_REQUESTS} requests, {THROUGHPUT_CONCURRENCY} at a time, 5 permits"
    );
    println!(
        "  upstream: first chunk after {} ms, then {CHUNKS} chunks {} ms apart",
        first_chunk.as_millis(),
        gap.as_millis()
    );
    let [shared, local] = Setup::pair(dir.path(), &redis, 5, first_chunk, gap).await;
    let mut best = [0.0f64; 2];
    let mut calls_per_request = 0.0;
    let mut commands_per_request = 0.0;
    for _ in 0..ROUNDS {
        for (i, setup) in [&shared, &local].into_iter().enumerate() {
            setup.reset();
            let calls_before = setup.redis_calls().await;
            let commands_before = redis_commands(&redis);
            let seconds = drive(&setup.urls(), THROUGHPUT_REQUESTS, THROUGHPUT_CONCURRENCY).await;
            let latency = upstream_latency(&setup.mock.timeline.lock().expect("timeline"));
            let bound = 5.0 / latency;
            let throughput = THROUGHPUT_REQUESTS as f64 / seconds;
            let share = throughput / bound;
            println!(
                "  {:<28} {throughput:7.2} answers/s; bound 5 / {:.1} ms = {bound:.2}/s; {:.1}% of the bound",
                setup.name,
                latency * 1000.0,
                share * 100.0
            );
            best[i] = best[i].max(share);
            if i == 0 {
                let calls = setup.redis_calls().await - calls_before;
                let commands = redis_commands(&redis) - commands_before;
                calls_per_request = calls / THROUGHPUT_REQUESTS as f64;
                commands_per_request = commands / THROUGHPUT_REQUESTS as f64;
            }
        }
    }
    println!(
        "  best of {ROUNDS}: shared {:.1}% of the bound, local {:.1}%",
        best[0] * 100.0,
        best[1] * 100.0
    );
    println!(
        "  Redis: {calls_per_request:.2} script calls per request (the instances' count), {commands_per_request:.2} commands per request (Redis's count, heartbeats and pub/sub included)"
    );
    drop((shared, local));

    println!("hand-over with 1 permit: {HANDOVER_REQUESTS} requests queued at once");
    let short = Duration::from_millis(2);
    let [shared, local] = Setup::pair(dir.path(), &redis, 1, short, short).await;
    let mut gaps: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..ROUNDS {
        for (i, setup) in [&shared, &local].into_iter().enumerate() {
            setup.reset();
            drive(&setup.urls(), HANDOVER_REQUESTS, HANDOVER_REQUESTS).await;
            gaps[i].extend(handovers(&setup.mock.timeline.lock().expect("timeline")));
        }
    }
    let [mut shared_gaps, mut local_gaps] = gaps;
    let (s50, s99) = (
        percentile(&mut shared_gaps, 50.0),
        percentile(&mut shared_gaps, 99.0),
    );
    let (l50, l99) = (
        percentile(&mut local_gaps, 50.0),
        percentile(&mut local_gaps, 99.0),
    );
    println!(
        "  {:<28} p50 {s50:.2} ms, p99 {s99:.2} ms ({} hand-overs)",
        shared.name,
        shared_gaps.len()
    );
    println!(
        "  {:<28} p50 {l50:.2} ms, p99 {l99:.2} ms ({} hand-overs)",
        local.name,
        local_gaps.len()
    );
    println!(
        "  shared adds {:+.2} ms at p50, {:+.2} ms at p99",
        s50 - l50,
        s99 - l99
    );
}
