//! Cost as work grows: the proxy's memory and CPU per request with 1,000, 5,000 and 10,000
//! streams open (the permit limit lifted), and with 1,000 and 10,000 requests queued behind 5
//! permits. Prints numbers, asserts nothing (results go in BENCHMARKS.md).
//!
//!   cargo bench --bench scale
//!
//! The mock model is in this process and speaks HTTP/2 without TLS (h2c) with no limit on
//! streams, and the proxy calls it with `upstream.http2_prior_knowledge`: so 10,000 upstream
//! streams share one connection, and 10,000 open streams cost the proxy 10,000 sockets (to the
//! clients), not 20,000, which fits under this machine's hard limit on open files. A held stream
//! gets one chunk and then silence, so it stays open; the proxy's chunk-gap and total timeouts
//! are raised so that nothing ends it. At each level, 500 short answers (20 chunks 1 ms apart)
//! go through beside the held ones, 50 at a time, for the CPU each costs the proxy then.
//! Memory is the proxy's RSS from /proc; the slope is per stream (or queued request) between
//! levels.

use std::time::{Duration, Instant};

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::body::{Body, Bytes};
use futures::StreamExt;
use serde_json::{Value, json};

#[path = "support/proxy.rs"]
#[allow(dead_code, reason = "shared with the other benchmarks")]
mod proxy;
mod support;
use proxy::Proxy;

const LEVELS: [usize; 3] = [1_000, 5_000, 10_000];
const QUEUED: [usize; 2] = [1_000, 10_000];
const PROBE: usize = 500;
const PROBE_CONCURRENCY: usize = 50;
/// Streams opened at once while a level fills.
const OPENING: usize = 500;

fn main() {
    raise_open_files();
    support::run(run());
}

/// The soft open-files limit raised to the hard one, here and (inherited) in the proxy.
fn raise_open_files() {
    let (_, hard) = rlimit::Resource::NOFILE.get().expect("read the limit");
    rlimit::Resource::NOFILE
        .set(hard, hard)
        .expect("raise the soft limit");
    println!("open files limit: {hard}");
}

/// A streaming `/v1/chat/completions`: for a question holding `hold`, one chunk and then
/// silence; else 20 chunks 1 ms apart and `[DONE]`.
async fn completions(body: Bytes) -> axum::response::Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
    let hold = request["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .is_some_and(|q| q.contains("hold"));
    let chunk = |i: usize| {
        let data = json!({"choices": [{"index": 0, "delta": {"content": format!("w{i} ")}}]});
        Ok::<_, Infallible>(Bytes::from(format!("data: {data}\n\n")))
    };
    let stream = if hold {
        futures::stream::once(async move { chunk(0) })
            .chain(futures::stream::pending())
            .boxed()
    } else {
        futures::stream::unfold(0usize, move |i| async move {
            match i {
                20 => Some((Ok(Bytes::from_static(b"data: [DONE]\n\n")), i + 1)),
                21.. => None,
                _ => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    Some((chunk(i), i + 1))
                }
            }
        })
        .boxed()
    };
    axum::response::Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .expect("response")
}

