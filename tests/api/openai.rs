//! The OpenAI-compatible API over real sockets: its shapes, its errors, client tools, the
//! queue, cancellation and the log row. (The official SDKs are run against the binary by
//! `tests/sdk/`.)

use std::sync::atomic::Ordering;

use chat_proxy::config::{MappedModel, ModelEntry};
use chat_proxy::demo::{Fault, MockKnobs};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::helpers::{TestApp, slow, spawn_app, spawn_app_with, wait_for_aborted};

/// One streamed completion as a client reads it: each `data:` payload (`[DONE]` as a
/// string) and each comment line.
struct Stream {
    data: Vec<Value>,
    comments: Vec<String>,
}

impl Stream {
    fn parse(body: &str) -> Self {
        let mut data = Vec::new();
        let mut comments = Vec::new();
        for block in body.split("\n\n").filter(|b| !b.trim().is_empty()) {
            for line in block.lines() {
                if let Some(payload) = line.strip_prefix("data: ") {
                    data.push(if payload == "[DONE]" {
                        json!("[DONE]")
                    } else {
                        serde_json::from_str(payload).expect("each data line is JSON")
                    });
                } else if let Some(comment) = line.strip_prefix(':') {
                    comments.push(comment.trim().to_owned());
                } else {
                    panic!("an unexpected line: {line:?}");
                }
            }
        }
        Self { data, comments }
    }

    fn chunks(&self) -> impl Iterator<Item = &Value> {
        self.data.iter().filter(|d| d.get("object").is_some())
    }

    fn text(&self) -> String {
        self.chunks()
            .filter_map(|c| {
                c.pointer("/choices/0/delta/content")
                    .and_then(Value::as_str)
            })
            .collect()
    }
}

async fn post(app: &TestApp, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/v1/chat/completions"))
        .json(body)
        .send()
        .await
        .expect("sent")
}

async fn get(app: &TestApp, path: &str) -> reqwest::Response {
    app.client.get(app.url(path)).send().await.expect("sent")
}

async fn read_stream(app: &TestApp, body: &Value) -> (reqwest::header::HeaderMap, Stream) {
    let response = post(app, body).await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    let body = response.text().await.expect("body");
    (headers, Stream::parse(&body))
}

fn question(text: &str) -> Value {
    json!({"model": "mock-model", "messages": [{"role": "user", "content": text}]})
}

fn streamed(text: &str) -> Value {
    let mut body = question(text);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    body
}

async fn error_of(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.expect("an error body");
    let error = &body["error"];
    for field in ["message", "type", "param", "code"] {
        assert!(error.get(field).is_some(), "`{field}` in {body}");
    }
    error.clone()
}

#[tokio::test]
async fn models_are_listed_and_found_by_the_names_clients_use() {
    let app = spawn_app_with(MockKnobs::default(), |c| {
        c.upstream.models = vec![
            ModelEntry::Name("mock-model".into()),
            ModelEntry::Mapped(MappedModel {
                name: "team/fast".into(),
                upstream: "upstream-fast".into(),
            }),
        ];
    })
    .await;
    app.mock.set_knobs(|k| k.record_requests = true);
    let list: Value = get(&app, "/v1/models").await.json().await.expect("JSON");
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|m| m["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["mock-model", "team/fast"]);
    assert_eq!(list["data"][1]["object"], "model");
    assert_eq!(list["data"][1]["owned_by"], "chat-proxy");
    for path in ["/v1/models/team/fast", "/models/team/fast"] {
        let model: Value = get(&app, path).await.json().await.expect("JSON");
        assert_eq!(model["id"], "team/fast", "{path}");
    }
    let missing = get(&app, "/v1/models/gpt-9").await;
    assert_eq!(error_of(missing, 404).await["code"], "model_not_found");

    // The mapped name is what the upstream hears; the client's name is what it sees.
    let mut body = question("which model");
    body["model"] = json!("team/fast");
    let reply: Value = post(&app, &body).await.json().await.expect("JSON");
    assert_eq!(reply["model"], "team/fast");
    assert_eq!(app.mock.requests()[0]["model"], "upstream-fast");
    let mut body = question("unknown");
    body["model"] = json!("gpt-9");
    let error = error_of(post(&app, &body).await, 404).await;
    assert_eq!(error["code"], "model_not_found");
    assert_eq!(error["param"], "model");
    assert_eq!(app.mock.requests().len(), 1, "no upstream call for it");
}

#[tokio::test]
async fn a_stream_has_openais_exact_shape() {
    let app = spawn_app_with(
        MockKnobs {
            tokens: Some(4),
            ..MockKnobs::default()
        },
        |_| {},
    )
    .await;
    let (headers, stream) = read_stream(&app, &streamed("nonce-shape")).await;
    assert_eq!(headers["content-type"], "text/event-stream");
    let request_id = headers["x-request-id"].to_str().expect("ASCII");
    let chunks: Vec<&Value> = stream.chunks().collect();
    // 4 content chunks, the finish chunk, the usage chunk.
    assert_eq!(chunks.len(), 6, "{:?}", stream.data);
    for chunk in &chunks {
        assert_eq!(chunk["id"], format!("chatcmpl-{request_id}"));
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "mock-model");
        assert_eq!(chunk["created"], chunks[0]["created"]);
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks[1]["choices"][0]["delta"].get("role").is_none());
    assert!(
        chunks[..4]
            .iter()
            .all(|c| c["choices"][0]["finish_reason"].is_null())
    );
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[5]["choices"], json!([]));
    assert!(chunks[5]["usage"]["total_tokens"].as_u64().expect("tokens") > 0);
    assert_eq!(stream.data.last(), Some(&json!("[DONE]")));
    assert_eq!(
        stream.text(),
        "nonce-shape#0 nonce-shape#1 nonce-shape#2 nonce-shape#3 "
    );

    // Without include_usage: no usage chunk, and no `usage` key on the chunks.
    let mut body = streamed("plain");
    body.as_object_mut()
        .expect("object")
        .remove("stream_options");
    let (_, stream) = read_stream(&app, &body).await;
    assert!(stream.chunks().all(|c| c.get("usage").is_none()));
    assert_eq!(stream.chunks().count(), 5);
}

