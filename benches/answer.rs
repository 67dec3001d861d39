//! `/answer` benchmark: prints numbers, asserts nothing (results go in BENCHMARKS.md).
//!
//! The proxy runs as its own process (the release binary), so its CPU time and peak RSS are read
//! from /proc without the client's and the mock's. The mock model runs in this process.
//!
//!   cargo bench --bench answer                 # every phase
//!   cargo bench --bench answer -- rss cpu      # only the named phases (ttft, steady, cpu, rss,
//!                                              # throughput, openai)

use std::path::Path;
use std::time::{Duration, Instant};

use chat_proxy::demo::{MockKnobs, MockUpstream};
use chat_proxy::lifecycle::Lifecycle;

#[path = "support/proxy.rs"]
mod proxy;
mod support;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use proxy::Proxy;
use serde_json::json;
use support::{percentile, rank};

const CHUNKS: usize = 20;
/// The CPU phase: warm-up requests, rounds, requests per round (the median round is reported)
/// and the mock's milliseconds between chunks. `CHAT_PROXY_BENCH_CPU="WARMUP ROUNDS REQUESTS"`
/// sets other counts, e.g. small ones for a run under `valgrind --tool=callgrind`; a fourth
/// number paces the chunks as a real model does, and a fifth sets how many requests run at a
/// time (50). Paced chunks under callgrind need few at a time (5): the slowed proxy must keep
/// up with the pace, or the chunks pile up and it sees bursts instead.
const CPU_COUNTS: [usize; 5] = [1_000, 5, 10_000, 0, 50];

fn main() {
    support::run(run());
}

fn wanted(phase: &str) -> bool {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    args.is_empty() || args.iter().any(|a| a == phase)
}

async fn run() {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(2_000)
        .build()
        .expect("client");
    let dir = tempfile::tempdir().expect("temp dir");
    if wanted("ttft") {
        ttft_phase(&client, dir.path()).await;
    }
    if wanted("steady") {
        steady_phase(&client, dir.path()).await;
    }
    if wanted("cpu") {
        cpu_phase(&client, dir.path()).await;
    }
    if wanted("rss") {
        rss_phase(&client, dir.path()).await;
    }
    if wanted("throughput") {
        throughput_phase(&client, dir.path()).await;
    }
    if wanted("openai") {
        openai_phase(&client, dir.path()).await;
    }
}

async fn mock(token_delay_ms: u64, tokens: usize) -> MockUpstream {
    MockUpstream::start(
        MockKnobs {
            tokens: Some(tokens),
            token_delay: Duration::from_millis(token_delay_ms),
            ..MockKnobs::default()
        },
        &Lifecycle::new(),
    )
    .await
    .expect("mock")
}

async fn ttft_phase(client: &reqwest::Client, dir: &Path) {
    ttft_table(
        client,
        dir,
        &format!(
            "## Added time to first token (permit limit lifted, {CHUNKS}-chunk answers, 5 ms apart)"
        ),
        "streams",
        Starts::Together,
        &[(1, 300), (100, 20), (1_000, 3)],
    )
    .await;
}

/// TTFT with a steady number of streams open, rather than all starting in the same instant:
/// each of `streams` clients sends its requests one after another, and the clients begin spread
/// over one answer's length, so new requests arrive at an even rate.
async fn steady_phase(client: &reqwest::Client, dir: &Path) {
    ttft_table(
        client,
        dir,
        &format!(
            "## Added time to first token, streams open steadily (permit limit lifted, \
             {CHUNKS}-chunk answers, 5 ms apart)"
        ),
        "open streams",
        Starts::Spread(Duration::from_millis(5 * CHUNKS as u64)),
        &[(100, 20), (1_000, 3)],
    )
    .await;
}

/// Requests per client in one block of a steady row: the direct and proxied paths alternate
/// in blocks this long.
const STEADY_BLOCK: usize = 5;

