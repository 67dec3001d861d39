//! The built-in offline model: a small OpenAI-compatible streaming `/chat/completions` server on a
//! loopback port. `upstream.base_url = "demo"` starts it so the proxy runs with no key and no
//! network; tests and benchmarks start it with [`MockKnobs`] for latency, length and faults, and
//! read its [`MockCounters`] to see what the upstream saw.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt as _;
use bytes::Bytes;
use futures::stream;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How the mock misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this HTTP status and an OpenAI-style error body.
    Status(u16),
    /// Send this many content chunks, then close the connection without `[DONE]`.
    CutAfter(usize),
    /// Send this many content chunks, then a chunk that is not JSON.
    MalformedAfter(usize),
    /// Send this many content chunks, then go silent with the connection open.
    StallAfter(usize),
}

/// Behaviour of the mock, changeable while it runs.
#[derive(Debug, Clone)]
pub struct MockKnobs {
    /// Before the response headers and first chunk.
    pub first_chunk_delay: Duration,
    /// Between chunks.
    pub token_delay: Duration,
    /// Exactly this many content chunks, each echoing the user's last message; `None` gives
    /// the demo sentence.
    pub tokens: Option<usize>,
    pub fault: Option<Fault>,
    /// Apply `fault` to this many requests only (then behave); `None` for every request.
    pub fault_requests: Option<usize>,
    /// Keep each request body for [`MockUpstream::requests`].
    pub record_requests: bool,
    /// Size of the fragments a tool call's arguments are streamed in.
    pub tool_fragment: usize,
    /// Ask for a tool every time tools are offered (to reach the round limit).
    pub tool_loop: bool,
    /// `url_type` to put in tool calls (none: the proxy's default).
    pub tool_url_type: Option<String>,
}

impl Default for MockKnobs {
    fn default() -> Self {
        Self {
            first_chunk_delay: Duration::ZERO,
            token_delay: Duration::ZERO,
            tokens: None,
            fault: None,
            fault_requests: None,
            record_requests: false,
            tool_fragment: 7,
            tool_loop: false,
            tool_url_type: None,
        }
    }
}

/// What the mock has seen. `in_flight` counts open response streams.
#[derive(Debug, Default)]
pub struct MockCounters {
    pub requests: AtomicUsize,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    pub completed: AtomicUsize,
    /// Streams whose client (the proxy) went away before the end.
    pub aborted: AtomicUsize,
    faults_served: AtomicUsize,
}

struct Shared {
    knobs: Mutex<MockKnobs>,
    counters: MockCounters,
    recorded: Mutex<Vec<Value>>,
}

/// A running mock; dropping the handle does not stop it, [`MockUpstream::stop`] does.
#[derive(Clone)]
pub struct MockUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl MockUpstream {
    /// Starts the server on `127.0.0.1:0`.
    pub async fn start(knobs: MockKnobs) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            knobs: Mutex::new(knobs),
            counters: MockCounters::default(),
            recorded: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .with_state(shared.clone());
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await;
            if let Err(err) = served {
                tracing::error!(error = %err, "demo model server failed");
            }
        });
        Ok(Self { addr, shared, stop })
    }

    /// API root to put in `upstream.base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn counters(&self) -> &MockCounters {
        &self.shared.counters
    }

    pub fn set_knobs(&self, update: impl FnOnce(&mut MockKnobs)) {
        update(&mut self.shared.knobs.lock().expect("knobs lock"));
    }

    /// Bodies received, when `record_requests` is on.
    pub fn requests(&self) -> Vec<Value> {
        self.shared.recorded.lock().expect("recorded lock").clone()
    }

    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// Decrements `in_flight` when the response stream ends or is dropped, and tells which.
struct InFlight {
    shared: Arc<Shared>,
    completed: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let counters = &self.shared.counters;
        counters.in_flight.fetch_sub(1, Ordering::AcqRel);
        if self.completed {
            counters.completed.fetch_add(1, Ordering::AcqRel);
        } else {
            counters.aborted.fetch_add(1, Ordering::AcqRel);
        }
    }
}

