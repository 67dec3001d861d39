//! The OpenAI-compatible wire format: what the proxy sends to `/chat/completions` and the
//! streamed chunks it reads back.

use std::sync::Arc;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Body of `POST {base_url}/chat/completions`.
#[derive(Debug, Clone, Serialize)]
pub struct ChatCompletionRequest<'a> {
    pub model: &'a str,
    pub messages: &'a [UpstreamMessage],
    pub stream: bool,
    pub stream_options: StreamOptions,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// The client's sampling and output options (`temperature`, `max_tokens`, ...). Only names
    /// the request parser let through are here, so none collides with the fields above.
    #[serde(flatten)]
    pub options: &'a Map<String, Value>,
}

/// What one request asks of the upstream besides its messages and tools.
#[derive(Debug, Clone, Copy)]
pub struct CallOptions<'a> {
    /// The model name sent upstream.
    pub model: &'a str,
    /// Sent only with tools.
    pub tool_choice: Option<&'a Value>,
    /// Sent only with tools.
    pub parallel_tool_calls: Option<bool>,
    pub options: &'a Map<String, Value>,
}

/// One message of the conversation sent upstream.
#[derive(Debug, Clone)]
pub enum UpstreamMessage {
    /// Serialised once and sent with many requests (the tools' system prompt of the day): a
    /// request copies its text instead of building and escaping it again.
    Shared(Arc<RawValue>),
    /// The request's own: the client's messages, tool calls and their results.
    Own(Value),
}

impl Serialize for UpstreamMessage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Shared(raw) => raw.serialize(serializer),
            Self::Own(value) => value.serialize(serializer),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct StreamOptions {
    pub include_usage: bool,
}

/// One `data:` payload of the upstream's stream.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ChatCompletionChunk {
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    #[serde(default)]
    pub usage: Option<Usage>,
    /// Some servers report a failure inside the stream instead of with a status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ChunkChoice {
    #[serde(default)]
    pub index: u32,
    #[serde(default)]
    pub delta: ChunkDelta,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ChunkDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

/// A fragment of a streamed tool call; fragments with the same `index` add up to one call.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ToolCallDelta {
    #[serde(default)]
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionDelta>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct FunctionDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
}