/// How the streams of a TTFT row start.
#[derive(Clone, Copy)]
enum Starts {
    /// All in the same instant, round after round (`ttft_samples`).
    Together,
    /// Spread evenly over this time, each client then sending its requests in turn
    /// (`steady_samples`).
    Spread(Duration),
}

/// One TTFT table: for each `(streams, count)` row, the direct and proxied percentiles and the
/// difference. `count` is rounds for `Starts::Together`, requests per client for `Spread`.
async fn ttft_table(
    client: &reqwest::Client,
    dir: &Path,
    title: &str,
    label: &str,
    starts: Starts,
    rows: &[(usize, usize)],
) {
    println!("{title}");
    let mock = mock(5, CHUNKS).await;
    let proxy = Proxy::start(dir, &mock.base_url(), 100_000);
    let direct = Target::Direct(mock.base_url());
    let via = Target::Proxy(proxy.addr.clone());
    println!(
        "| {label} | direct p50 | direct p99 | proxy p50 | proxy p99 | added p50 | added p99 |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let samples = |target, streams, count| async move {
        match starts {
            Starts::Together => ttft_samples(client, target, streams, count).await,
            Starts::Spread(spread) => steady_samples(client, target, streams, count, spread).await,
        }
    };
    for &(streams, count) in rows {
        // One unmeasured round at the same concurrency first, so that both paths have their
        // connections open (client to proxy, proxy to mock) and the rows compare steady states.
        samples(&direct, streams, 1).await;
        samples(&via, streams, 1).await;
        // The two paths take turns, a block at a time, so that a slow spell of this shared
        // machine falls on both instead of on the one measured at that moment.
        let block = match starts {
            Starts::Together => 1,
            Starts::Spread(_) => STEADY_BLOCK,
        };
        let (mut d, mut p) = (Vec::new(), Vec::new());
        let mut left = count;
        while left > 0 {
            let n = left.min(block);
            d.extend(samples(&direct, streams, n).await);
            p.extend(samples(&via, streams, n).await);
            left -= n;
        }
        let (d50, d99) = (percentile(&mut d, 50.0), percentile(&mut d, 99.0));
        let (p50, p99) = (percentile(&mut p, 50.0), percentile(&mut p, 99.0));
        println!(
            "| {streams} | {d50:.3} ms | {d99:.3} ms | {p50:.3} ms | {p99:.3} ms | {:.3} ms | {:.3} ms |",
            p50 - d50,
            p99 - d99
        );
    }
    println!();
}

async fn cpu_phase(client: &reqwest::Client, dir: &Path) {
    let [warmup, rounds, requests, token_delay_ms, at_once] = cpu_counts();
    println!(
        "## CPU time per streamed request ({CHUNKS} chunks, {token_delay_ms} ms apart, {at_once} \
         at a time; {warmup} to warm up, {rounds} rounds of {requests}, median)"
    );
    for (extra, label) in [
        ("", "HTTP/1.1"),
        ("http2_prior_knowledge = true", "HTTP/2 (h2c)"),
    ] {
        let mock = mock(token_delay_ms as u64, CHUNKS).await;
        let proxy = Proxy::start_with(dir, &mock.base_url(), 100_000, extra);
        // `CHAT_PROXY_BENCH_PATH=openai`: the same requests through `/v1/chat/completions`.
        let target = match std::env::var("CHAT_PROXY_BENCH_PATH").as_deref() {
            Ok("openai") => Target::OpenAi(proxy.addr.clone()),
            _ => Target::Proxy(proxy.addr.clone()),
        };
        run_many(client, &target, warmup, at_once).await;
        // Each round's (total, user, system) µs per request.
        let mut per_request = Vec::new();
        for _ in 0..rounds {
            let (user_before, system_before) = proxy.cpu_seconds();
            run_many(client, &target, requests, at_once).await;
            let (user_after, system_after) = proxy.cpu_seconds();
            let us = |seconds: f64| seconds / requests as f64 * 1e6;
            let (user, system) = (
                us(user_after - user_before),
                us(system_after - system_before),
            );
            per_request.push((user + system, user, system));
        }
        let shown: Vec<String> = per_request
            .iter()
            .map(|(total, _, _)| format!("{total:.1}"))
            .collect();
        per_request.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (total, user, system) = per_request[rank(50.0, per_request.len())];
        println!(
            "upstream {label}: {total:.1} µs per request, {user:.1} user + {system:.1} system \
             (median round; rounds: {} µs); RSS after {:.1} MB",
            shown.join(", "),
            proxy.rss_kib() as f64 / 1024.0
        );
    }
    println!();
}