#[tokio::test]
async fn one_completion_object_without_stream_and_options_reach_the_upstream() {
    let app = spawn_app().await;
    app.mock.set_knobs(|k| k.record_requests = true);
    let mut body = question("hello");
    for (name, value) in [
        ("temperature", json!(0.3)),
        ("top_p", json!(0.8)),
        ("max_tokens", json!(64)),
        ("max_completion_tokens", json!(65)),
        ("stop", json!(["END"])),
        ("presence_penalty", json!(0.1)),
        ("frequency_penalty", json!(0.2)),
        ("seed", json!(42)),
        ("response_format", json!({"type": "text"})),
    ] {
        body[name] = value;
    }
    body["user"] = json!("user-7");
    let response = post(&app, &body).await;
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .expect("ASCII")
        .to_owned();
    let reply: Value = response.json().await.expect("JSON");
    assert_eq!(reply["object"], "chat.completion");
    assert_eq!(reply["id"], format!("chatcmpl-{request_id}"));
    assert_eq!(reply["choices"][0]["message"]["role"], "assistant");
    assert!(
        reply["choices"][0]["message"]["content"]
            .as_str()
            .expect("text")
            .contains("hello")
    );
    assert_eq!(reply["choices"][0]["finish_reason"], "stop");
    assert!(reply["usage"]["prompt_tokens"].is_u64());
    let sent = &app.mock.requests()[0];
    for name in [
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "presence_penalty",
        "frequency_penalty",
        "seed",
        "response_format",
    ] {
        assert_eq!(sent[name], body[name], "{name} passed through");
    }
    assert!(sent.get("user").is_none(), "the user id stays here");

    // One row, marked as this API's, with the user id.
    let db = app.wait_for_rows(1).await;
    let row = db
        .chat_log(&request_id)
        .await
        .expect("read")
        .expect("the row");
    assert_eq!(row.api, "openai");
    assert_eq!(row.user_id.as_deref(), Some("user-7"));
    assert_eq!(row.status, "ok");
}

#[tokio::test]
async fn refusals_before_the_stream_are_openai_errors_with_their_status() {
    let app = spawn_app_with(MockKnobs::default(), |c| {
        c.auth.keys = vec!["a-client-key-of-16+".into()];
        c.server.max_body_bytes = 4096;
    })
    .await;
    let send = |body: Value, key: Option<&'static str>| {
        let mut request = app.client.post(app.url("/v1/chat/completions")).json(&body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send()
    };
    let key = Some("a-client-key-of-16+");
    let error = error_of(send(question("x"), None).await.expect("sent"), 401).await;
    assert_eq!(error["type"], "authentication_error");
    let error = error_of(
        send(question("x"), Some("wrong-key")).await.expect("sent"),
        401,
    )
    .await;
    assert_eq!(error["type"], "authentication_error");
    let models = get(&app, "/v1/models").await;
    assert_eq!(error_of(models, 401).await["type"], "authentication_error");

    let mut body = question("x");
    body["n"] = json!(3);
    let error = error_of(send(body, key).await.expect("sent"), 400).await;
    assert_eq!(error["type"], "invalid_request_error");
    assert_eq!(error["param"], "n");
    let mut body = question("x");
    body["logprobs"] = json!(true);
    assert_eq!(
        error_of(send(body, key).await.expect("sent"), 400).await["param"],
        "logprobs"
    );
    let mut body = question("x");
    body["tools"] = json!([{"type": "function", "function": {"name": "ocr_image"}}]);
    let error = error_of(send(body, key).await.expect("sent"), 400).await;
    assert_eq!(error["param"], "tools[0].function.name");
    let error = error_of(
        send(question(&"long ".repeat(2000)), key)
            .await
            .expect("sent"),
        413,
    )
    .await;
    assert_eq!(error["code"], "body_too_large");
    let bad_json = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth("a-client-key-of-16+")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("sent");
    assert_eq!(error_of(bad_json, 400).await["code"], "invalid_json");
    let unknown = app
        .client
        .get(app.url("/v1/nothing"))
        .bearer_auth("a-client-key-of-16+")
        .send()
        .await
        .expect("sent");
    assert_eq!(error_of(unknown, 404).await["code"], "not_found");
}

