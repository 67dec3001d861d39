//! Background logging: one row per exchange, on SQLite and on real MariaDB; responses that do not
//! wait for the database; nothing lost through an outage, a restart or a client leaving.

use std::sync::Arc;
use std::time::Duration;

use chat_proxy::config::Config;
use chat_proxy::demo::MockKnobs;
use chat_proxy::lifecycle::Lifecycle;
use chat_proxy::store::{Database, LogWriter, OcrResultRecord};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::eventually::eventually;
use crate::helpers::{SseEvent, TestApp, read_events, spawn_app_with};
use crate::mysql::{Relay, TestDatabase, server_addr};

const TOKENS: usize = 5;

fn knobs() -> MockKnobs {
    MockKnobs {
        tokens: Some(TOKENS),
        token_delay: Duration::from_millis(2),
        ..MockKnobs::default()
    }
}

fn expected_answer(nonce: &str) -> String {
    (0..TOKENS).map(|k| format!("{nonce}#{k} ")).collect()
}

/// What one finished request told its client.
struct Answered {
    request_id: String,
    nonce: String,
    /// From the permit to the end: the answer's own time, whatever the queue in front of it.
    served_ms: u64,
}

fn timing(done: &SseEvent, name: &str) -> u64 {
    done.data["timings"][name].as_u64().expect("a timing in ms")
}

/// Sends `count` concurrent streamed questions, each with its own (partly Chinese) nonce.
async fn answer_many(app: &Arc<TestApp>, count: usize, tag: &str) -> Vec<Answered> {
    let tasks: Vec<_> = (0..count)
        .map(|i| {
            let app = app.clone();
            let nonce = format!(
                "{tag}-{i}-基金-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            );
            tokio::spawn(async move {
                let response = app
                    .post_answer(&json!({"user_input": nonce, "session_id": format!("s-{i}")}))
                    .await;
                let events = read_events(response).await;
                let done = events.last().expect("events");
                assert_eq!(done.name, "done", "{events:?}");
                Answered {
                    request_id: events[0].data["request_id"]
                        .as_str()
                        .expect("id")
                        .to_owned(),
                    nonce,
                    served_ms: timing(done, "total_ms") - timing(done, "queue_ms"),
                }
            })
        })
        .collect();
    let mut out = Vec::with_capacity(count);
    for task in tasks {
        out.push(task.await.expect("request task"));
    }
    out
}

/// Every answered request has exactly one row, holding its own question and answer only.
async fn assert_rows_match(db: &Database, answered: &[Answered]) {
    let rows = db.chat_logs().await.expect("read rows");
    assert_eq!(rows.len(), answered.len());
    let mut ids: Vec<&str> = rows.iter().map(|r| r.request_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), answered.len(), "a request_id appears twice");
    for a in answered {
        let row = db
            .chat_log(&a.request_id)
            .await
            .expect("read row")
            .unwrap_or_else(|| panic!("no row for {}", a.request_id));
        assert_eq!(row.status, "ok");
        assert_eq!(
            row.answer,
            expected_answer(&a.nonce),
            "row {} holds another answer",
            a.request_id
        );
        let messages: Value = serde_json::from_str(&row.request_messages).expect("messages JSON");
        assert_eq!(messages, json!([{"role": "user", "content": a.nonce}]));
        assert_eq!(row.model, "mock-model");
        assert_eq!(row.finish_reason.as_deref(), Some("stop"));
    }
}

async fn n_concurrent_answers_give_n_rows(configure: impl FnOnce(&mut Config)) {
    let app = Arc::new(spawn_app_with(knobs(), configure).await);
    let answered = answer_many(&app, 100, "load").await;
    let db = app.wait_for_rows(100).await;
    assert_rows_match(&db, &answered).await;
    let writer = &app.health().await["log_writer"];
    assert_eq!(writer["written"], 100);
    assert_eq!(writer["spilled"], 0);
    assert_eq!(writer["backlog"], 0);
}

#[tokio::test]
async fn sqlite_n_concurrent_answers_give_n_rows() {
    n_concurrent_answers_give_n_rows(|_| {}).await;
}

#[tokio::test]
async fn mysql_n_concurrent_answers_give_n_rows() {
    let test_db = TestDatabase::create().await;
    let url = test_db.url();
    n_concurrent_answers_give_n_rows(|c| c.database.url = url).await;
    test_db.drop_database().await;
}