/// Serves the mock over h2c, with no limit on concurrent streams.
async fn start_mock() -> SocketAddr {
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(completions));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    #[expect(
        clippy::disallowed_methods,
        reason = "the benchmark's mock, not the product"
    )]
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let service = hyper_util::service::TowerToHyperService::new(app.clone());
            #[expect(
                clippy::disallowed_methods,
                reason = "the benchmark's mock, not the product"
            )]
            tokio::spawn(async move {
                let mut builder =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
                builder.max_concurrent_streams(1_000_000);
                let _ = builder
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

/// Opens a stream the mock never finishes; returns once its first answer text (or, behind the
/// permits, its `queued` event) has arrived, with the response still open.
async fn hold(client: &reqwest::Client, url: &str, until: &str) -> reqwest::Response {
    let mut response = client
        .post(url)
        .json(&json!({"user_input": "hold"}))
        .send()
        .await
        .expect("request sent");
    assert!(response.status().is_success(), "{}", response.status());
    let mut seen = String::new();
    while !seen.contains(until) {
        let chunk = response
            .chunk()
            .await
            .expect("the stream reads")
            .expect("the stream stays open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    response
}

async fn fill(
    client: &reqwest::Client,
    url: &str,
    held: &mut Vec<reqwest::Response>,
    goal: usize,
    until: &str,
) {
    while held.len() < goal {
        let batch = OPENING.min(goal - held.len());
        let opening = (0..batch).map(|_| hold(client, url, until));
        held.extend(futures::future::join_all(opening).await);
    }
}

/// CPU milliseconds the proxy spends per short answer while the held streams stay open.
async fn cpu_per_answer(client: &reqwest::Client, url: &str, proxy: &Proxy) -> f64 {
    let (user, system) = proxy.cpu_seconds();
    let failed: usize = futures::stream::iter(0..PROBE)
        .map(|i| {
            let client = client.clone();
            let url = url.to_owned();
            async move {
                let response = client
                    .post(url)
                    .json(&json!({"user_input": format!("probe {i}"), "stream": false}))
                    .send()
                    .await;
                usize::from(!response.is_ok_and(|r| r.status().is_success()))
            }
        })
        .buffer_unordered(PROBE_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .sum();
    assert_eq!(failed, 0, "short answers failed");
    let (user_after, system_after) = proxy.cpu_seconds();
    (user_after - user + system_after - system) * 1000.0 / PROBE as f64
}

async fn settle(proxy: &Proxy) -> u64 {
    tokio::time::sleep(Duration::from_millis(1000)).await;
    proxy.rss_kib()
}

async fn run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = format!("http://{}/v1", start_mock().await);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .expect("client");
    let patient = "http2_prior_knowledge = true\nchunk_gap_timeout_ms = 3600000\ntotal_timeout_ms = 3600000\n";

    println!("## Open streams, the permit limit lifted");
    let proxy = Proxy::start_full(dir.path(), &mock, 100_000, patient, "");
    let url = format!("http://{}/answer", proxy.addr);
    cpu_per_answer(&client, &url, &proxy).await;
    let idle_cpu = cpu_per_answer(&client, &url, &proxy).await;
    let idle_rss = settle(&proxy).await;
    println!("| open streams | proxy RSS | CPU per short answer beside them |");
    println!("|---:|---:|---:|");
    println!(
        "| 0 | {:.1} MB | {idle_cpu:.3} ms |",
        idle_rss as f64 / 1024.0
    );
    let mut held = Vec::new();
    let mut points = Vec::new();
    for level in LEVELS {
        let started = Instant::now();
        fill(&client, &url, &mut held, level, "event: delta").await;
        let opened_in = started.elapsed();
        let rss = settle(&proxy).await;
        let cpu = cpu_per_answer(&client, &url, &proxy).await;
        println!(
            "| {level} | {:.1} MB | {cpu:.3} ms | (opened in {:.1} s)",
            rss as f64 / 1024.0,
            opened_in.as_secs_f64()
        );
        points.push((level, rss));
    }
    let slope =
        |a: (usize, u64), b: (usize, u64)| (b.1 as f64 - a.1 as f64) / (b.0 as f64 - a.0 as f64);
    println!(
        "per open stream: {:.1} KiB (1,000 -> 5,000), {:.1} KiB (5,000 -> 10,000), {:.1} KiB (0 -> 10,000)",
        slope(points[0], points[1]),
        slope(points[1], points[2]),
        slope((0, idle_rss), points[2])
    );
    drop(held);
    drop(proxy);

    println!("## Queued behind 5 permits");
    let proxy = Proxy::start_full(
        dir.path(),
        &mock,
        5,
        patient,
        "queue_timeout_ms = 3600000\n",
    );
    let url = format!("http://{}/answer", proxy.addr);
    let mut held = Vec::new();
    fill(&client, &url, &mut held, 5, "event: delta").await;
    let base_rss = settle(&proxy).await;
    println!("| queued | proxy RSS |");
    println!("|---:|---:|");
    println!("| 0 (5 running) | {:.1} MB |", base_rss as f64 / 1024.0);
    let mut queued = Vec::new();
    let mut points = vec![(0, base_rss)];
    for level in QUEUED {
        fill(&client, &url, &mut queued, level, "event: queued").await;
        let rss = settle(&proxy).await;
        println!("| {level} | {:.1} MB |", rss as f64 / 1024.0);
        points.push((level, rss));
    }
    println!(
        "per queued request: {:.1} KiB (1,000 -> 10,000), {:.1} KiB (0 -> 10,000)",
        slope(points[1], points[2]),
        slope(points[0], points[2])
    );
    drop(queued);
    drop(held);
}