async fn chat_completions(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let counters = &shared.counters;
    counters.requests.fetch_add(1, Ordering::AcqRel);
    let now = counters.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
    counters.max_in_flight.fetch_max(now, Ordering::AcqRel);
    let mut guard = InFlight {
        shared: shared.clone(),
        completed: false,
    };

    let knobs = shared.knobs.lock().expect("knobs lock").clone();
    let request: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(err) => return error_response(400, &format!("invalid JSON: {err}")),
    };
    if knobs.record_requests {
        shared
            .recorded
            .lock()
            .expect("recorded lock")
            .push(request.clone());
    }
    let fault = knobs.fault.filter(|_| match knobs.fault_requests {
        None => true,
        Some(limit) => counters.faults_served.fetch_add(1, Ordering::AcqRel) < limit,
    });

    tokio::time::sleep(knobs.first_chunk_delay).await;
    if let Some(Fault::Status(status)) = fault {
        guard.completed = true;
        return error_response(status, "the demo model was told to fail");
    }

    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("demo")
        .to_owned();
    let include_usage = request
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let question = last_user_text(&request);
    let prompt_tokens = question.split_whitespace().count() as u64;
    let offered_tools = request
        .get("tools")
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty());
    let last_role = request
        .pointer("/messages")
        .and_then(Value::as_array)
        .and_then(|m| m.last())
        .and_then(|m| m.get("role"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let urls = image_urls(&request);
    let frames = if offered_tools && (knobs.tool_loop || (last_role == "user" && !urls.is_empty()))
    {
        tool_call_frames(&model, &urls, &knobs, include_usage)
    } else if last_role == "tool" {
        let pieces = tool_answer_pieces(&request);
        build_frames(&model, &pieces, prompt_tokens, include_usage, fault)
    } else {
        let pieces = reply_pieces(&question, knobs.tokens);
        build_frames(&model, &pieces, prompt_tokens, include_usage, fault)
    };

    let token_delay = knobs.token_delay;
    let body = stream::unfold(
        (frames.into_iter(), guard, true),
        move |(mut frames, mut guard, first)| async move {
            let frame = frames.next()?;
            // Only content is paced: the finish, usage and `[DONE]` frames follow at once, as
            // real APIs send them.
            if !first && !token_delay.is_zero() && matches!(frame, Frame::Content(_)) {
                tokio::time::sleep(token_delay).await;
            }
            match frame {
                Frame::Content(bytes) | Frame::Data(bytes) => {
                    if frames.len() == 0 {
                        guard.completed = true;
                    }
                    Some((Ok::<_, Infallible>(bytes), (frames, guard, false)))
                }
                Frame::Stall => {
                    std::future::pending::<()>().await;
                    None
                }
                Frame::Cut => {
                    // Counted as complete: the mock chose to end it, the proxy did not leave.
                    guard.completed = true;
                    drop(guard);
                    None
                }
            }
        },
    );
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .expect("static headers are valid")
}

enum Frame {
    /// An answer chunk, sent `token_delay` after the previous one.
    Content(Bytes),
    /// Anything else, sent at once.
    Data(Bytes),
    Stall,
    Cut,
}

fn build_frames(
    model: &str,
    pieces: &[String],
    prompt_tokens: u64,
    include_usage: bool,
    fault: Option<Fault>,
) -> Vec<Frame> {
    let id = format!("chatcmpl-demo-{}", uuid::Uuid::new_v4().simple());
    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": id, "object": "chat.completion.chunk", "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    };
    let data = |value: &Value| Frame::Data(Bytes::from(format!("data: {value}\n\n")));
    let stop_after = match fault {
        Some(Fault::CutAfter(n) | Fault::MalformedAfter(n) | Fault::StallAfter(n)) => Some(n),
        _ => None,
    };
    let mut frames = Vec::with_capacity(pieces.len() + 3);
    for (i, piece) in pieces.iter().enumerate() {
        if stop_after == Some(i) {
            break;
        }
        let delta = if i == 0 {
            json!({"role": "assistant", "content": piece})
        } else {
            json!({"content": piece})
        };
        frames.push(Frame::Content(Bytes::from(format!(
            "data: {}\n\n",
            chunk(delta, Value::Null)
        ))));
    }
    match fault {
        Some(Fault::CutAfter(_)) => {
            frames.push(Frame::Cut);
            return frames;
        }
        Some(Fault::MalformedAfter(_)) => {
            frames.push(Frame::Data(Bytes::from_static(
                b"data: {\"choices\": [\n\n",
            )));
            return frames;
        }
        Some(Fault::StallAfter(_)) => {
            frames.push(Frame::Stall);
            return frames;
        }
        _ => {}
    }
    frames.push(data(&chunk(json!({}), json!("stop"))));
    if include_usage {
        let completion = pieces.len() as u64;
        frames.push(data(&json!({
            "id": id, "object": "chat.completion.chunk", "model": model, "choices": [],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion,
                "total_tokens": prompt_tokens + completion,
            },
        })));
    }
    frames.push(Frame::Data(Bytes::from_static(b"data: [DONE]\n\n")));
    frames
}

