//! Clients that stop reading: the upstream is read at its own pace, a permit is never held for
//! a client, and an answer nobody takes ends as `client_too_slow`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use chat_proxy::demo::MockKnobs;
use serde_json::json;
use tokio::io::AsyncReadExt;

use crate::eventually::eventually;
use crate::helpers::{
    TestApp, answer_text, last, read_events, spawn_app_with, start_and_stop_reading,
};

/// A question the mock echoes in every chunk: `tokens` chunks of it make the answer.
fn long_question() -> String {
    "lorem ipsum ".repeat(350)
}

/// Waits until the mock has seen `requests` requests and has none in flight.
async fn wait_for_upstream_idle(app: &TestApp, requests: usize) {
    eventually(
        "no upstream request in flight",
        Duration::from_secs(20),
        async || {
            let counters = app.mock.counters();
            match (
                counters.requests.load(Ordering::Acquire),
                counters.in_flight.load(Ordering::Acquire),
            ) {
                (seen, 0) if seen >= requests => Ok(()),
                other => Err(other),
            }
        },
    )
    .await;
}

async fn statuses(app: &TestApp, rows: u64) -> Vec<(String, Option<String>)> {
    let db = app.wait_for_rows(rows).await;
    let mut statuses: Vec<_> = db
        .chat_logs()
        .await
        .expect("read rows")
        .into_iter()
        .map(|row| (row.status, row.error_code))
        .collect();
    statuses.sort();
    statuses
}

#[tokio::test]
async fn five_clients_that_stop_reading_do_not_keep_the_permits() {
    // Answers of about 17 MB, written as fast as the mock can: far more than socket buffers hold.
    let knobs = MockKnobs {
        tokens: Some(4000),
        ..MockKnobs::default()
    };
    let app = spawn_app_with(knobs, |c| {
        c.limits.max_buffered_answer_bytes = 256 * 1024;
        c.server.client_write_timeout_ms = 60_000;
    })
    .await;
    let question = long_question();
    let mut stalled = Vec::new();
    for _ in 0..5 {
        stalled.push(start_and_stop_reading(&app, &question).await.0);
    }
    // Every permit comes back while the five sockets stay open.
    wait_for_upstream_idle(&app, 5).await;
    app.mock.set_knobs(|k| k.tokens = Some(3));
    let response = app.post_answer(&json!({"user_input": "and me?"})).await;
    let events = tokio::time::timeout(Duration::from_secs(20), read_events(response))
        .await
        .expect("a sixth client is answered while five stop reading");
    assert_eq!(last(&events).name, "done");
    assert!(answer_text(&events).starts_with("and me?"), "{events:?}");
    assert_eq!(app.health().await["upstream"]["permits_available"], 5);
    let mut expected = vec![
        (
            "client_too_slow".to_owned(),
            Some("client_too_slow".to_owned())
        );
        5
    ];
    expected.push(("ok".to_owned(), None));
    expected.sort();
    assert_eq!(statuses(&app, 6).await, expected);
    drop(stalled);
}

#[tokio::test]
async fn a_client_that_reads_nothing_for_the_write_timeout_ends_its_answer() {
    // A paced answer (about 8 s), which the buffer could hold whole: only the timeout ends it.
    let knobs = MockKnobs {
        tokens: Some(2000),
        token_delay: Duration::from_millis(4),
        ..MockKnobs::default()
    };
    let app = spawn_app_with(knobs, |c| {
        c.server.client_write_timeout_ms = 1000;
    })
    .await;
    let mut tcp = start_and_stop_reading(&app, &long_question()).await.0;
    wait_for_upstream_idle(&app, 1).await;
    assert_eq!(
        app.mock.counters().aborted.load(Ordering::Acquire),
        1,
        "the upstream was cancelled"
    );
    assert_eq!(
        statuses(&app, 1).await,
        [(
            "client_too_slow".to_owned(),
            Some("client_too_slow".to_owned())
        )]
    );
    // The connection itself is closed once its writes have been blocked for twice the timeout
    // (2 s here): after that, reading finds what was sent before, then the end. (Were it still
    // open, reading would let the rest of the answer out and the connection would stay.)
    tokio::time::sleep(Duration::from_secs(3)).await;
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut sink = vec![0u8; 1 << 20];
        loop {
            match tcp.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    closed.await.expect("the server closed the connection");
}

#[tokio::test]
async fn the_total_timeout_bounds_an_answer_its_client_does_not_read() {
    // The upstream is done in a moment, but its client never takes the end of the answer.
    let knobs = MockKnobs {
        tokens: Some(1500),
        ..MockKnobs::default()
    };
    let app = spawn_app_with(knobs, |c| {
        c.upstream.total_timeout_ms = 2000;
        c.server.client_write_timeout_ms = 600_000;
        c.limits.max_buffered_answer_bytes = 64 << 20;
    })
    .await;
    let _tcp = start_and_stop_reading(&app, &long_question()).await.0;
    let rows = statuses(&app, 1).await;
    assert_eq!(
        rows,
        [("error".to_owned(), Some("upstream_timeout".to_owned()))]
    );
    assert_eq!(app.health().await["upstream"]["permits_available"], 5);
}