/// Opens a stream and reads its first chunk, so it certainly holds a permit.
async fn holding_stream(
    app: &TestApp,
) -> impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> {
    let response = post(app, &streamed("holder")).await;
    assert_eq!(response.status(), 200);
    let mut body = Box::pin(response.bytes_stream());
    let first = body.next().await.expect("a chunk").expect("readable");
    assert!(first.starts_with(b"data: "), "{first:?}");
    body
}

#[tokio::test]
async fn the_queue_shows_as_comments_and_its_limits_as_429_and_503() {
    let app = spawn_app_with(slow(), |c| {
        c.limits.max_concurrent_upstream = 1;
        c.limits.max_queue = 1;
        c.limits.queue_timeout_ms = 1_000;
    })
    .await;
    let _holder = holding_stream(&app).await;
    // Headers come at once, while the request waits: a front end sees the stream open.
    let waiting = post(&app, &streamed("waiting")).await;
    assert_eq!(waiting.status(), 200);
    app.wait_for_health("one waiting", |h| h["upstream"]["queue_length"] == 1)
        .await;
    let full = error_of(post(&app, &question("one too many")).await, 429).await;
    assert_eq!(full["type"], "rate_limit_error");
    assert_eq!(full["code"], "queue_full");

    // The waiting stream: a queue comment, then (past the queue timeout) an error line.
    let stream = Stream::parse(&waiting.text().await.expect("body"));
    assert!(
        stream.comments.iter().any(|c| c == "queued position=1"),
        "{:?}",
        stream.comments
    );
    assert_eq!(stream.data.len(), 2, "{:?}", stream.data);
    assert_eq!(stream.data[0]["error"]["code"], "queue_timeout");
    assert_eq!(stream.data[1], "[DONE]");

    // Without a stream, the same timeout is a 503 with Retry-After.
    let response = post(&app, &question("late")).await;
    assert!(response.headers().contains_key("retry-after"));
    let error = error_of(response, 503).await;
    assert_eq!(error["code"], "queue_timeout");
    assert_eq!(error["type"], "server_error");
}

#[tokio::test]
async fn an_upstream_failure_is_502_before_the_stream_and_an_error_line_after() {
    let app = spawn_app_with(
        MockKnobs {
            tokens: Some(5),
            fault: Some(Fault::Status(500)),
            ..MockKnobs::default()
        },
        |c| c.upstream.max_retries = 0,
    )
    .await;
    let error = error_of(post(&app, &question("fails")).await, 502).await;
    assert_eq!(error["code"], "upstream_status");

    app.mock.set_knobs(|k| k.fault = Some(Fault::CutAfter(2)));
    let (_, stream) = read_stream(&app, &streamed("cut")).await;
    assert_eq!(stream.text(), "cut#0 cut#1 ");
    let error = stream
        .data
        .iter()
        .find(|d| d.get("error").is_some())
        .expect("an error line");
    assert_eq!(error["error"]["code"], "upstream_cut");
    assert_eq!(stream.data.last(), Some(&json!("[DONE]")));
    assert!(
        stream.chunks().all(|c| c
            .pointer("/choices/0/finish_reason")
            .is_none_or(Value::is_null)),
        "a failed answer never says it finished"
    );
}