/// Image links in the last `user` message: URLs in its text and its `image_url` parts.
fn image_urls(request: &Value) -> Vec<String> {
    static URL: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r#"https?://[^\s"'<>)]+"#).expect("valid regex")
    });
    let Some(message) = request
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| {
            m.iter()
                .rev()
                .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        })
    else {
        return Vec::new();
    };
    let mut urls: Vec<String> = URL
        .find_iter(&last_user_text(request))
        .map(|m| m.as_str().to_owned())
        .collect();
    if let Some(parts) = message.get("content").and_then(Value::as_array) {
        urls.extend(
            parts
                .iter()
                .filter_map(|p| p.pointer("/image_url/url").and_then(Value::as_str))
                .map(str::to_owned),
        );
    }
    urls
}

/// A streamed answer that calls `ocr_image` once per URL: the first call shares its chunk
/// with some content, arguments come in `tool_fragment`-sized pieces, and the calls are
/// interleaved by `index`.
fn tool_call_frames(
    model: &str,
    urls: &[String],
    knobs: &MockKnobs,
    include_usage: bool,
) -> Vec<Frame> {
    let id = format!("chatcmpl-demo-{}", uuid::Uuid::new_v4().simple());
    let urls: Vec<String> = if urls.is_empty() {
        vec!["http://127.0.0.1:1/none.png".to_owned()]
    } else {
        urls.to_vec()
    };
    let chunk = |delta: Value, finish: Value| {
        let value = json!({
            "id": id, "object": "chat.completion.chunk", "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        Frame::Content(Bytes::from(format!("data: {value}\n\n")))
    };
    let arguments: Vec<String> = urls
        .iter()
        .map(|url| {
            let mut args = json!({"image_url": url});
            if let Some(url_type) = &knobs.tool_url_type {
                args["url_type"] = json!(url_type);
            }
            args.to_string()
        })
        .collect();
    let mut frames = Vec::new();
    for (i, _) in arguments.iter().enumerate() {
        let call = json!([{"index": i, "id": format!("call_{i}_{}", uuid::Uuid::new_v4().simple()),
            "type": "function", "function": {"name": "ocr_image", "arguments": ""}}]);
        let delta = if i == 0 {
            json!({"role": "assistant", "content": "Let me read that. ", "tool_calls": call})
        } else {
            json!({"tool_calls": call})
        };
        frames.push(chunk(delta, Value::Null));
    }
    let size = knobs.tool_fragment.max(1);
    let pieces: Vec<Vec<String>> = arguments
        .iter()
        .map(|a| {
            a.chars()
                .collect::<Vec<_>>()
                .chunks(size)
                .map(|c| c.iter().collect())
                .collect()
        })
        .collect();
    let longest = pieces.iter().map(Vec::len).max().unwrap_or(0);
    for k in 0..longest {
        for (i, call_pieces) in pieces.iter().enumerate() {
            if let Some(piece) = call_pieces.get(k) {
                let delta = json!({"tool_calls": [{"index": i, "function": {"arguments": piece}}]});
                frames.push(chunk(delta, Value::Null));
            }
        }
    }
    let tail = |value: Value| Frame::Data(Bytes::from(format!("data: {value}\n\n")));
    frames.push(tail(json!({
        "id": id, "object": "chat.completion.chunk", "model": model,
        "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}],
    })));
    if include_usage {
        frames.push(tail(json!({
            "id": id, "object": "chat.completion.chunk", "model": model, "choices": [],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        })));
    }
    frames.push(Frame::Data(Bytes::from_static(b"data: [DONE]\n\n")));
    frames
}

/// The answer after tool results: each fund the tools found, or what failed.
fn tool_answer_pieces(request: &Value) -> Vec<String> {
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let since = messages
        .iter()
        .rposition(|m| m.get("role").and_then(Value::as_str) == Some("assistant"))
        .map_or(0, |i| i + 1);
    let mut text = String::from("From the screenshot: ");
    for message in &messages[since..] {
        let content = message.get("content").and_then(Value::as_str).unwrap_or("");
        let result: Value = serde_json::from_str(content).unwrap_or(Value::Null);
        if result["ok"] == true {
            for fund in result["funds"].as_array().into_iter().flatten() {
                text.push_str(&format!(
                    "fund {} holds {} shares. ",
                    fund["fund_code"].as_str().unwrap_or("?"),
                    fund["hold_share"].as_str().unwrap_or("?")
                ));
            }
        } else {
            text.push_str(&format!(
                "the tool failed: {}. ",
                result
                    .pointer("/error/code")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown")
            ));
        }
    }
    text.split_inclusive(' ').map(str::to_owned).collect()
}

/// Text of the last `user` message (string content, or the text parts of an array).
fn last_user_text(request: &Value) -> String {
    let Some(messages) = request.get("messages").and_then(Value::as_array) else {
        return String::new();
    };
    let Some(content) = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .and_then(|m| m.get("content"))
    else {
        return String::new();
    };
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The answer, one chunk a word. With `tokens`, exactly that many chunks, each echoing the
/// question, so a test can tell one request's answer from another's by any single chunk.
fn reply_pieces(question: &str, tokens: Option<usize>) -> Vec<String> {
    let question = question.trim();
    match tokens {
        Some(n) => (0..n).map(|i| format!("{question}#{i} ")).collect(),
        None => {
            let text = format!(
                "This is chat-proxy's offline demo model. You asked: \u{201c}{question}\u{201d}. \
                 Point upstream.base_url at a real OpenAI-compatible API to get real answers."
            );
            text.split_inclusive(' ').map(str::to_owned).collect()
        }
    }
}

fn error_response(status: u16, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({"error": {"message": message, "type": "demo_fault"}});
    (status, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_echoes_question_in_every_chunk_when_counted() {
        let pieces = reply_pieces("nonce-42", Some(3));
        assert_eq!(pieces, vec!["nonce-42#0 ", "nonce-42#1 ", "nonce-42#2 "]);
        let demo = reply_pieces("hi", None).concat();
        assert!(demo.contains("You asked: \u{201c}hi\u{201d}"));
    }

    #[test]
    fn faults_shape_the_frames() {
        let pieces = reply_pieces("q", Some(5));
        let frames = build_frames("m", &pieces, 1, true, Some(Fault::CutAfter(2)));
        assert_eq!(frames.len(), 3);
        assert!(matches!(frames[2], Frame::Cut));
        let frames = build_frames("m", &pieces, 1, true, None);
        // 5 content, finish, usage, [DONE]
        assert_eq!(frames.len(), 8);
    }
}
