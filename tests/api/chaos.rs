//! Chaos: 500 requests mixing every upstream fault, clients that leave (queued, mid-stream,
//! `stream: false`), clients that stop reading, tool calls, and two MariaDB outages. Afterwards
//! every request ended in `done` or an `error` (or its HTTP error), the permits are all back,
//! the upstream has nothing in flight, and every started exchange has exactly one row.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chat_proxy::demo::MockKnobs;
use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::eventually::eventually;
use crate::fixtures::holding_card;
use crate::helpers::{TestApp, read_events, spawn_app_with, start_and_stop_reading};
use crate::image_server::ImageServer;
use crate::mysql::{Relay, TestDatabase, server_addr};

const REQUESTS: usize = 500;
/// Requests in flight at once: enough to keep a queue behind the 5 permits.
const AT_ONCE: usize = 40;

/// What one request is, and what it may end in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Normal,
    Status503,
    Status400,
    Cut,
    Malformed,
    Stall,
    LeaveMidStream,
    LeaveAtOnce,
    NonStream,
    NonStreamFault,
    ToolCall,
    StopReading,
}

/// Every kind but `StopReading`, which is rarer: each of those streams 16 MB.
const KINDS: [Kind; 11] = [
    Kind::Normal,
    Kind::Status503,
    Kind::Status400,
    Kind::Cut,
    Kind::Malformed,
    Kind::Stall,
    Kind::LeaveMidStream,
    Kind::LeaveAtOnce,
    Kind::NonStream,
    Kind::NonStreamFault,
    Kind::ToolCall,
];

fn kind(i: usize) -> Kind {
    if i % 50 == 11 {
        Kind::StopReading
    } else {
        KINDS[i % KINDS.len()]
    }
}

/// How a request ended, as its client saw it.
#[derive(Debug)]
struct Ended {
    kind: Kind,
    /// The response's request id (every request here is admitted).
    request_id: String,
    /// `done`, `error`, an HTTP status, or `left` for clients that went away.
    how: String,
    /// A client that stopped reading keeps its connection open until the end of the test.
    _held: Option<TcpStream>,
}

fn question(kind: Kind, i: usize, image: &str) -> String {
    let marker = match kind {
        Kind::Status503 => "fault:status:503",
        Kind::Status400 | Kind::NonStreamFault => "fault:status:400",
        Kind::Cut => "fault:cut:3",
        Kind::Malformed => "fault:malformed:2",
        Kind::Stall => "fault:stall:2",
        // About 13 MB of answer: more than socket buffers and the 64 KiB backlog hold.
        Kind::StopReading => {
            "tokens:16000 padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding-padding"
        }
        Kind::ToolCall => image,
        _ => "",
    };
    format!("request {i} {marker}")
}

async fn one(app: &TestApp, kind: Kind, i: usize, image: &str) -> Ended {
    let text = question(kind, i, image);
    if kind == Kind::StopReading {
        return stop_reading(app, &text).await;
    }
    let stream = !matches!(kind, Kind::NonStream | Kind::NonStreamFault);
    let response = app
        .client
        .post(app.url("/answer"))
        .json(&json!({"user_input": text, "stream": stream}))
        .send()
        .await
        .expect("sent");
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let status = response.status().as_u16();
    let how = match kind {
        Kind::LeaveAtOnce => {
            drop(response);
            "left".to_owned()
        }
        Kind::LeaveMidStream => {
            let mut body = response.bytes_stream();
            // The head and `meta`, maybe a delta: then gone.
            let _ = body.next().await;
            "left".to_owned()
        }
        _ if !stream => {
            let body: Value = response.json().await.expect("a JSON body");
            if status == 200 {
                assert!(body["reply"].is_string(), "{body}");
                "done".to_owned()
            } else {
                assert!(body["error"]["code"].is_string(), "{body}");
                status.to_string()
            }
        }
        _ => {
            assert_eq!(status, 200);
            let events = read_events(response).await;
            let last = events.last().expect("at least meta");
            // Never a clean end that hides a failure: the stream closes on `done` or `error`.
            assert!(
                last.name == "done" || last.name == "error",
                "request {i} ({kind:?}) ended on {:?}",
                last.name
            );
            last.name.clone()
        }
    };
    Ended {
        kind,
        request_id,
        how,
        _held: None,
    }
}

