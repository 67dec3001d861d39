//! `POST /answer`: parse the body, hand it to the [`AnswerService`](crate::answer::AnswerService),
//! and write its events as named Server-Sent Events or collect them into one JSON.

use std::net::SocketAddr;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

use crate::answer::request::AnswerBody;
use crate::answer::{AnswerEvent, AnswerEvents, AnswerRequest, Caller, Timings};
use crate::auth::ClientKeyId;
use crate::config::ms;
use crate::error::{ApiError, ErrorBody};
use crate::routes::read_body;
use crate::routes::request_id::RequestId;
use crate::routes::sse::{self, NamedEvents};
use crate::state::AppState;
use crate::upstream::wire::Usage;

/// `stream: false`: the whole answer at once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AnswerReply {
    pub request_id: String,
    pub reply: String,
    /// `stop`, `length`, ... as the model said; null if it gave none.
    pub finish_reason: Option<String>,
    /// Token counts, when the upstream reports them.
    pub usage: Option<Usage>,
    pub timings: Timings,
    /// Each tool call the model made, with its result.
    pub tool_calls: Vec<Value>,
}

/// One Server-Sent Event of an answer stream, as a client parses it.
#[derive(Debug, utoipa::ToSchema)]
#[expect(
    dead_code,
    reason = "the spec's view of an event; `routes::sse` writes them"
)]
pub struct AnswerStreamEvent {
    event: AnswerEventName,
    /// A JSON object: `meta` {request_id, model}, `queued` {position}, `delta` {content},
    /// `tool_call` {id, name, arguments}, `tool_result` {id, name, ok, ...}, `done`
    /// {finish_reason, usage, timings}, `error` {code, message}.
    #[schema(content_media_type = "application/json")]
    data: String,
}

#[derive(Debug, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AnswerEventName {
    Meta,
    Queued,
    Delta,
    ToolCall,
    ToolResult,
    Done,
    Error,
}

/// Stream the model's answer to a question or chat history.
#[utoipa::path(
    post,
    path = "/answer",
    tag = "answer",
    request_body(content = AnswerBody, content_type = "application/json"),
    responses(
        (status = 200, description = "With `stream: true` (the default), Server-Sent Events: `meta` \
            {request_id, model}; `queued` {position} while waiting for a permit; `delta` {content}; \
            `tool_call` and `tool_result` when the model uses OCR; then `done` {finish_reason, usage, \
            timings} or `error` {code, message}. With `stream: false`, one JSON answer.",
            content(
                (AnswerStreamEvent = "text/event-stream"),
                (AnswerReply = "application/json"),
            )),
        (status = 400, description = "Invalid JSON or fields; the message names the field", body = ErrorBody),
        (status = 401, description = "Missing or wrong client API key", body = ErrorBody),
        (status = 403, description = "From a web page of another origin (`origin_not_allowed`)", body = ErrorBody),
        (status = 413, description = "Body larger than `server.max_body_bytes`", body = ErrorBody),
        (status = 408, description = "The body did not arrive within `server.body_read_timeout_ms` (`body_timeout`)", body = ErrorBody),
        (status = 429, description = "Queue full, or a per-client limit; see Retry-After", body = ErrorBody),
        (status = 502, description = "The upstream failed before anything was streamed (`stream: false`)", body = ErrorBody),
        (status = 503, description = "Shutting down, no permit within `limits.queue_timeout_ms`, or the shared permit pool unreachable (`cluster_unavailable`)", body = ErrorBody),
        (status = 504, description = "The upstream timed out (`stream: false`)", body = ErrorBody),
    ),
    security((), ("client_key" = [])),
)]
pub async fn answer(
    State(state): State<AppState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    client_key: Option<Extension<ClientKeyId>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let received = Instant::now();
    let body = read_body(body, state.config.server.max_body_bytes)?;
    let request = AnswerRequest::parse(&body, &state.config.limits)?;
    let stream = request.stream;
    let events = state
        .answers
        .start(request_id, request, caller(client_key, peer), received)
        .await?;
    if stream {
        let keep_alive = ms(state.config.server.keepalive_ms);
        Ok(sse::response(NamedEvents, events, keep_alive))
    } else {
        collect(events).await
    }
}

/// Who asks: the request's client key, else its peer address.
pub fn caller(
    client_key: Option<Extension<ClientKeyId>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> Caller {
    Caller {
        key: client_key.map(|Extension(key)| key),
        address: peer.map(|Extension(ConnectInfo(addr))| addr.ip()),
    }
}

/// `stream: false`: wait for the end and answer with one JSON, or the error's own status.
async fn collect(mut rx: AnswerEvents) -> Result<Response, ApiError> {
    let mut request_id = String::new();
    let mut reply = String::new();
    while let Some(event) = rx.recv().await {
        match event {
            AnswerEvent::Meta(meta) => request_id = meta.request_id,
            AnswerEvent::Queued { .. }
            | AnswerEvent::ToolCall(_)
            | AnswerEvent::ToolResult(_)
            | AnswerEvent::ClientToolCalls(_) => {}
            AnswerEvent::Delta(text) => reply.push_str(&text),
            AnswerEvent::Done(done) => {
                let body = AnswerReply {
                    request_id,
                    reply,
                    finish_reason: done.finish_reason,
                    usage: done.usage,
                    timings: done.timings,
                    tool_calls: done.tool_calls,
                };
                return Ok((StatusCode::OK, Json(body)).into_response());
            }
            AnswerEvent::Failed(err) => return Err(ApiError::from(&*err)),
        }
    }
    Err(ApiError::answer_cut_short())
}
