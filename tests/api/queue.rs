//! The permit queue: waiting, timing out, refusing, and freeing on disconnect.

use std::sync::atomic::Ordering;

use chat_proxy::demo::{Fault, MockKnobs};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::helpers::{last, names, read_events, slow, spawn_app_with, wait_for_aborted};

/// Opens a stream and reads until its first delta, so it certainly holds a permit.
async fn hold_permit(app: &crate::helpers::TestApp) -> reqwest::Response {
    let response = app.post_answer(&json!({"user_input": "holder"})).await;
    assert_eq!(response.status(), 200);
    response
}

#[tokio::test]
async fn a_request_past_the_queue_timeout_gets_an_error() {
    let app = spawn_app_with(slow(), |c| {
        c.limits.max_concurrent_upstream = 1;
        c.limits.queue_timeout_ms = 300;
    })
    .await;
    let _holder = hold_permit(&app).await;
    app.wait_for_health("a permit in use", |h| h["upstream"]["permits_in_use"] == 1)
        .await;

    let events = read_events(app.post_answer(&json!({"user_input": "late"})).await).await;
    assert_eq!(names(&events), ["meta", "queued", "error"]);
    assert_eq!(events[1].data["position"], 1);
    assert_eq!(last(&events).data["code"], "queue_timeout");

    let response = app
        .post_answer(&json!({"user_input": "late", "stream": false}))
        .await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "queue_timeout");
}

#[tokio::test]
async fn beyond_max_queue_is_refused_at_once() {
    let app = spawn_app_with(slow(), |c| {
        c.limits.max_concurrent_upstream = 1;
        c.limits.max_queue = 1;
    })
    .await;
    let _holder = hold_permit(&app).await;
    app.wait_for_health("a permit in use", |h| h["upstream"]["permits_in_use"] == 1)
        .await;
    let waiting = app.post_answer(&json!({"user_input": "waits"})).await;
    assert_eq!(waiting.status(), 200);
    app.wait_for_health("one waiting", |h| h["upstream"]["queue_length"] == 1)
        .await;

    let refused = app
        .post_answer(&json!({"user_input": "one too many"}))
        .await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "queue_full");
    drop(waiting);
}

#[tokio::test]
async fn a_client_leaving_mid_stream_frees_its_permit_and_aborts_upstream() {
    let app = spawn_app_with(slow(), |c| c.limits.max_concurrent_upstream = 1).await;
    let response = hold_permit(&app).await;
    let mut events = eventsource_stream::Eventsource::eventsource(response.bytes_stream());
    loop {
        let event = events
            .next()
            .await
            .expect("stream open")
            .expect("well-formed");
        if event.event == "delta" {
            break;
        }
    }
    assert_eq!(app.mock.counters().in_flight.load(Ordering::Acquire), 1);
    drop(events);

    app.wait_for_health("the permit back", |h| h["upstream"]["permits_in_use"] == 0)
        .await;
    wait_for_aborted(&app, 1).await;
    let counters = app.mock.counters();
    assert_eq!(
        counters.aborted.load(Ordering::Acquire),
        1,
        "the upstream saw the abort"
    );
    assert_eq!(counters.in_flight.load(Ordering::Acquire), 0);
    assert_eq!(counters.completed.load(Ordering::Acquire), 0);

    // The freed permit serves the next request.
    app.mock.set_knobs(|k| k.tokens = Some(2));
    let events = read_events(app.post_answer(&json!({"user_input": "next"})).await).await;
    assert_eq!(last(&events).name, "done");
}

#[tokio::test]
async fn a_client_leaving_while_queued_leaves_the_queue() {
    let app = spawn_app_with(slow(), |c| c.limits.max_concurrent_upstream = 1).await;
    let _holder = hold_permit(&app).await;
    app.wait_for_health("a permit in use", |h| h["upstream"]["permits_in_use"] == 1)
        .await;
    let waiting = app.post_answer(&json!({"user_input": "waits"})).await;
    app.wait_for_health("one waiting", |h| h["upstream"]["queue_length"] == 1)
        .await;
    drop(waiting);
    app.wait_for_health("nobody waiting", |h| h["upstream"]["queue_length"] == 0)
        .await;
    assert_eq!(app.mock.counters().requests.load(Ordering::Acquire), 1);
}

#[tokio::test]
async fn a_client_leaving_during_a_stall_aborts_at_once() {
    // The upstream is silent: only watching the client (not the next send) can notice it left.
    let app = spawn_app_with(
        MockKnobs {
            tokens: Some(5),
            fault: Some(Fault::StallAfter(1)),
            ..MockKnobs::default()
        },
        |c| c.upstream.chunk_gap_timeout_ms = 60_000,
    )
    .await;
    let response = app.post_answer(&json!({"user_input": "x"})).await;
    let mut events = eventsource_stream::Eventsource::eventsource(response.bytes_stream());
    loop {
        let event = events.next().await.expect("open").expect("well-formed");
        if event.event == "delta" {
            break;
        }
    }
    drop(events);
    app.wait_for_health("the permit back", |h| h["upstream"]["permits_in_use"] == 0)
        .await;
    wait_for_aborted(&app, 1).await;
}

#[tokio::test]
async fn over_http2_streams_share_the_upstream_and_a_leaving_client_still_aborts() {
    let app = spawn_app_with(slow(), |c| c.upstream.http2_prior_knowledge = true).await;
    let app = std::sync::Arc::new(app);
    app.mock.set_knobs(|k| k.tokens = Some(3));
    let answers = futures::future::join_all((0..10).map(|i| {
        let app = app.clone();
        async move {
            read_events(
                app.post_answer(&json!({"user_input": format!("h2-{i}")}))
                    .await,
            )
            .await
        }
    }))
    .await;
    for (i, events) in answers.iter().enumerate() {
        assert_eq!(last(events).name, "done");
        assert_eq!(
            crate::helpers::answer_text(events),
            format!("h2-{i}#0 h2-{i}#1 h2-{i}#2 ")
        );
    }

    app.mock.set_knobs(|k| k.tokens = Some(1000));
    let response = hold_permit(&app).await;
    let mut events = eventsource_stream::Eventsource::eventsource(response.bytes_stream());
    loop {
        let event = events.next().await.expect("open").expect("well-formed");
        if event.event == "delta" {
            break;
        }
    }
    drop(events);
    wait_for_aborted(&app, 1).await;
}