/// The CPU phase's counts: `CHAT_PROXY_BENCH_CPU` if set, else `CPU_COUNTS`.
fn cpu_counts() -> [usize; 5] {
    let Ok(text) = std::env::var("CHAT_PROXY_BENCH_CPU") else {
        return CPU_COUNTS;
    };
    let mut counts: Vec<usize> = text
        .split_whitespace()
        .map(|n| n.parse().expect("CHAT_PROXY_BENCH_CPU: whole numbers"))
        .collect();
    // No fourth number: unpaced chunks; no fifth: 50 at a time.
    if counts.len() == 3 {
        counts.push(0);
    }
    if counts.len() == 4 {
        counts.push(50);
    }
    match counts[..] {
        [warmup, rounds, requests, delay, at_once] if rounds > 0 && requests > 0 && at_once > 0 => {
            [warmup, rounds, requests, delay, at_once]
        }
        _ => panic!(
            "CHAT_PROXY_BENCH_CPU: WARMUP ROUNDS REQUESTS [TOKEN_DELAY_MS [AT_ONCE]], rounds, \
             requests and at-once above 0"
        ),
    }
}

async fn rss_phase(client: &reqwest::Client, dir: &Path) {
    println!("## Peak RSS with 1,000 open streams (a fresh proxy process each)");
    println!(
        "| permits | upstream protocol | RSS at start | peak RSS (VmHWM) | most open at once |"
    );
    println!("|---|---|---:|---:|---:|");
    for (permits, extra, label) in [
        (5, "", "HTTP/1.1"),
        (100_000, "", "HTTP/1.1"),
        (100_000, "http2_prior_knowledge = true", "HTTP/2 (h2c)"),
    ] {
        let mock = mock(200, 30).await;
        let proxy = Proxy::start_with(dir, &mock.base_url(), permits, extra);
        let rss_before = proxy.rss_kib();
        let target = Target::Proxy(proxy.addr.clone());
        let stop = std::sync::atomic::AtomicBool::new(false);
        let open = async {
            // 1,000 clients read their streams for 5 s, then leave.
            let reading =
                futures::future::join_all((0..1_000).map(|_| hold_stream(client, &target)));
            let _ = tokio::time::timeout(Duration::from_secs(5), reading).await;
            stop.store(true, std::sync::atomic::Ordering::Release);
        };
        let watch = async {
            let mut peak_open = 0;
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let health: serde_json::Value = client
                    .get(format!("http://{}/health", proxy.addr))
                    .send()
                    .await
                    .expect("health")
                    .json()
                    .await
                    .expect("json");
                peak_open = peak_open.max(health["exchanges_open"].as_u64().unwrap_or(0));
            }
            peak_open
        };
        let ((), peak_open) = tokio::join!(open, watch);
        println!(
            "| {} | {label} | {:.1} MB | {:.1} MB | {peak_open} |",
            if permits == 5 {
                "5 (995 queued)".to_owned()
            } else {
                "lifted".to_owned()
            },
            rss_before as f64 / 1024.0,
            proxy.peak_rss_kib() as f64 / 1024.0
        );
    }
    println!();
}

/// Opens a stream through the proxy and reads it to its end.
async fn hold_stream(client: &reqwest::Client, target: &Target) {
    let Target::Proxy(addr) = target else {
        unreachable!("streams are opened through the proxy")
    };
    let response = client
        .post(format!("http://{addr}/answer"))
        .json(&json!({"user_input": "bench"}))
        .send()
        .await
        .expect("request sent");
    let mut body = response.bytes_stream();
    while let Some(Ok(_)) = body.next().await {}
}

