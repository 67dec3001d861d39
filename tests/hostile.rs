//! The `chat-proxy` binary under what a hostile client or a crash does to it, measured on the
//! real process: its memory under images that decode huge, and its log rows through `kill -9`.

use std::net::SocketAddr;
use std::time::Duration;

#[path = "support/binary.rs"]
mod binary;
#[path = "support/process.rs"]
#[allow(dead_code, reason = "used through `binary`, in part")]
mod process;
use binary::{Running, chat_proxy, private_override, serve_peer, shipped_config, start_listening};

/// The server's peak resident memory, from `/proc`.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// A 6000x6000 gray PNG: 36 M pixels in a few tens of kilobytes.
fn gray_bomb() -> Vec<u8> {
    use image::ImageEncoder as _;
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    let pixels = vec![200u8; 6000 * 6000];
    let mut png = Vec::new();
    PngEncoder::new_with_quality(&mut png, CompressionType::Best, FilterType::NoFilter)
        .write_image(&pixels, 6000, 6000, image::ExtendedColorType::L8)
        .expect("encode");
    png
}

/// Serves `png` at `/bomb.png` on loopback until the runtime ends.
async fn serve_image(png: Vec<u8>) -> SocketAddr {
    let app = axum::Router::new().route(
        "/bomb.png",
        axum::routing::get(move || {
            let png = png.clone();
            async move { ([("content-type", "image/png")], png) }
        }),
    );
    serve_peer(app).await
}

/// The bound this test holds the server to while 16 huge images arrive at once.
const PEAK_RSS_BOUND_MIB: u64 = 300;

#[test]
fn sixteen_huge_images_at_once_stay_within_a_fixed_memory_bound() {
    let dir = tempfile::tempdir().expect("temp dir");
    let local = private_override(
        dir.path(),
        "[ocr]\npreload = true\npool_size = 2\nmax_pixels = 40000000\ntimeout_ms = 120000\nallow_private_networks = true\noss_hosts = [\"127.0.0.1\"]\n",
    );
    let (running, addr, _) = start_listening(chat_proxy(&[&shipped_config(), &local]));
    let server = running.0.id();
    let png = gray_bomb();
    assert!(png.len() < 200_000, "a small file: {} bytes", png.len());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let statuses = runtime.block_on(async {
        let images = serve_image(png.clone()).await;
        let client = reqwest::Client::new();
        let requests = (0..16).map(|i| {
            let client = client.clone();
            let png = png.clone();
            let url = format!("http://{addr}/ocr");
            async move {
                let request = if i % 2 == 0 {
                    let part = reqwest::multipart::Part::bytes(png).file_name("bomb.png");
                    client
                        .post(url)
                        .multipart(reqwest::multipart::Form::new().part("image", part))
                } else {
                    client.post(url).json(&serde_json::json!({
                        "image_url": format!("http://{images}/bomb.png"), "url_type": "oss",
                    }))
                };
                let response = request
                    .timeout(Duration::from_secs(180))
                    .send()
                    .await
                    .expect("an answer");
                response.status().as_u16()
            }
        });
        futures::future::join_all(requests).await
    });
    // Each is read (a blank page: no funds), or refused in clear words; none is dropped.
    for status in &statuses {
        assert!([200, 413, 422, 503, 504].contains(status), "{statuses:?}");
    }
    assert!(statuses.contains(&200), "{statuses:?}");
    let peak_mib = peak_rss_kib(server) / 1024;
    println!("server peak RSS with 16 huge images at once: {peak_mib} MiB; statuses {statuses:?}");
    assert!(
        peak_mib < PEAK_RSS_BOUND_MIB,
        "peak RSS {peak_mib} MiB, bound {PEAK_RSS_BOUND_MIB} MiB"
    );
}

/// What one client request saw before the server was killed.
#[derive(Debug, Default)]
struct Seen {
    /// The request id of the response, once its head arrived.
    request_id: Option<String>,
    done: bool,
}

