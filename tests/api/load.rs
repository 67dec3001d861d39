//! Isolation under load: many concurrent streams, each with its own nonce, through 5 permits.

use std::sync::atomic::Ordering;
use std::time::Duration;

use chat_proxy::demo::MockKnobs;
use serde_json::json;

use crate::helpers::{names, read_events, spawn_app_with};

const STREAMS: usize = 500;
const TOKENS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_streams_each_get_only_their_own_answer() {
    let app = spawn_app_with(
        MockKnobs {
            tokens: Some(TOKENS),
            token_delay: Duration::from_millis(1),
            ..MockKnobs::default()
        },
        |c| {
            c.limits.max_queue = STREAMS;
            c.limits.queue_timeout_ms = 120_000;
        },
    )
    .await;
    let app = std::sync::Arc::new(app);
    let mut tasks = Vec::with_capacity(STREAMS);
    for i in 0..STREAMS {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let nonce = format!("nonce-{i}-{}", uuid::Uuid::new_v4().simple());
            let response = app.post_answer(&json!({"user_input": nonce})).await;
            assert_eq!(response.status(), 200);
            let events = read_events(response).await;
            (nonce, events)
        }));
    }
    let mut queued = 0;
    for task in tasks {
        let (nonce, events) = task.await.expect("stream task");
        let kinds = names(&events);
        assert_eq!(kinds.first(), Some(&"meta"));
        assert_eq!(kinds.last(), Some(&"done"), "{nonce}: {kinds:?}");
        queued += usize::from(kinds.contains(&"queued"));
        let deltas: Vec<&str> = events
            .iter()
            .filter(|e| e.name == "delta")
            .map(|e| e.data["content"].as_str().expect("content"))
            .collect();
        let expected: Vec<String> = (0..TOKENS).map(|k| format!("{nonce}#{k} ")).collect();
        assert_eq!(
            deltas, expected,
            "stream {nonce} holds another request's bytes"
        );
    }
    let counters = app.mock.counters();
    assert_eq!(counters.requests.load(Ordering::Acquire), STREAMS);
    assert_eq!(counters.completed.load(Ordering::Acquire), STREAMS);
    assert_eq!(
        counters.max_in_flight.load(Ordering::Acquire),
        5,
        "the upstream must reach, and never pass, 5 requests at once"
    );
    assert!(
        queued > 0,
        "with 500 streams and 5 permits some must have queued"
    );
    let health = app.health().await;
    assert_eq!(health["upstream"]["permits_in_use"], 0);
    assert_eq!(health["upstream"]["queue_length"], 0);
}