async fn throughput_phase(client: &reqwest::Client, dir: &Path) {
    println!("## Throughput with 5 permits");
    let mock = mock(5, CHUNKS).await;
    let proxy = Proxy::start(dir, &mock.base_url(), 5);
    let mut latencies = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        run_one(client, &Target::Direct(mock.base_url())).await;
        latencies.push(started.elapsed().as_secs_f64());
    }
    let upstream_latency = latencies.iter().sum::<f64>() / latencies.len() as f64;
    let bound = 5.0 / upstream_latency;
    let requests = 1_000;
    let started = Instant::now();
    run_many(client, &Target::Direct(mock.base_url()), requests, 5).await;
    let direct_rate = requests as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    run_many(client, &Target::Proxy(proxy.addr.clone()), 200, 5).await;
    let five_rate = 200.0 / started.elapsed().as_secs_f64();
    println!("through the proxy with 5 clients (no queue): {five_rate:.1} req/s");
    let started = Instant::now();
    run_many(client, &Target::Proxy(proxy.addr.clone()), requests, 200).await;
    let rate = requests as f64 / started.elapsed().as_secs_f64();
    println!(
        "upstream latency {:.1} ms alone; bound 5 / latency = {bound:.1} req/s; \
         5 clients straight to the mock: {direct_rate:.1} req/s",
        upstream_latency * 1e3,
    );
    println!(
        "through the proxy (200 clients, 5 permits): {rate:.1} req/s = {:.1}% of 5 / latency, {:.1}% of 5 direct clients",
        rate / bound * 100.0,
        rate / direct_rate * 100.0
    );
}

enum Target {
    Direct(String),
    Proxy(String),
    /// The proxy's `/v1/chat/completions`, streamed.
    OpenAi(String),
}

/// Sends one request and returns the time to its first answer text.
/// `/v1/chat/completions` beside `/answer` on one proxy process, in one run: the time to first
/// token added over the mock at 100 streams at once, and the CPU per request. The three paths
/// (direct, `/answer`, `/v1`) take turns round by round, so a slow spell of the machine falls on
/// all of them.
async fn openai_phase(client: &reqwest::Client, dir: &Path) {
    const STREAMS: usize = 100;
    const TTFT_ROUNDS: usize = 20;
    let [_, cpu_rounds, cpu_requests, _, _] = cpu_counts();
    println!(
        "## /v1/chat/completions beside /answer ({CHUNKS}-chunk answers; TTFT: {STREAMS} streams \
         at once, {TTFT_ROUNDS} rounds, chunks 5 ms apart; CPU: {cpu_rounds} rounds of \
         {cpu_requests}, 50 at a time, unpaced, median)"
    );
    let paced = mock(5, CHUNKS).await;
    let proxy = Proxy::start(dir, &paced.base_url(), 100_000);
    let paths = [
        ("direct to the mock", Target::Direct(paced.base_url())),
        ("/answer", Target::Proxy(proxy.addr.clone())),
        ("/v1/chat/completions", Target::OpenAi(proxy.addr.clone())),
    ];
    let mut ttft: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    for (_, target) in &paths {
        ttft_samples(client, target, STREAMS, 1).await;
    }
    for _ in 0..TTFT_ROUNDS {
        for (samples, (_, target)) in ttft.iter_mut().zip(&paths) {
            samples.extend(ttft_samples(client, target, STREAMS, 1).await);
        }
    }
    let (d50, d99) = (
        percentile(&mut ttft[0], 50.0),
        percentile(&mut ttft[0], 99.0),
    );
    println!("| path | TTFT p50 | TTFT p99 | added p50 | added p99 |");
    println!("|---|---:|---:|---:|---:|");
    for (samples, (name, _)) in ttft.iter_mut().zip(&paths) {
        let (p50, p99) = (percentile(samples, 50.0), percentile(samples, 99.0));
        println!(
            "| {name} | {p50:.3} ms | {p99:.3} ms | {:.3} ms | {:.3} ms |",
            p50 - d50,
            p99 - d99
        );
    }
    drop(proxy);

    let unpaced = mock(0, CHUNKS).await;
    let proxy = Proxy::start(dir, &unpaced.base_url(), 100_000);
    let proxied = [
        Target::Proxy(proxy.addr.clone()),
        Target::OpenAi(proxy.addr.clone()),
    ];
    for target in &proxied {
        run_many(client, target, cpu_requests / 5, 50).await;
    }
    let mut cpu: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..cpu_rounds {
        for (samples, target) in cpu.iter_mut().zip(&proxied) {
            let (user, system) = proxy.cpu_seconds();
            run_many(client, target, cpu_requests, 50).await;
            let (user_after, system_after) = proxy.cpu_seconds();
            let seconds = user_after - user + system_after - system;
            samples.push(seconds / cpu_requests as f64 * 1e6);
        }
    }
    let answer = percentile(&mut cpu[0], 50.0);
    let openai = percentile(&mut cpu[1], 50.0);
    println!(
        "CPU per request: /answer {answer:.1} µs, /v1/chat/completions {openai:.1} µs, \
         ratio {:.3}",
        openai / answer
    );
    println!();
}

