//! `/health/live` and `/health/ready`, as an orchestrator's probes ask them: without a key.

use std::time::Duration;

use chat_proxy::demo::MockKnobs;
use serde_json::Value;

use crate::eventually::eventually;
use crate::helpers::{TestApp, spawn_app_with};
use crate::mysql::{Relay, TestDatabase, server_addr};

const KEY: &str = "probe-key-0123456789";

async fn probe(app: &TestApp, path: &str) -> (u16, Value) {
    let response = app.client.get(app.url(path)).send().await.expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

async fn wait_ready(app: &TestApp, status: u16) -> Value {
    eventually(
        "the readiness probe",
        Duration::from_secs(10),
        async || match probe(app, "/health/ready").await {
            (s, body) if s == status => Ok(body),
            other => Err(other),
        },
    )
    .await
}

#[tokio::test]
async fn live_and_ready_without_a_key_once_the_upstream_answered() {
    let app = spawn_app_with(MockKnobs::default(), |c| {
        c.auth.keys = vec![KEY.into()];
    })
    .await;
    let (status, live) = probe(&app, "/health/live").await;
    assert_eq!(
        (status, &live["live"]),
        (200, &Value::Bool(true)),
        "no key needed"
    );
    let ready = eventually(
        "ready, the database checked",
        Duration::from_secs(10),
        async || match probe(&app, "/health/ready").await {
            (200, body) if body["database"] == "ok" => Ok(body),
            other => Err(other),
        },
    )
    .await;
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["upstream"], "reachable");
    assert_eq!(ready["reasons"].as_array().map(Vec::len), Some(0));
}

#[tokio::test]
async fn an_unreachable_upstream_makes_it_unready_but_still_live() {
    let app = spawn_app_with(MockKnobs::default(), |c| {
        // Nothing listens on port 1.
        c.upstream.base_url = "http://127.0.0.1:1/v1".into();
        c.upstream.health_check_ms = 200;
    })
    .await;
    let body = wait_ready(&app, 503).await;
    assert_eq!(body["upstream"], "unreachable", "{body}");
    assert_eq!(body["reasons"][0], "upstream_unreachable");
    assert_eq!(probe(&app, "/health/live").await.0, 200);
}

#[tokio::test]
async fn a_database_outage_does_not_make_it_unready() {
    let test_db = TestDatabase::create().await;
    let relay = Relay::start(server_addr()).await;
    let url = test_db.url_via(relay.addr);
    let app = spawn_app_with(MockKnobs::default(), |c| {
        c.database.url = url;
        c.database.connect_timeout_ms = 300;
        c.writer.retry_max_ms = 200;
    })
    .await;
    wait_ready(&app, 200).await;
    relay.set_up(false);
    let body = eventually(
        "the database seen down",
        Duration::from_secs(10),
        async || match probe(&app, "/health/ready").await {
            (200, body) if body["database"] == "down" => Ok(body),
            other => Err(other),
        },
    )
    .await;
    assert_eq!(body["ready"], true, "the log spills; traffic may go on");
    relay.set_up(true);
    test_db.drop_database().await;
}
