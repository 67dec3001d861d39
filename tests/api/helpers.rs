//! `spawn_app()`: the real application on 127.0.0.1:0 against the mock model on another port,
//! each test with its own database file. Logs are silent unless `TEST_LOG=1`.

use std::net::SocketAddr;
use std::sync::LazyLock;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chat_proxy::config::Config;
use chat_proxy::demo::{MockKnobs, MockUpstream};
use chat_proxy::lifecycle::Lifecycle;
use chat_proxy::startup::Application;
use chat_proxy::store::Database;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::eventually::eventually;

static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var("TEST_LOG").is_ok() {
        let log = chat_proxy::config::LogConfig {
            filter: "debug".into(),
            ..Default::default()
        };
        // No exporter: nothing to flush.
        let _telemetry = chat_proxy::telemetry::init(&log, &Default::default());
    }
});

pub struct TestApp {
    pub addr: SocketAddr,
    pub mock: MockUpstream,
    pub client: reqwest::Client,
    pub config: Config,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

/// A config for tests: free port, the given mock, short timeouts, a private data folder.
pub fn test_config(mock: &MockUpstream, dir: &std::path::Path) -> Config {
    let mut config = Config::default();
    config.server.bind = "127.0.0.1:0".into();
    config.server.shutdown_grace_ms = 2_000;
    config.upstream.base_url = mock.base_url();
    config.upstream.model = "mock-model".into();
    config.upstream.first_chunk_timeout_ms = 2_000;
    config.upstream.chunk_gap_timeout_ms = 2_000;
    config.upstream.retry_backoff_ms = 10;
    config.limits.queue_timeout_ms = 30_000;
    config.database.url = format!("sqlite://{}?mode=rwc", dir.join("chat.db").display());
    config.writer.spill_path = dir.join("spill.jsonl");
    // Workers start on first use: most tests never recognise an image.
    config.ocr.preload = false;
    config.ocr.worker_program = env!("CARGO_BIN_EXE_chat-proxy-ocr").into();
    config.ocr.pool_size = 2;
    config.prompts.dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts");
    config
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(MockKnobs::default(), |_| {}).await
}

pub async fn spawn_app_with(knobs: MockKnobs, tweak: impl FnOnce(&mut Config)) -> TestApp {
    LazyLock::force(&TRACING);
    let mock = MockUpstream::start(knobs, &Lifecycle::new())
        .await
        .expect("mock starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = test_config(&mock, dir.path());
    tweak(&mut config);
    config.validate().expect("test config is valid");
    let app = Application::build(config.clone())
        .await
        .expect("app builds");
    let addr = app.local_addr();
    let (tx, rx) = oneshot::channel();
    let server = tokio::spawn(app.run_until(async {
        let _ = rx.await;
    }));
    TestApp {
        addr,
        mock,
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("client"),
        config,
        shutdown: Some(tx),
        server: Some(server),
        _dir: dir,
    }
}

/// One SSE event as the client saw it.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub name: String,
    pub data: Value,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn post_answer(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/answer"))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn health(&self) -> Value {
        self.client
            .get(self.url("/health"))
            .send()
            .await
            .expect("health answered")
            .json()
            .await
            .expect("health is JSON")
    }

    /// Waits until `/health` satisfies `check`, or panics after 10 s with the last body.
    pub async fn wait_for_health(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        eventually(
            &format!("health to show {what}"),
            Duration::from_secs(10),
            async || {
                let health = self.health().await;
                if check(&health) {
                    Ok(health)
                } else {
                    Err(health)
                }
            },
        )
        .await
    }

    /// A second pool on the app's database, to read what the writer stored.
    pub fn database(&self) -> Database {
        Database::connect_lazy(&self.config.database).expect("database URL is valid")
    }

    /// Waits until the database holds `count` chat_logs rows (or panics after 30 s).
    pub async fn wait_for_rows(&self, count: u64) -> Database {
        let db = self.database();
        let rows = eventually(
            &format!("{count} chat_logs rows"),
            Duration::from_secs(30),
            async || match db.count_chat_logs().await {
                Ok(n) if n >= count => Ok(n),
                other => Err(format!(
                    "{:?}; writer {}",
                    other.map_err(|e| e.to_string()),
                    self.health().await["log_writer"]
                )),
            },
        )
        .await;
        assert_eq!(rows, count, "more rows than requests");
        db
    }

    /// Starts shutdown and waits for the server (and the log writer) to stop.
    pub async fn stop(&mut self) {
        let server = self.begin_stop();
        tokio::time::timeout(Duration::from_secs(30), server)
            .await
            .expect("server stops within 30 s")
            .expect("server task did not panic")
            .expect("server ended cleanly");
    }

    /// Starts shutdown without waiting.
    pub fn begin_stop(&mut self) -> JoinHandle<anyhow::Result<()>> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.server.take().expect("server still running")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.mock.stop();
    }
}

/// Reads a whole SSE response into its events (keep-alive comments are not events).
pub async fn read_events(response: reqwest::Response) -> Vec<SseEvent> {
    let mut events = response.bytes_stream().eventsource();
    let mut out = Vec::new();
    while let Some(event) = events.next().await {
        let event = event.expect("well-formed SSE");
        let data = serde_json::from_str(&event.data).expect("event data is JSON");
        out.push(SseEvent {
            name: event.event,
            data,
        });
    }
    out
}

pub fn names(events: &[SseEvent]) -> Vec<&str> {
    events.iter().map(|e| e.name.as_str()).collect()
}

pub fn answer_text(events: &[SseEvent]) -> String {
    events
        .iter()
        .filter(|e| e.name == "delta")
        .map(|e| e.data["content"].as_str().expect("delta content"))
        .collect()
}

pub fn last(events: &[SseEvent]) -> &SseEvent {
    events.last().expect("at least one event")
}

/// A long, paced answer (1,000 chunks, 20 ms apart): a stream that holds its permit for a while.
pub fn slow() -> MockKnobs {
    MockKnobs {
        tokens: Some(1000),
        token_delay: Duration::from_millis(20),
        ..MockKnobs::default()
    }
}

/// Waits until the mock saw `count` upstream requests aborted (the stream reset, for HTTP/2).
pub async fn wait_for_aborted(app: &TestApp, count: usize) {
    eventually(
        "the upstream request to be aborted",
        Duration::from_secs(5),
        async || match app.mock.counters().aborted.load(Ordering::Acquire) {
            n if n == count => Ok(()),
            n => Err(n),
        },
    )
    .await;
}

/// Sends a streamed `/answer` for `question` over a raw connection, reads the head and a
/// little of the answer (returned as text), and then stops reading, keeping the connection
/// open for as long as the caller holds it.
pub async fn start_and_stop_reading(app: &TestApp, question: &str) -> (TcpStream, String) {
    let body = serde_json::json!({"user_input": question}).to_string();
    let mut tcp = TcpStream::connect(app.addr).await.expect("connect");
    let head = format!(
        "POST /answer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.expect("write head");
    tcp.write_all(body.as_bytes()).await.expect("write body");
    let mut first = [0u8; 400];
    tcp.read_exact(&mut first).await.expect("the stream begins");
    let first = String::from_utf8_lossy(&first).into_owned();
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    (tcp, first)
}