#[tokio::test]
async fn a_client_tool_call_goes_back_and_its_result_continues_the_conversation() {
    let app = spawn_app().await;
    app.mock.set_knobs(|k| k.record_requests = true);
    let tools = json!([{"type": "function", "function": {
        "name": "get_weather", "description": "today's weather",
        "parameters": {"type": "object", "properties": {"question": {"type": "string"}}},
    }}]);
    let mut body = streamed("call get_weather for Paris");
    body["tools"] = tools.clone();
    let (_, stream) = read_stream(&app, &body).await;
    let calls: Vec<&Value> = stream
        .chunks()
        .filter_map(|c| c.pointer("/choices/0/delta/tool_calls/0"))
        .collect();
    assert_eq!(calls.len(), 1, "{:?}", stream.data);
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert_eq!(calls[0]["type"], "function");
    let arguments: Value =
        serde_json::from_str(calls[0]["function"]["arguments"].as_str().expect("text"))
            .expect("JSON arguments");
    assert_eq!(arguments["question"], "call get_weather for Paris");
    let finish: Vec<&Value> = stream
        .chunks()
        .filter_map(|c| c.pointer("/choices/0/finish_reason"))
        .filter(|r| !r.is_null())
        .collect();
    assert_eq!(finish, [&json!("tool_calls")]);
    // The proxy's own tool was offered beside the client's.
    let sent = app.mock.requests();
    let offered: Vec<&str> = sent[0]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .map(|t| t["function"]["name"].as_str().expect("name"))
        .collect();
    assert_eq!(offered, ["ocr_image", "get_weather"]);

    // The next request carries the result; the model answers from it.
    let call_id = calls[0]["id"].as_str().expect("id");
    let body = json!({
        "model": "mock-model",
        "tools": tools,
        "messages": [
            {"role": "user", "content": "call get_weather for Paris"},
            {"role": "assistant", "content": "", "tool_calls": [{
                "id": call_id, "type": "function",
                "function": {"name": "get_weather", "arguments": calls[0]["function"]["arguments"]},
            }]},
            {"role": "tool", "tool_call_id": call_id, "content": "sunny, 21 C"},
        ],
    });
    let reply: Value = post(&app, &body).await.json().await.expect("JSON");
    assert_eq!(
        reply["choices"][0]["message"]["content"],
        "The tool said: sunny, 21 C. "
    );
    assert_eq!(reply["choices"][0]["finish_reason"], "stop");

    // Without a stream, the call is the message's `tool_calls`.
    let mut body = question("call get_weather for Rome");
    body["tools"] = json!([{"type": "function", "function": {"name": "get_weather"}}]);
    let reply: Value = post(&app, &body).await.json().await.expect("JSON");
    let message = &reply["choices"][0]["message"];
    assert_eq!(message["tool_calls"][0]["function"]["name"], "get_weather");
    assert_eq!(reply["choices"][0]["finish_reason"], "tool_calls");
}

#[tokio::test]
async fn the_ocr_tool_runs_on_the_server_and_the_client_sees_the_answer() {
    let app = spawn_app().await;
    let body = json!({
        "model": "mock-model", "stream": true,
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "read this"},
            {"type": "image_url", "image_url": {"url": "http://127.0.0.1:1/fund.png"}},
        ]}],
    });
    let (_, stream) = read_stream(&app, &body).await;
    assert!(
        stream
            .chunks()
            .all(|c| c.pointer("/choices/0/delta/tool_calls").is_none()),
        "the proxy's own calls are not the client's business"
    );
    // The address is refused (not public), and the model says so from the tool's result.
    assert!(
        stream.text().contains("the tool failed"),
        "{}",
        stream.text()
    );
    assert_eq!(app.mock.counters().requests.load(Ordering::Acquire), 2);
}

#[tokio::test]
async fn a_client_leaving_frees_the_permit_in_both_modes() {
    let app = spawn_app_with(slow(), |c| c.limits.max_concurrent_upstream = 1).await;
    let holder = holding_stream(&app).await;
    assert_eq!(app.mock.counters().in_flight.load(Ordering::Acquire), 1);
    drop(holder);
    app.wait_for_health("the permit back", |h| h["upstream"]["permits_in_use"] == 0)
        .await;
    wait_for_aborted(&app, 1).await;

    // Without a stream: the client gives up while the answer is being written.
    let request = tokio::spawn({
        let client = app.client.clone();
        let url = app.url("/v1/chat/completions");
        async move { client.post(url).json(&question("long")).send().await }
    });
    app.wait_for_health("a permit in use", |h| h["upstream"]["permits_in_use"] == 1)
        .await;
    request.abort();
    app.wait_for_health("the permit back", |h| h["upstream"]["permits_in_use"] == 0)
        .await;
    wait_for_aborted(&app, 2).await;
    let db = app.wait_for_rows(2).await;
    let rows = db.chat_logs().await.expect("rows");
    assert!(
        rows.iter()
            .all(|r| r.status == "cancelled" && r.api == "openai")
    );
}

#[tokio::test]
async fn routes_are_counted_by_name() {
    let app = spawn_app().await;
    post(&app, &question("counted")).await;
    get(&app, "/v1/models").await;
    let metrics = get(&app, "/metrics").await.text().await.expect("text");
    for line in [
        "chat_proxy_http_requests_total{method=\"POST\",route=\"/v1/chat/completions\",status=\"200\"} 1",
        "chat_proxy_http_requests_total{method=\"GET\",route=\"/v1/models\",status=\"200\"} 1",
    ] {
        assert!(metrics.contains(line), "{line}");
    }
}
