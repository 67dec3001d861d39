//! What an exchange reports: the events its client is sent, in order, and the outcome handed
//! to the log writer at its end.

use serde::Serialize;
use serde_json::Value;

use crate::upstream::wire::Usage;

use super::error::ExchangeError;
use super::tools::ToolCall;

/// What the client is told, in order: `Meta`, maybe `Queued`, `Delta`s, then `Done` or `Failed`.
/// The events say nothing of a protocol: each front door writes them in its own wire form.
/// All but `Delta` and `Queued` are boxed: the client's queue holds each event at the size of
/// the largest variant, and most events are deltas.
#[derive(Debug, Clone)]
pub enum AnswerEvent {
    Meta(Box<Meta>),
    Queued {
        position: usize,
    },
    Delta(String),
    ToolCall(Box<ToolCall>),
    ToolResult(Box<Value>),
    /// The model called the client's own tools: the answer ends with these calls (then `Done`
    /// with `finish_reason: "tool_calls"`).
    ClientToolCalls(Box<Vec<ToolCall>>),
    Done(Box<DoneInfo>),
    Failed(Box<ExchangeError>),
}

/// The first event of every stream.
#[derive(Debug, Clone, Serialize)]
pub struct Meta {
    pub request_id: String,
    /// The model's configured name (`demo` for the built-in model).
    pub model: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DoneInfo {
    pub finish_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    pub timings: Timings,
    /// Each tool call with its result, for `stream: false` (streams saw them as events).
    #[serde(skip)]
    pub tool_calls: Vec<Value>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, utoipa::ToSchema)]
pub struct Timings {
    /// Waiting for a permit.
    pub queue_ms: u64,
    /// From the request's arrival to the first answer text; `None` if none came.
    pub ttft_ms: Option<u64>,
    pub total_ms: u64,
}

/// How an exchange ended, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExchangeStatus {
    Ok,
    Error,
    Cancelled,
    QueueTimeout,
    ShuttingDown,
    /// The client let its backlog fill, or read nothing for `server.client_write_timeout_ms`.
    ClientTooSlow,
}

impl ExchangeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Cancelled => "cancelled",
            Self::QueueTimeout => "queue_timeout",
            Self::ShuttingDown => "shutting_down",
            Self::ClientTooSlow => "client_too_slow",
        }
    }
}

/// The whole story of one exchange, handed to the log writer.
#[derive(Debug, Clone)]
pub struct ExchangeOutcome {
    pub status: ExchangeStatus,
    /// The answer text as far as it got (partial when cancelled or failed).
    pub answer: String,
    pub finish_reason: Option<String>,
    pub usage: Option<Usage>,
    pub error: Option<ExchangeError>,
    pub timings: Timings,
    /// Each tool call with its result (`null` if it never returned), for the log.
    pub tool_calls: Vec<Value>,
}
