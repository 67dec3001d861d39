//! OpenTelemetry traces from the real binary: a small OTLP/HTTP receiver (JSON) and a test
//! upstream on loopback, one `/answer` carrying a client's `traceparent`, and then the spans
//! checked: their names, one trace id, their parents, and the `traceparent` the upstream saw.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::post;
use serde_json::Value;

#[path = "support/binary.rs"]
mod binary;
#[path = "support/process.rs"]
#[allow(dead_code, reason = "used through `binary`, in part")]
mod process;
use binary::{Running, chat_proxy, private_override, serve_peer, shipped_config, start_listening};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// Serves `router` on a loopback port until the runtime ends.
async fn serve(router: Router) -> String {
    format!("http://{}", serve_peer(router).await)
}

/// What the receiver and the upstream saw.
#[derive(Default)]
struct Seen {
    exports: Vec<Value>,
    traceparents: Vec<String>,
}

/// An OpenAI-compatible upstream that records each request's `traceparent` and answers with
/// one chunk.
fn upstream(seen: Arc<Mutex<Seen>>) -> Router {
    Router::new().route(
        "/v1/chat/completions",
        post(move |headers: HeaderMap| {
            let seen = seen.clone();
            async move {
                let traceparent = headers
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                seen.lock().expect("lock").traceparents.push(traceparent);
                let body = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
                ([("content-type", "text/event-stream")], body)
            }
        }),
    )
}

/// An OTLP/HTTP receiver for JSON exports.
fn receiver(seen: Arc<Mutex<Seen>>) -> Router {
    Router::new().route(
        "/v1/traces",
        post(move |body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                let export: Value = serde_json::from_slice(&body).expect("OTLP JSON");
                seen.lock().expect("lock").exports.push(export);
                "{}"
            }
        }),
    )
}

/// Every span exported: (name, trace id, span id, parent span id).
fn spans(exports: &[Value]) -> Vec<(String, String, String, String)> {
    let mut out = Vec::new();
    for export in exports {
        for resource in export["resourceSpans"].as_array().into_iter().flatten() {
            for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                for span in scope["spans"].as_array().into_iter().flatten() {
                    let field = |k: &str| span[k].as_str().unwrap_or("").to_lowercase();
                    out.push((
                        field("name"),
                        field("traceId"),
                        field("spanId"),
                        field("parentSpanId"),
                    ));
                }
            }
        }
    }
    out
}

fn stop(mut running: Running) {
    let pid = running.0.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    assert!(running.0.wait().expect("exit").success());
}

#[test]
fn a_clients_traceparent_continues_through_the_proxy_to_the_upstream() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (upstream_url, receiver_url) = runtime.block_on(async {
        (
            serve(upstream(seen.clone())).await,
            serve(receiver(seen.clone())).await,
        )
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let local = private_override(
        dir.path(),
        &format!(
            "[upstream]\nbase_url = \"{upstream_url}/v1\"\nmodel = \"m\"\n[ocr]\npreload = false\n[telemetry]\notlp_endpoint = \"{receiver_url}\"\n"
        ),
    );
    let mut command = chat_proxy(&[&shipped_config(), &local]);
    command
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_SERVICE_NAME");
    let (running, addr, _) = start_listening(command);
    let answered = runtime.block_on(async {
        reqwest::Client::new()
            .post(format!("http://{addr}/answer"))
            .header("traceparent", format!("00-{TRACE_ID}-{CLIENT_SPAN}-01"))
            .json(&serde_json::json!({"user_input": "hello", "stream": false}))
            .timeout(Duration::from_secs(20))
            .send()
            .await
            .expect("answered")
            .status()
    });
    assert_eq!(answered, 200);
    // SIGTERM: the exporter sends what it still holds before the process ends.
    stop(running);

    let seen = seen.lock().expect("lock");
    let spans = spans(&seen.exports);
    let find = |name: &str| {
        spans
            .iter()
            .find(|s| s.0 == name)
            .unwrap_or_else(|| panic!("a `{name}` span among {spans:?}"))
    };
    let request = find("request");
    assert_eq!(request.1, TRACE_ID, "the client's trace");
    assert_eq!(request.3, CLIENT_SPAN, "the client's span is the parent");
    for child in ["admission", "upstream_call", "log_write"] {
        let span = find(child);
        assert_eq!(span.1, TRACE_ID, "{child} is in the client's trace");
        assert_eq!(span.3, request.2, "{child} is a child of the request span");
    }
    let attempt = find("upstream_attempt");
    assert_eq!(
        attempt.3,
        find("upstream_call").2,
        "an attempt is inside the upstream call"
    );
    // The upstream request carried the trace on, from inside the attempt.
    assert_eq!(seen.traceparents.len(), 1);
    let parts: Vec<&str> = seen.traceparents[0].split('-').collect();
    assert_eq!(parts.len(), 4, "{:?}", seen.traceparents);
    assert_eq!(parts[1], TRACE_ID);
    assert_eq!(
        parts[2], attempt.2,
        "the upstream's parent is the attempt span"
    );
}