async fn run_one(client: &reqwest::Client, target: &Target) -> Duration {
    let started = Instant::now();
    let response = match target {
        Target::Direct(base) => client
            .post(format!("{base}/chat/completions"))
            // The same body the proxy sends, so both get the same frames.
            .json(&json!({
                "model": "bench", "stream": true, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "bench"}],
            }))
            .send(),
        Target::Proxy(addr) => client
            .post(format!("http://{addr}/answer"))
            .json(&json!({"user_input": "bench"}))
            .send(),
        Target::OpenAi(addr) => client
            .post(format!("http://{addr}/v1/chat/completions"))
            .json(&json!({
                "model": "bench", "stream": true,
                "messages": [{"role": "user", "content": "bench"}],
            }))
            .send(),
    }
    .await
    .expect("request sent");
    assert!(response.status().is_success(), "{}", response.status());
    let mut events = response.bytes_stream().eventsource();
    let mut first = None;
    while let Some(event) = events.next().await {
        let event = event.expect("well-formed SSE");
        let is_text = match target {
            Target::Direct(_) | Target::OpenAi(_) => event.data.contains("\"content\""),
            Target::Proxy(_) => event.event == "delta",
        };
        if is_text && first.is_none() {
            first = Some(started.elapsed());
        }
    }
    first.expect("an answer came")
}

async fn ttft_samples(
    client: &reqwest::Client,
    target: &Target,
    streams: usize,
    rounds: usize,
) -> Vec<f64> {
    let mut samples = Vec::with_capacity(streams * rounds);
    for _ in 0..rounds {
        let batch = futures::future::join_all((0..streams).map(|_| run_one(client, target))).await;
        samples.extend(batch.into_iter().map(|d| d.as_secs_f64() * 1e3));
    }
    samples
}

/// `streams` clients, started evenly over `spread`, each sending `each` requests in turn.
async fn steady_samples(
    client: &reqwest::Client,
    target: &Target,
    streams: usize,
    each: usize,
    spread: Duration,
) -> Vec<f64> {
    let clients = (0..streams).map(|i| async move {
        tokio::time::sleep(spread * i as u32 / streams as u32).await;
        let mut samples = Vec::with_capacity(each);
        for _ in 0..each {
            samples.push(run_one(client, target).await.as_secs_f64() * 1e3);
        }
        samples
    });
    futures::future::join_all(clients)
        .await
        .into_iter()
        .flatten()
        .collect()
}

async fn run_many(client: &reqwest::Client, target: &Target, requests: usize, concurrency: usize) {
    futures::stream::iter(0..requests)
        .for_each_concurrent(concurrency, |_| async {
            run_one(client, target).await;
        })
        .await;
}