/// A client that reads the head and a little of a long answer, then reads nothing more, with
/// the connection left open.
async fn stop_reading(app: &TestApp, text: &str) -> Ended {
    let (tcp, first) = start_and_stop_reading(app, text).await;
    let request_id = first
        .lines()
        .find_map(|line| line.strip_prefix("x-request-id: "))
        .expect("the request id header")
        .trim()
        .to_owned();
    Ended {
        kind: Kind::StopReading,
        request_id,
        how: "left".to_owned(),
        _held: Some(tcp),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_requests_of_every_fault_end_cleanly_with_one_row_each() {
    let test_db = TestDatabase::create().await;
    let relay = Relay::start(server_addr()).await;
    let url = test_db.url_via(relay.addr);
    let png = holding_card("易方达蓝筹精选混合", "005827", "12,345.67");
    let images = ImageServer::start(HashMap::from([("a.png".to_owned(), png)])).await;
    let knobs = MockKnobs {
        tokens: Some(12),
        token_delay: Duration::from_millis(3),
        ..MockKnobs::default()
    };
    let app = Arc::new(
        spawn_app_with(knobs, |c| {
            c.database.url = url;
            c.database.connect_timeout_ms = 500;
            c.writer.retry_initial_ms = 50;
            c.writer.retry_max_ms = 300;
            c.upstream.max_retries = 1;
            c.upstream.retry_backoff_ms = 20;
            c.upstream.chunk_gap_timeout_ms = 500;
            c.limits.queue_timeout_ms = 60_000;
            c.limits.max_buffered_answer_bytes = 64 * 1024;
            c.server.client_write_timeout_ms = 1_000;
            c.ocr.pool_size = 1;
            c.ocr.allow_private_networks = true;
            c.ocr.oss_hosts = vec!["127.0.0.1".into()];
        })
        .await,
    );
    let image = images.url("img/a.png");
    let gate = Arc::new(Semaphore::new(AT_ONCE));
    let mut tasks = Vec::new();
    for i in 0..REQUESTS {
        // Two database outages, each about two seconds, a third and two thirds of the way.
        if i == REQUESTS / 3 || i == 2 * REQUESTS / 3 {
            relay.set_up(false);
        }
        if i == REQUESTS / 3 + 60 || i == 2 * REQUESTS / 3 + 60 {
            relay.set_up(true);
        }
        let permit = gate.clone().acquire_owned().await.expect("gate");
        let (app, image) = (app.clone(), image.clone());
        tasks.push(tokio::spawn(async move {
            let ended = one(&app, kind(i), i, &image).await;
            drop(permit);
            ended
        }));
    }
    relay.set_up(true);
    let mut ended = Vec::new();
    for task in tasks {
        ended.push(task.await.expect("a client task"));
    }

    // The outcomes each kind may have.
    for e in &ended {
        let allowed: &[&str] = match e.kind {
            Kind::Normal | Kind::ToolCall => &["done"],
            Kind::Status503 | Kind::Status400 | Kind::Cut | Kind::Malformed | Kind::Stall => {
                &["error"]
            }
            Kind::NonStream => &["done"],
            Kind::NonStreamFault => &["502"],
            Kind::LeaveMidStream | Kind::LeaveAtOnce | Kind::StopReading => &["left"],
        };
        assert!(allowed.contains(&e.how.as_str()), "{e:?}");
    }

    // Everything given back.
    eventually(
        "permits and upstream back to idle",
        Duration::from_secs(30),
        async || {
            let health = app.health().await;
            let in_flight = app.mock.counters().in_flight.load(Ordering::Acquire);
            let upstream = &health["upstream"];
            if upstream["permits_available"] == 5 && upstream["queue_length"] == 0 && in_flight == 0
            {
                Ok(())
            } else {
                Err((health, in_flight))
            }
        },
    )
    .await;

    // Exactly one row per exchange, whatever happened to the database meanwhile.
    let db = app.wait_for_rows(REQUESTS as u64).await;
    let rows = db.chat_logs().await.expect("rows");
    let mut per_request: HashMap<&str, usize> = HashMap::new();
    for row in &rows {
        *per_request.entry(row.request_id.as_str()).or_default() += 1;
    }
    for e in &ended {
        assert_eq!(per_request.get(e.request_id.as_str()), Some(&1), "{e:?}");
    }
    let slow: Vec<_> = rows
        .iter()
        .filter(|r| r.status == "client_too_slow")
        .collect();
    let stop_readers = ended.iter().filter(|e| e.kind == Kind::StopReading).count();
    assert_eq!(
        slow.len(),
        stop_readers,
        "every client that stopped reading ended as too slow"
    );
    let mut statuses: HashMap<&str, usize> = HashMap::new();
    for row in &rows {
        *statuses.entry(row.status.as_str()).or_default() += 1;
    }
    println!("chaos: {} rows by status {statuses:?}", rows.len());
    test_db.drop_database().await;
}