/// Clients sending streamed `/answer` requests one after another until the server goes away.
async fn load_until_killed(addr: &str, clients: usize) -> Vec<Seen> {
    let client = reqwest::Client::new();
    let loops = (0..clients).map(|c| {
        let client = client.clone();
        let url = format!("http://{addr}/answer");
        async move {
            let mut seen = Vec::new();
            for i in 0.. {
                let sent = client
                    .post(&url)
                    .json(&serde_json::json!({"user_input": format!("client {c} question {i}")}))
                    .send()
                    .await;
                let mut this = Seen::default();
                let Ok(mut response) = sent else {
                    seen.push(this);
                    break;
                };
                this.request_id = response.headers()["x-request-id"]
                    .to_str()
                    .ok()
                    .map(str::to_owned);
                let mut body = Vec::new();
                while let Ok(Some(chunk)) = response.chunk().await {
                    body.extend_from_slice(&chunk);
                }
                this.done = String::from_utf8_lossy(&body).contains("event: done");
                let cut = !this.done;
                seen.push(this);
                if cut {
                    break;
                }
            }
            seen
        }
    });
    futures::future::join_all(loops)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// A pseudo-random moment between 300 and 1,500 ms: the kill lands anywhere in an answer.
fn random_delay() -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos();
    Duration::from_millis(300 + u64::from(nanos % 1200))
}

#[test]
fn every_started_exchange_keeps_its_row_through_kill_9() {
    let dir = tempfile::tempdir().expect("temp dir");
    let local = private_override(
        dir.path(),
        "[demo]\nfirst_chunk_delay_ms = 0\ntoken_delay_ms = 10\n[ocr]\npreload = false\n",
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (mut running, addr, _) = start_listening(chat_proxy(&[&shipped_config(), &local]));
        let load = runtime.spawn({
            let addr = addr.clone();
            async move { load_until_killed(&addr, 12).await }
        });
        std::thread::sleep(random_delay());
        running.0.kill().expect("kill -9");
        running.0.wait().expect("reaped");
        seen.extend(runtime.block_on(load).expect("the clients end"));
    }
    // A last start stores what the journal holds; a SIGTERM then drains the writer.
    let (running, _, _) = start_listening(chat_proxy(&[&shipped_config(), &local]));
    stop_gracefully(running);

    let _entered = runtime.enter();
    let database = chat_proxy::store::Database::connect_lazy(&chat_proxy::config::DatabaseConfig {
        url: format!("sqlite://{}/chat.db", dir.path().display()),
        ..chat_proxy::config::DatabaseConfig::default()
    })
    .expect("database URL");
    let rows = runtime.block_on(database.chat_logs()).expect("rows");
    let started: Vec<&Seen> = seen.iter().filter(|s| s.request_id.is_some()).collect();
    let done = started.iter().filter(|s| s.done).count();
    let mut interrupted_after_done = 0;
    for request in &started {
        let id = request.request_id.as_deref().expect("started");
        let mine: Vec<_> = rows.iter().filter(|row| row.request_id == id).collect();
        assert_eq!(mine.len(), 1, "exactly one row for {id}: {mine:?}");
        if request.done && mine[0].status != "ok" {
            interrupted_after_done += 1;
        }
    }
    assert!(
        rows.len() <= seen.len(),
        "{} rows for {} requests",
        rows.len(),
        seen.len()
    );
    let interrupted = rows
        .iter()
        .filter(|row| row.status == "interrupted")
        .count();
    println!(
        "3 kills: {} requests sent, {} started, {done} got done; {} rows ({interrupted} interrupted); \
         done but not journaled as finished: {interrupted_after_done}",
        seen.len(),
        started.len(),
        rows.len()
    );
    assert!(
        interrupted > 0,
        "a kill mid-load leaves exchanges interrupted"
    );
}

/// SIGTERM, then wait for the exit.
fn stop_gracefully(mut running: Running) {
    let pid = running.0.id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let exited = running.0.wait().expect("exit status");
    assert!(exited.success(), "{exited}");
}
