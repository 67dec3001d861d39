//! The chat page in a real browser: Debian's Chromium, driven by playwright-core from npm
//! (`tests/browser/chat_page.mjs`), against the real `chat-proxy` binary in front of the test
//! mock, whose counters the script reads to see upstream requests start and end.
//!
//! Runs when `CHAT_PROXY_TEST_BROWSER` is set (`make test` sets it after `scripts/deps.sh test`
//! installed Chromium and playwright-core); it then fails if either is missing. PNG screenshots
//! of what the page showed are left in `target/browser-screenshots/`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chat_proxy::demo::{MockKnobs, MockUpstream};
use chat_proxy::lifecycle::Lifecycle;

#[path = "support/binary.rs"]
mod binary;
#[path = "api/fixtures/mod.rs"]
#[allow(dead_code, reason = "one card of the catalogue is used")]
mod fixtures;
#[path = "support/process.rs"]
#[allow(dead_code, reason = "used through `binary`, in part")]
mod process;
use binary::{chat_proxy, private_override, serve_peer, shipped_config, start_listening};

const KEY: &str = "browser-test-key-0123456789";
const FUND_CODE: &str = "005827";
/// The fund of the screenshot that shows only its available share (可用份额).
const AVAILABLE_CODE: &str = "000001";
/// The whole browser run; each of its waits is shorter.
const RUN_LIMIT: Duration = Duration::from_secs(240);

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Where `scripts/deps.sh test` installs playwright-core (or `CHAT_PROXY_PLAYWRIGHT`).
fn playwright_dir() -> PathBuf {
    std::env::var_os("CHAT_PROXY_PLAYWRIGHT").map_or_else(
        || manifest_dir().join("target/browser-node/node_modules/playwright-core"),
        PathBuf::from,
    )
}

/// Serves the mock's counters as JSON at `/counters`, for the script.
async fn serve_counters(mock: MockUpstream) -> SocketAddr {
    let app = axum::Router::new().route(
        "/counters",
        axum::routing::get(move || {
            let mock = mock.clone();
            async move {
                let c = mock.counters();
                axum::Json(serde_json::json!({
                    "requests": c.requests.load(Ordering::Acquire),
                    "in_flight": c.in_flight.load(Ordering::Acquire),
                    "max_in_flight": c.max_in_flight.load(Ordering::Acquire),
                    "completed": c.completed.load(Ordering::Acquire),
                    "aborted": c.aborted.load(Ordering::Acquire),
                }))
            }
        }),
    );
    serve_peer(app).await
}

#[test]
fn the_chat_page_works_in_chromium() {
    if std::env::var_os("CHAT_PROXY_TEST_BROWSER").is_none() {
        eprintln!(
            "skipped: set CHAT_PROXY_TEST_BROWSER=1 to run the browser test (make test does)"
        );
        return;
    }
    let chromium = std::env::var("CHAT_PROXY_CHROMIUM").unwrap_or("/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: scripts/deps.sh test installs Debian's chromium"
    );
    let playwright = playwright_dir();
    assert!(
        playwright.join("package.json").exists(),
        "{} is missing: scripts/deps.sh test installs playwright-core",
        playwright.display()
    );

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let lifecycle = Lifecycle::new();
    let knobs = MockKnobs {
        first_chunk_delay: Duration::from_millis(20),
        token_delay: Duration::from_millis(25),
        ..MockKnobs::default()
    };
    let (mock_url, counters) = runtime.block_on(async {
        let mock = MockUpstream::start(knobs, &lifecycle)
            .await
            .expect("mock starts");
        (mock.base_url(), serve_counters(mock).await)
    });

    let dir = tempfile::tempdir().expect("temp dir");
    let fixture = dir.path().join("holding.png");
    std::fs::write(
        &fixture,
        fixtures::holding_card("易方达蓝筹精选混合", FUND_CODE, "12,345.67"),
    )
    .expect("write the screenshot");
    let available = dir.path().join("available.png");
    std::fs::write(
        &available,
        fixtures::detail_card("华夏成长混合", AVAILABLE_CODE, "可用份额", "8,000.00"),
    )
    .expect("write the screenshot");
    let local = private_override(
        dir.path(),
        &format!(
            "[upstream]\nbase_url = \"{mock_url}\"\n[auth]\nkeys = [\"{KEY}\"]\n\
             [limits]\nmax_concurrent_upstream = 5\n[ocr]\npool_size = 2\n"
        ),
    );
    let (_server, addr, _) = start_listening(chat_proxy(&[&shipped_config(), &local]));

    let screenshots = manifest_dir().join("target/browser-screenshots");
    std::fs::create_dir_all(&screenshots).expect("screenshot folder");
    let mut node = Command::new("node")
        .arg(manifest_dir().join("tests/browser/chat_page.mjs"))
        .env("BASE_URL", format!("http://{addr}"))
        .env("COUNTERS_URL", format!("http://{counters}/counters"))
        .env("API_KEY", KEY)
        .env("CHROMIUM", &chromium)
        .env("PLAYWRIGHT", &playwright)
        .env("SCREENSHOTS", &screenshots)
        .env("FIXTURE_IMAGE", &fixture)
        .env("FIXTURE_CODE", FUND_CODE)
        .env("FIXTURE_AVAILABLE", &available)
        .env("FIXTURE_AVAILABLE_CODE", AVAILABLE_CODE)
        .spawn()
        .expect("node runs (Node.js 18 or newer)");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = node.try_wait().expect("wait for node") {
            break status;
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = node.kill();
            panic!("the browser test ran past {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "the browser test failed: {status}");
    for shot in ["chat-page.png", "queue.png", "ocr.png", "phone-dark.png"] {
        assert!(screenshots.join(shot).exists(), "{shot} was saved");
    }
}
