//! The OpenAI-compatible API: `POST /v1/chat/completions`, `GET /v1/models` and
//! `GET /v1/models/{id}` (and the same paths without `/v1`), so chat front ends and the `openai`
//! SDKs work by changing a base URL. A second front door over the same exchange as `/answer`:
//! the body is read in OpenAI's terms ([`request`]), handed to the
//! [`AnswerService`](crate::answer::AnswerService), and its events are written as OpenAI's
//! chunks ([`chunks`]) or one `chat.completion` ([`completion`]); errors in OpenAI's shape
//! ([`errors`]). The tool fields are read in `tools`.

pub mod chunks;
pub mod completion;
pub mod errors;
pub mod request;
mod tools;

use std::net::SocketAddr;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Extension, Path, State};
use axum::response::Response;
use serde::Serialize;
use tokio::time::Instant;

use crate::answer::{AdmissionError, ModelRoute};
use crate::auth::ClientKeyId;
use crate::config::ms;
use crate::error::ApiError;
use crate::routes::answer::caller;
use crate::routes::read_body;
use crate::routes::request_id::RequestId;
use crate::routes::sse;
use crate::state::AppState;

use chunks::ChunkEncoder;
use completion::{ChatCompletion, CompletionHead};
use errors::OpenAiErrorBody;
use request::ChatCompletionBody;

/// One chunk of a streamed completion, as the OpenAPI description shows it: a `data:` line
/// holding a `chat.completion.chunk` (or an `error`), the last one `data: [DONE]`.
#[derive(Debug, utoipa::ToSchema)]
#[expect(dead_code, reason = "the spec's view of a chunk; `chunks` writes them")]
pub struct ChatCompletionChunkEvent {
    /// `{"id", "object": "chat.completion.chunk", "created", "model", "choices": [{"index",
    /// "delta", "finish_reason"}]}`, or `{"error": {...}}`, or `[DONE]`.
    data: String,
}

/// Chat completion in OpenAI's shape, queued for a permit like every answer.
#[utoipa::path(
    post,
    path = "/v1/chat/completions",
    tag = "openai",
    request_body(content = ChatCompletionBody, content_type = "application/json"),
    responses(
        (status = 200, description = "With `stream: true`, Server-Sent Events: `data:` lines of \
            `chat.completion.chunk` objects, the last `data: [DONE]`; comment lines (`: queued \
            position=N`, `: keep-alive`) while waiting. A failure after the stream began is a \
            `data: {\"error\": {...}}` line before `[DONE]`. Otherwise one `chat.completion`.",
            content(
                (ChatCompletionChunkEvent = "text/event-stream"),
                (ChatCompletion = "application/json"),
            )),
        (status = 400, description = "Invalid or unsupported field, named in `param`", body = OpenAiErrorBody),
        (status = 401, description = "Missing or wrong API key", body = OpenAiErrorBody),
        (status = 403, description = "From a web page of another origin", body = OpenAiErrorBody),
        (status = 404, description = "Unknown model (`model_not_found`)", body = OpenAiErrorBody),
        (status = 408, description = "The body did not arrive within `server.body_read_timeout_ms`", body = OpenAiErrorBody),
        (status = 413, description = "Body larger than `server.max_body_bytes`", body = OpenAiErrorBody),
        (status = 429, description = "Queue full, or a per-client limit; see Retry-After", body = OpenAiErrorBody),
        (status = 502, description = "The upstream failed (`stream: false`)", body = OpenAiErrorBody),
        (status = 503, description = "Shutting down, no permit within `limits.queue_timeout_ms` (`stream: false`), or the shared permit pool unreachable (`cluster_unavailable`)", body = OpenAiErrorBody),
        (status = 504, description = "The upstream timed out (`stream: false`)", body = OpenAiErrorBody),
    ),
    security((), ("client_key" = [])),
)]
pub async fn chat_completions(
    State(state): State<AppState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    client_key: Option<Extension<ClientKeyId>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let received = Instant::now();
    let body = read_body(body, state.config.server.max_body_bytes)?;
    let (request, options) = request::parse(&body, &state.config.limits)?;
    let stream = request.stream;
    let head = CompletionHead {
        id: format!("chatcmpl-{request_id}"),
        created: chrono::Utc::now().timestamp(),
        model: request.model.clone().unwrap_or_default(),
    };
    let events = state
        .answers
        .start(request_id, request, caller(client_key, peer), received)
        .await?;
    if stream {
        let encoder = ChunkEncoder::new(&head.id, head.created, &head.model, options.include_usage);
        let keep_alive = ms(state.config.server.keepalive_ms);
        Ok(sse::response(encoder, events, keep_alive))
    } else {
        completion::collect(head, events).await
    }
}

/// `GET /v1/models`: `{"object": "list", "data": [model, ...]}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelList {
    /// Always `list`.
    object: &'static str,
    data: Vec<Model>,
}

/// A model clients may ask for, as OpenAI describes one.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Model {
    id: String,
    /// Always `model`.
    object: &'static str,
    /// When this instance started (Unix seconds).
    created: i64,
    /// Always `chat-proxy`.
    owned_by: &'static str,
}

impl Model {
    fn new(route: &ModelRoute, created: i64) -> Self {
        Self {
            id: route.name.to_string(),
            object: "model",
            created,
            owned_by: "chat-proxy",
        }
    }
}

/// The models of `upstream.models`, by the names clients use.
#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "openai",
    responses(
        (status = 200, description = "The models", body = ModelList),
        (status = 401, description = "Missing or wrong API key", body = OpenAiErrorBody),
        (status = 403, description = "From a web page of another origin", body = OpenAiErrorBody),
    ),
    security((), ("client_key" = [])),
)]
pub async fn list_models(State(state): State<AppState>) -> Json<ModelList> {
    let models = state.answers.models();
    Json(ModelList {
        object: "list",
        data: models
            .routes()
            .iter()
            .map(|route| Model::new(route, models.created()))
            .collect(),
    })
}

/// One model, by the name clients use (it may hold a `/`).
#[utoipa::path(
    get,
    path = "/v1/models/{id}",
    tag = "openai",
    params(("id" = String, Path, description = "A model's name, as `GET /v1/models` lists it")),
    responses(
        (status = 200, description = "The model", body = Model),
        (status = 401, description = "Missing or wrong API key", body = OpenAiErrorBody),
        (status = 403, description = "From a web page of another origin", body = OpenAiErrorBody),
        (status = 404, description = "No such model (`model_not_found`)", body = OpenAiErrorBody),
    ),
    security((), ("client_key" = [])),
)]
pub async fn get_model(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Model>, ApiError> {
    let models = state.answers.models();
    let route = models
        .find(&id)
        .ok_or_else(|| ApiError::from(AdmissionError::UnknownModel(id.clone())))?;
    Ok(Json(Model::new(route, models.created())))
}
