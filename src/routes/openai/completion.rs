//! A `/v1/chat/completions` request with `stream: false`: the exchange's events collected into
//! one `chat.completion` object. Waiting in the queue, timeouts, cancellation (the client
//! leaving drops the receiver) and logging are the exchange's, exactly as for a stream.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

use crate::answer::{AnswerEvent, AnswerEvents};
use crate::error::ApiError;
use crate::upstream::wire::Usage;

/// One whole answer, as OpenAI's `chat.completion`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChatCompletion {
    pub id: String,
    /// Always `chat.completion`.
    pub object: &'static str,
    pub created: i64,
    pub model: String,
    pub choices: Vec<Choice>,
    /// Token counts, when the upstream reports them.
    pub usage: Option<Usage>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Choice {
    pub index: u32,
    pub message: AssistantMessage,
    #[schema(value_type = Option<Object>)]
    pub logprobs: Option<Value>,
    /// `stop`, `length`, `tool_calls`, ... as the model said.
    pub finish_reason: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AssistantMessage {
    /// Always `assistant`.
    pub role: &'static str,
    /// Null when the model only called tools.
    pub content: Option<String>,
    /// The model's calls to the client's own tools: `[{id, type: "function", function: {name,
    /// arguments}}]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub tool_calls: Option<Vec<Value>>,
}

/// The head every object of one completion shares.
pub struct CompletionHead {
    pub id: String,
    pub created: i64,
    pub model: String,
}

/// Waits for the end of the exchange and answers with one object, or the error's own status.
pub async fn collect(head: CompletionHead, mut rx: AnswerEvents) -> Result<Response, ApiError> {
    let mut text = String::new();
    let mut tool_calls = None;
    while let Some(event) = rx.recv().await {
        match event {
            AnswerEvent::Meta(_)
            | AnswerEvent::Queued { .. }
            | AnswerEvent::ToolCall(_)
            | AnswerEvent::ToolResult(_) => {}
            AnswerEvent::Delta(piece) => text.push_str(&piece),
            AnswerEvent::ClientToolCalls(calls) => {
                tool_calls = Some(
                    calls
                        .iter()
                        .map(|call| {
                            json!({
                                "id": call.id, "type": "function",
                                "function": {"name": call.name, "arguments": call.arguments},
                            })
                        })
                        .collect(),
                );
            }
            AnswerEvent::Done(done) => {
                let content = (!text.is_empty() || tool_calls.is_none()).then_some(text);
                let body = ChatCompletion {
                    id: head.id,
                    object: "chat.completion",
                    created: head.created,
                    model: head.model,
                    choices: vec![Choice {
                        index: 0,
                        message: AssistantMessage {
                            role: "assistant",
                            content,
                            tool_calls,
                        },
                        logprobs: None,
                        finish_reason: done.finish_reason.unwrap_or_else(|| "stop".to_owned()),
                    }],
                    usage: done.usage,
                };
                return Ok((StatusCode::OK, Json(body)).into_response());
            }
            AnswerEvent::Failed(err) => return Err(ApiError::from(&*err)),
        }
    }
    Err(ApiError::answer_cut_short())
}