async fn a_cancelled_request_keeps_its_row(configure: impl FnOnce(&mut Config)) {
    let app = spawn_app_with(
        MockKnobs {
            tokens: Some(1000),
            token_delay: Duration::from_millis(20),
            ..MockKnobs::default()
        },
        configure,
    )
    .await;
    let response = app
        .post_answer(&json!({"user_input": "leaving", "user_id": "u-7"}))
        .await;
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let mut events = eventsource_stream::Eventsource::eventsource(response.bytes_stream());
    let mut deltas = 0;
    while deltas < 3 {
        let event = events.next().await.expect("open").expect("well-formed");
        deltas += usize::from(event.event == "delta");
    }
    drop(events);
    let db = app.wait_for_rows(1).await;
    let row = db.chat_log(&request_id).await.expect("read").expect("row");
    assert_eq!(row.status, "cancelled");
    assert_eq!(row.user_id.as_deref(), Some("u-7"));
    assert!(
        row.answer.starts_with("leaving#0 leaving#1 leaving#2 "),
        "{}",
        row.answer
    );
    assert!(!row.answer.contains("leaving#999"), "the answer is partial");
}

#[tokio::test]
async fn sqlite_a_cancelled_request_keeps_its_row() {
    a_cancelled_request_keeps_its_row(|_| {}).await;
}

#[tokio::test]
async fn mysql_a_cancelled_request_keeps_its_row() {
    let test_db = TestDatabase::create().await;
    let url = test_db.url();
    a_cancelled_request_keeps_its_row(|c| c.database.url = url).await;
    test_db.drop_database().await;
}

fn median(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values[values.len() / 2]
}

