//! Log writer benchmark: prints numbers, asserts nothing (results go in BENCHMARKS.md).
//!
//! 1. Rows/s into MariaDB (and SQLite) through the batching writer vs one INSERT per row.
//! 2. What `kill -9` under load loses: requests whose client saw `done` but whose row is
//!    neither in the database, nor in the spill file, nor in the crash journal the next start
//!    recovers.
//!
//!   CHAT_PROXY_TEST_MYSQL_URL=mysql://root@127.0.0.1:3306/test cargo bench --bench log_writer

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chat_proxy::config::{DatabaseConfig, WriterConfig};
use chat_proxy::demo::{MockKnobs, MockUpstream};
use chat_proxy::lifecycle::Lifecycle;

mod support;
use chat_proxy::store::{ChatLogRecord, Database, LogWriter};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::json;
use sqlx::{AssertSqlSafe, Executor};

fn main() {
    support::run(run());
}

fn mysql_server() -> String {
    std::env::var("CHAT_PROXY_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned())
}

/// A fresh MariaDB database for one measurement.
async fn fresh_mysql(tag: &str) -> String {
    let server = mysql_server();
    let admin = sqlx::MySqlPool::connect(&server)
        .await
        .expect("MariaDB reachable");
    let name = format!("chat_proxy_bench_{tag}");
    admin
        .execute(AssertSqlSafe(format!("DROP DATABASE IF EXISTS `{name}`")))
        .await
        .expect("drop");
    admin
        .execute(AssertSqlSafe(format!(
            "CREATE DATABASE `{name}` CHARACTER SET utf8mb4"
        )))
        .await
        .expect("create");
    let mut url = url::Url::parse(&server).expect("url");
    url.set_path(&name);
    url.to_string()
}

fn record(i: usize) -> ChatLogRecord {
    ChatLogRecord {
        log_id: uuid::Uuid::now_v7().to_string(),
        request_id: format!("bench-{i}-{}", uuid::Uuid::new_v4().simple()),
        api: "answer".into(),
        session_id: Some(format!("session-{}", i % 100)),
        user_id: Some(format!("user-{}", i % 1000)),
        client_key_id: None,
        model: "bench-model".into(),
        request_messages: json!([{"role": "user", "content": format!("我持有多少份 005827？question {i}")}]),
        answer: "根据截图，您持有 005827 易方达蓝筹精选混合 12,345.67 份。".repeat(8),
        tool_calls: None,
        status: "ok".into(),
        error_code: None,
        error_message: None,
        finish_reason: Some("stop".into()),
        prompt_tokens: Some(42),
        completion_tokens: Some(180),
        queue_ms: 3,
        ttft_ms: Some(120),
        total_ms: 900,
        created_at: chrono::Utc::now(),
    }
}

async fn run() {
    let dir = tempfile::tempdir().expect("temp dir");
    println!("## Rows/s: batching writer vs one INSERT per row");
    println!("| database | one INSERT per row | batching writer | ratio |");
    println!("|---|---:|---:|---:|");
    for backend in ["mariadb", "sqlite"] {
        let single_url = match backend {
            "mariadb" => fresh_mysql("single").await,
            _ => format!("sqlite://{}/single.db?mode=rwc", dir.path().display()),
        };
        let single = single_row_rate(&single_url, 2_000).await;
        let batch_url = match backend {
            "mariadb" => fresh_mysql("batch").await,
            _ => format!("sqlite://{}/batch.db?mode=rwc", dir.path().display()),
        };
        for batch_size in [500, 2_000] {
            let batched = writer_rate(&batch_url, dir.path(), 50_000, batch_size).await;
            println!(
                "| {backend} | {single:.0} rows/s | {batched:.0} rows/s (batch_size {batch_size}) | {:.1}x |",
                batched / single
            );
        }
    }

    println!();
    println!("## kill -9 under load (MariaDB, 5 permits lifted to 1000, 20-chunk answers)");
    for trial in 1..=3 {
        kill_nine_trial(dir.path(), trial).await;
    }
}

fn database_config(url: &str) -> DatabaseConfig {
    DatabaseConfig {
        url: url.to_owned(),
        max_connections: 4,
        ..DatabaseConfig::default()
    }
}

async fn single_row_rate(url: &str, rows: usize) -> f64 {
    let db = Database::connect_lazy(&database_config(url)).expect("url");
    db.migrate().await.expect("migrate");
    let records: Vec<_> = (0..rows).map(record).collect();
    let started = Instant::now();
    for r in &records {
        db.insert_chat_log_single(r).await.expect("insert");
    }
    rows as f64 / started.elapsed().as_secs_f64()
}

async fn writer_rate(url: &str, dir: &Path, rows: usize, batch_size: usize) -> f64 {
    let db = Database::connect_lazy(&database_config(url)).expect("url");
    db.migrate().await.expect("migrate");
    let config = WriterConfig {
        queue_capacity: rows,
        batch_size,
        spill_path: dir.join(format!("spill-{}.jsonl", uuid::Uuid::new_v4().simple())),
        ..WriterConfig::default()
    };
    let records: Vec<_> = (0..rows).map(record).collect();
    let writer = LogWriter::start(db.clone(), &config, &Lifecycle::new()).expect("writer");
    let started = Instant::now();
    for r in records {
        writer.submit(r);
    }
    while writer.stats().written < rows as u64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = rows as f64 / started.elapsed().as_secs_f64();
    assert_eq!(writer.stats().spilled, 0, "the queue held every record");
    writer.shutdown().await;
    rate
}

/// Runs the proxy binary on a fresh MariaDB database under a steady load, kills it with
/// SIGKILL mid-load, and compares what clients saw finish with what was kept.
async fn kill_nine_trial(dir: &Path, trial: usize) {
    let url = fresh_mysql(&format!("kill{trial}")).await;
    let mock = MockUpstream::start(
        MockKnobs {
            tokens: Some(20),
            token_delay: Duration::from_millis(2),
            ..MockKnobs::default()
        },
        &Lifecycle::new(),
    )
    .await
    .expect("mock");
    let spill = dir.join(format!("kill-{trial}.jsonl"));
    let journal = dir.join(format!("journal-{trial}"));
    let config = dir.join(format!("kill-{trial}.toml"));
    std::fs::write(
        &config,
        format!(
            "[server]\nbind = \"127.0.0.1:0\"\n[upstream]\nbase_url = \"{}\"\n\
             [limits]\nmax_concurrent_upstream = 1000\n[database]\nurl = \"{url}\"\n\
             [writer]\nspill_path = \"{}\"\njournal_dir = \"{}\"\n",
            mock.base_url(),
            spill.display(),
            journal.display()
        ),
    )
    .expect("config");
    let (mut child, addr) = support::start_proxy(&config);

    let done: Arc<Mutex<Vec<String>>> = Arc::default();
    let client = reqwest::Client::new();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The benchmark's clients are not the product's tasks: they have their own tracker.
    let clients = Lifecycle::new();
    let mut workers = Vec::new();
    for _ in 0..50 {
        let (client, addr, done, stop) = (client.clone(), addr.clone(), done.clone(), stop.clone());
        workers.push(clients.spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                let Ok(response) = client
                    .post(format!("http://{addr}/answer"))
                    .json(&json!({"user_input": "kill"}))
                    .send()
                    .await
                else {
                    return;
                };
                let mut events = response.bytes_stream().eventsource();
                let mut request_id = None;
                while let Some(Ok(event)) = events.next().await {
                    match event.event.as_str() {
                        "meta" => {
                            let meta: serde_json::Value =
                                serde_json::from_str(&event.data).expect("json");
                            request_id = meta["request_id"].as_str().map(str::to_owned);
                        }
                        "done" => done.lock().expect("lock").extend(request_id.take()),
                        _ => {}
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let killed_at = Instant::now();
    child.kill().expect("SIGKILL");
    let completed: HashSet<String> = done.lock().expect("lock").iter().cloned().collect();
    stop.store(true, std::sync::atomic::Ordering::Release);
    for worker in workers {
        let _ = worker.await;
    }
    let _ = child.wait();
    let _ = killed_at;

    let db = Database::connect_lazy(&database_config(&url)).expect("url");
    let stored: HashSet<String> = db
        .chat_logs()
        .await
        .expect("rows")
        .into_iter()
        .map(|r| r.request_id)
        .collect();
    let spilled = std::fs::read_to_string(&spill)
        .unwrap_or_default()
        .lines()
        .count();
    // What the next start recovers from the journal: finished exchanges in full.
    let recovered = chat_proxy::store::journal::recover(&journal).expect("journal");
    let finished: HashSet<String> = recovered
        .iter()
        .filter(|r| r.status != chat_proxy::store::INTERRUPTED)
        .map(|r| r.request_id.clone())
        .collect();
    let interrupted = recovered.len() - finished.len();
    let lost_without_journal = completed.iter().filter(|id| !stored.contains(*id)).count();
    let lost: Vec<_> = completed
        .iter()
        .filter(|id| !stored.contains(*id) && !finished.contains(*id))
        .collect();
    let rate = completed.len() as f64 / 3.0;
    println!(
        "trial {trial}: {} answers done in 3 s ({rate:.0}/s); {} rows stored, {spilled} spilled; \
         the journal holds {} finished and {interrupted} interrupted; not in the database: \
         {lost_without_journal}; lost {} = {:.0} ms of traffic",
        completed.len(),
        stored.len(),
        finished.len(),
        lost.len(),
        lost.len() as f64 / rate * 1e3
    );
    mock.stop();
}
