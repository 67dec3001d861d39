//! The built-in offline model: a small OpenAI-compatible streaming `/chat/completions` server on a
//! loopback port. `upstream.base_url = "demo"` starts it so the proxy runs with no key and no
//! network; tests and benchmarks start it with [`MockKnobs`] for latency and length.
//!
//! What only tests use is behind the `mock-faults` cargo feature, which the test and benchmark
//! builds turn on (a dev-dependency of the crate on itself) and a release build leaves out: the
//! faults, recording requests, changing the knobs while it runs, and reading its counters.
//! A production binary cannot be made to inject a fault.

mod replies;

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
use replies::{
    Frame, build_frames, client_tool_call, image_urls, last_user_text, ocr_calls, reply_pieces,
    tool_answer_pieces, tool_call_frames,
};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::lifecycle::Lifecycle;

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
    #[cfg(feature = "mock-faults")]
    pub fault: Option<Fault>,
    /// Apply `fault` to this many requests only (then behave); `None` for every request.
    #[cfg(feature = "mock-faults")]
    pub fault_requests: Option<usize>,
    /// Keep each request body for `MockUpstream::requests`.
    #[cfg(feature = "mock-faults")]
    pub record_requests: bool,
    /// `Retry-After` seconds sent with a `Fault::Status` answer.
    #[cfg(feature = "mock-faults")]
    pub retry_after_s: Option<u64>,
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
            #[cfg(feature = "mock-faults")]
            fault: None,
            #[cfg(feature = "mock-faults")]
            fault_requests: None,
            #[cfg(feature = "mock-faults")]
            record_requests: false,
            #[cfg(feature = "mock-faults")]
            retry_after_s: None,
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
    #[cfg(feature = "mock-faults")]
    faults_served: AtomicUsize,
}

struct Shared {
    knobs: Mutex<MockKnobs>,
    counters: MockCounters,
    #[cfg(feature = "mock-faults")]
    recorded: Mutex<Vec<Value>>,
}

/// A running mock; dropping the handle does not stop it, [`MockUpstream::stop`] does.
#[derive(Clone)]
pub struct MockUpstream {
    addr: SocketAddr,
    #[cfg(feature = "mock-faults")]
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl MockUpstream {
    /// Starts the server on `127.0.0.1:0`, as a service of `lifecycle`.
    pub async fn start(knobs: MockKnobs, lifecycle: &Lifecycle) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            knobs: Mutex::new(knobs),
            counters: MockCounters::default(),
            #[cfg(feature = "mock-faults")]
            recorded: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .with_state(shared.clone());
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        lifecycle.spawn_service(async move {
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
        Ok(Self {
            addr,
            #[cfg(feature = "mock-faults")]
            shared,
            stop,
        })
    }

    /// API root to put in `upstream.base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    #[cfg(feature = "mock-faults")]
    pub fn counters(&self) -> &MockCounters {
        &self.shared.counters
    }

    #[cfg(feature = "mock-faults")]
    pub fn set_knobs(&self, update: impl FnOnce(&mut MockKnobs)) {
        update(&mut self.shared.knobs.lock().expect("knobs lock"));
    }

    /// Bodies received, when `record_requests` is on.
    #[cfg(feature = "mock-faults")]
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
    #[cfg(feature = "mock-faults")]
    if knobs.record_requests {
        shared
            .recorded
            .lock()
            .expect("recorded lock")
            .push(request.clone());
    }
    let question = last_user_text(&request);
    #[cfg(feature = "mock-faults")]
    let knobs = with_markers(knobs, &question);
    let fault = fault_for(&knobs, counters);

    tokio::time::sleep(knobs.first_chunk_delay).await;
    if let Some(Fault::Status(status)) = fault {
        guard.completed = true;
        return with_retry_after(
            error_response(status, "the demo model was told to fail"),
            &knobs,
        );
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
    let client_call = client_tool_call(&request, &question).filter(|_| last_role == "user");
    let frames = if let Some(call) = client_call {
        tool_call_frames(&model, &[call], &knobs, include_usage)
    } else if offered_tools && (knobs.tool_loop || (last_role == "user" && !urls.is_empty())) {
        tool_call_frames(&model, &ocr_calls(&urls, &knobs), &knobs, include_usage)
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

/// The fault this request gets, if the knobs ask for one and it is within `fault_requests`.
#[cfg(feature = "mock-faults")]
fn fault_for(knobs: &MockKnobs, counters: &MockCounters) -> Option<Fault> {
    knobs.fault.filter(|_| match knobs.fault_requests {
        None => true,
        Some(limit) => counters.faults_served.fetch_add(1, Ordering::AcqRel) < limit,
    })
}

/// A question may ask the mock for its own behaviour, so one load mixes many: `fault:status:503`,
/// `fault:cut:3`, `fault:malformed:2`, `fault:stall:2` (the fault, for this request only) and
/// `tokens:N` (the answer's length).
#[cfg(feature = "mock-faults")]
fn with_markers(mut knobs: MockKnobs, question: &str) -> MockKnobs {
    for word in question.split_whitespace() {
        let mut parts = word.split(':');
        let (Some(kind), Some(arg)) = (parts.next(), parts.next()) else {
            continue;
        };
        let number = |s: Option<&str>| s.and_then(|n| n.parse::<usize>().ok());
        match (kind, arg) {
            ("tokens", n) => knobs.tokens = number(Some(n)).or(knobs.tokens),
            ("fault", what) => {
                let n = number(parts.next()).unwrap_or(0);
                let fault = match what {
                    "status" => u16::try_from(n).ok().map(Fault::Status),
                    "cut" => Some(Fault::CutAfter(n)),
                    "malformed" => Some(Fault::MalformedAfter(n)),
                    "stall" => Some(Fault::StallAfter(n)),
                    _ => None,
                };
                if fault.is_some() {
                    knobs.fault = fault;
                    knobs.fault_requests = None;
                }
            }
            _ => {}
        }
    }
    knobs
}

/// Without `mock-faults`, the model always behaves.
#[cfg(not(feature = "mock-faults"))]
fn fault_for(_: &MockKnobs, _: &MockCounters) -> Option<Fault> {
    None
}

/// The `Retry-After` the knobs ask for, on a fault's answer.
#[cfg(feature = "mock-faults")]
fn with_retry_after(mut response: Response, knobs: &MockKnobs) -> Response {
    if let Some(seconds) = knobs.retry_after_s {
        response
            .headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from(seconds));
    }
    response
}

#[cfg(not(feature = "mock-faults"))]
fn with_retry_after(response: Response, _: &MockKnobs) -> Response {
    response
}

fn error_response(status: u16, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({"error": {"message": message, "type": "demo_fault"}});
    (status, axum::Json(body)).into_response()
}