/// Small queue and quick retries, so an outage reaches the spill file within the test.
fn outage_settings(c: &mut Config, url: String) {
    c.database.url = url;
    c.database.connect_timeout_ms = 500;
    c.writer.queue_capacity = 20;
    c.writer.batch_size = 50;
    c.writer.retry_initial_ms = 50;
    c.writer.retry_max_ms = 200;
    c.writer.drain_timeout_ms = 300;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_outage_during_load_neither_slows_answers_nor_loses_rows() {
    let test_db = TestDatabase::create().await;
    let relay = Relay::start(server_addr()).await;
    let url = test_db.url_via(relay.addr);
    let app = Arc::new(spawn_app_with(knobs(), |c| outage_settings(c, url)).await);

    let before = answer_many(&app, 40, "up").await;
    app.wait_for_rows(40).await;

    relay.set_up(false);
    let during = answer_many(&app, 120, "down").await;
    let writer = app.health().await["log_writer"].clone();
    assert!(writer["failed_attempts"].as_u64() > Some(0), "{writer}");
    assert!(
        writer["spilled"].as_u64() > Some(0),
        "the queue overflowed to the spill file: {writer}"
    );
    assert_eq!(writer["database_ok"], false);
    // The answers did not wait for the database: with every write failing they still finished,
    // in about the time they took while it was up. Queue waits are left out: 120 requests wait
    // longer for the 5 permits than 40 do, database or not.
    let (up_ms, down_ms) = (
        median(before.iter().map(|a| a.served_ms).collect()),
        median(during.iter().map(|a| a.served_ms).collect()),
    );
    assert!(
        down_ms <= up_ms * 3 + 100,
        "median {up_ms} ms from permit to end with the database up, {down_ms} ms down"
    );

    relay.set_up(true);
    let db = app.wait_for_rows(160).await;
    let mut all = before;
    all.extend(during);
    assert_rows_match(&db, &all).await;
    let writer = app
        .wait_for_health("the spill file replayed", |h| {
            h["log_writer"]["spill_pending"] == false
        })
        .await["log_writer"]
        .clone();
    assert!(writer["replayed"].as_u64() > Some(0), "{writer}");
    assert_eq!(writer["database_ok"], true);
    test_db.drop_database().await;
}

/// The log writer's numbers once `/health` shows the database up.
async fn writer_once_database_up(app: &TestApp) -> Value {
    app.wait_for_health("the database up", |h| {
        h["log_writer"]["database_ok"] == true
    })
    .await["log_writer"]
        .clone()
}

#[tokio::test]
async fn sqlite_health_shows_the_database_up_before_any_write() {
    let app = spawn_app_with(knobs(), |_| {}).await;
    let writer = writer_once_database_up(&app).await;
    assert_eq!(writer["written"], 0, "{writer}");
}

/// An idle service started while the database is away shows it down, then up once it answers,
/// with no request written in between.
#[tokio::test]
async fn mysql_health_follows_the_database_before_any_write() {
    let test_db = TestDatabase::create().await;
    let relay = Relay::start(server_addr()).await;
    relay.set_up(false);
    let url = test_db.url_via(relay.addr);
    let app = spawn_app_with(knobs(), |c| outage_settings(c, url)).await;

    let health = app
        .wait_for_health("the database down", |h| {
            h["log_writer"]["database_ok"] == false
        })
        .await;
    let writer = health["log_writer"].clone();
    assert_eq!(writer["database_ok"], false, "{writer}");

    relay.set_up(true);
    let writer = writer_once_database_up(&app).await;
    assert_eq!(writer["written"], 0, "{writer}");
    assert_eq!(writer["failed_attempts"], 0, "no write was tried: {writer}");
    test_db.drop_database().await;
}

/// A database that goes away while no request comes shows as down on `/health`, and as up
/// again once it answers, without a write tried in between.
#[tokio::test]
async fn mysql_health_follows_the_database_while_idle() {
    let test_db = TestDatabase::create().await;
    let relay = Relay::start(server_addr()).await;
    let url = test_db.url_via(relay.addr);
    let app = spawn_app_with(knobs(), |c| outage_settings(c, url)).await;
    writer_once_database_up(&app).await;

    relay.set_up(false);
    let writer = app
        .wait_for_health("the database down", |h| {
            h["log_writer"]["database_ok"] == false
        })
        .await["log_writer"]
        .clone();
    assert_eq!(writer["failed_attempts"], 0, "no write was tried: {writer}");

    relay.set_up(true);
    let writer = writer_once_database_up(&app).await;
    assert_eq!(writer["written"], 0, "{writer}");
    assert_eq!(writer["failed_attempts"], 0, "no write was tried: {writer}");
    test_db.drop_database().await;
}

#[tokio::test]
async fn mysql_spilled_rows_are_replayed_on_the_next_start() {
    let test_db = TestDatabase::create().await;
    let relay = Relay::start(server_addr()).await;
    let url = test_db.url_via(relay.addr);
    let spill_dir = tempfile::tempdir().expect("temp dir");
    let spill_path = spill_dir.path().join("spill.jsonl");

    relay.set_up(false);
    let first = Arc::new(
        spawn_app_with(knobs(), |c| {
            outage_settings(c, url.clone());
            c.writer.spill_path = spill_path.clone();
        })
        .await,
    );
    let answered = answer_many(&first, 30, "restart").await;
    let mut first = Arc::into_inner(first).expect("every request task is done");
    // A graceful stop with the database away: the writer spills what it still holds.
    first.stop().await;
    let lines = std::fs::read_to_string(&spill_path).expect("spill file written");
    assert_eq!(
        lines.lines().count(),
        30,
        "every record is in the spill file"
    );

    relay.set_up(true);
    let second = spawn_app_with(knobs(), |c| {
        outage_settings(c, url.clone());
        c.writer.spill_path = spill_path.clone();
    })
    .await;
    let db = second.wait_for_rows(30).await;
    assert_rows_match(&db, &answered).await;
    second
        .wait_for_health("the spill file replayed", |h| {
            h["log_writer"]["spill_pending"] == false
        })
        .await;
    assert!(
        !spill_path.exists()
            || std::fs::read_to_string(&spill_path)
                .expect("read")
                .is_empty()
    );
    test_db.drop_database().await;
}

#[tokio::test]
async fn a_replay_never_duplicates_rows() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::default();
    config.database.url = format!("sqlite://{}?mode=rwc", dir.path().join("x.db").display());
    config.writer.spill_path = dir.path().join("spill.jsonl");
    let db = Database::connect_lazy(&config.database).expect("url");
    db.migrate().await.expect("migrate");
    let record = sample_ocr_record("ocr-1");
    db.insert_ocr_results(std::slice::from_ref(&record))
        .await
        .expect("first insert");
    // The same record again, through the spill file, on the next start.
    let line = serde_json::to_string(&chat_proxy::store::LogRecord::from(record)).expect("json");
    std::fs::write(&config.writer.spill_path, format!("{line}\n{line}\n")).expect("write spill");
    let writer = LogWriter::start(db.clone(), &config.writer, &Lifecycle::new()).expect("writer");
    eventually(
        "the spill file replayed",
        Duration::from_secs(5),
        async || {
            let stats = writer.stats();
            if stats.spill_pending {
                Err(stats)
            } else {
                Ok(())
            }
        },
    )
    .await;
    writer.shutdown().await;
    // The writer closed its pool on shutdown; read through a new one.
    let db = Database::connect_lazy(&config.database).expect("url");
    assert_eq!(db.count_ocr_results().await.expect("count"), 1);
}

fn sample_ocr_record(id: &str) -> OcrResultRecord {
    OcrResultRecord {
        ocr_id: id.into(),
        request_id: "req-1".into(),
        client_key_id: None,
        image_url: "https://oss.example/a.png".into(),
        url_type: "oss".into(),
        status: "ok".into(),
        error_code: None,
        ocr_fund_code: Some("005827".into()),
        ocr_hold_share: Some("12345.67".into()),
        funds: Some(
            json!([{"fund_code": "005827", "hold_share": "12345.67", "name": "易方达蓝筹精选混合"}]),
        ),
        ocr_text: "易方达蓝筹精选混合 005827 持有份额 12,345.67".into(),
        fetch_ms: Some(3),
        ocr_ms: Some(400),
        elapsed_ms: 410,
        created_at: chrono::Utc::now(),
    }
}

#[tokio::test]
async fn mysql_ocr_rows_round_trip_chinese_text() {
    let test_db = TestDatabase::create().await;
    let mut config = Config::default();
    config.database.url = test_db.url();
    let dir = tempfile::tempdir().expect("temp dir");
    config.writer.spill_path = dir.path().join("spill.jsonl");
    let db = Database::connect_lazy(&config.database).expect("url");
    let writer = LogWriter::start(db, &config.writer, &Lifecycle::new()).expect("writer");
    writer.submit(sample_ocr_record("ocr-cn"));
    writer.shutdown().await;
    // The writer closed its pool on shutdown; read through a new one.
    let db = Database::connect_lazy(&config.database).expect("url");
    let Database::MySql(fresh) = &db else {
        unreachable!("mysql test")
    };
    let (text, share): (String, String) =
        sqlx::query_as("SELECT ocr_text, ocr_hold_share FROM ocr_results WHERE ocr_id = 'ocr-cn'")
            .fetch_one(fresh)
            .await
            .expect("row stored");
    assert_eq!(text, "易方达蓝筹精选混合 005827 持有份额 12,345.67");
    assert_eq!(share, "12345.67");
    test_db.drop_database().await;
}

/// Batches of many sizes (a statement's rows are padded with copies of its last row) store
/// each row once; the same batch again adds nothing.
async fn batches_of_any_size_store_each_row_once(db: &Database) {
    let mut stored = 0;
    for size in [1, 3, 63, 64, 65, 130, 500] {
        let batch: Vec<_> = (0..size)
            .map(|i| sample_ocr_record(&format!("ocr-{size}-{i}")))
            .collect();
        db.insert_ocr_results(&batch).await.expect("stored");
        db.insert_ocr_results(&batch).await.expect("stored again");
        stored += size;
    }
    assert_eq!(db.count_ocr_results().await.expect("count"), stored);
}

#[tokio::test]
async fn sqlite_batches_of_any_size_store_each_row_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::default();
    config.database.url = format!("sqlite://{}?mode=rwc", dir.path().join("x.db").display());
    let db = Database::connect_lazy(&config.database).expect("url");
    db.migrate().await.expect("migrate");
    batches_of_any_size_store_each_row_once(&db).await;
}

#[tokio::test]
async fn mysql_batches_of_any_size_store_each_row_once() {
    let test_db = TestDatabase::create().await;
    let mut config = Config::default();
    config.database.url = test_db.url();
    let db = Database::connect_lazy(&config.database).expect("url");
    db.migrate().await.expect("migrate");
    batches_of_any_size_store_each_row_once(&db).await;
    db.close().await;
    test_db.drop_database().await;
}
