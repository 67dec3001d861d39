//! How an answer can fail, as domain values: a request refused before it is admitted
//! ([`RequestError`], [`AdmissionError`]) and an exchange that ends without its answer
//! ([`ExchangeError`]). Each has a stable machine code for logs, metrics and clients; which HTTP
//! status it becomes is decided in [`crate::error`] alone.

use crate::client_limits::Refusal;
use crate::permit_queue::QueueError;
use crate::upstream::UpstreamError;

/// A request body that is not a valid answer request; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("{0}")]
    Invalid(String),
    /// A field that is wrong, named in `param`.
    #[error("`{param}`: {message}")]
    InvalidParam { param: String, message: String },
    /// A field the proxy does not support (or not with this value).
    #[error("`{param}` is not supported: {message}")]
    Unsupported { param: String, message: String },
    #[error("`messages` holds {count} messages; at most {max} are allowed")]
    TooManyMessages { count: usize, max: usize },
    #[error("the messages hold {chars} characters; at most {max} are allowed")]
    InputTooLong { chars: usize, max: usize },
}

impl RequestError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidJson(_) => "invalid_json",
            Self::Invalid(_) | Self::InvalidParam { .. } => "invalid_request",
            Self::Unsupported { .. } => "unsupported_parameter",
            Self::TooManyMessages { .. } => "too_many_messages",
            Self::InputTooLong { .. } => "input_too_long",
        }
    }

    /// The field at fault, when one is.
    pub fn param(&self) -> Option<&str> {
        match self {
            Self::InvalidParam { param, .. } | Self::Unsupported { param, .. } => Some(param),
            Self::TooManyMessages { .. } | Self::InputTooLong { .. } => Some("messages"),
            Self::InvalidJson(_) | Self::Invalid(_) => None,
        }
    }
}

/// Why a checked request was not let in.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AdmissionError {
    #[error("the server is shutting down; retry on another instance")]
    ShuttingDown,
    #[error("the model `{0}` does not exist; GET /v1/models lists the models")]
    UnknownModel(String),
    #[error(transparent)]
    ClientLimit(#[from] Refusal),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Why an admitted exchange ended without its answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ExchangeError {
    #[error("the server is shutting down; retry on another instance")]
    ShuttingDown,
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("the model kept asking for tools past tools.max_rounds")]
    ToolRoundLimit,
    #[error("the model asked for a tool, but tools are off")]
    ToolsOff,
    #[error("the client did not read its answer in time; the answer was stopped")]
    ClientTooSlow,
    /// The shared permit's lease could not be renewed (Redis away), so the request ended
    /// before the permit could be given to someone else.
    #[error("the shared upstream permit could not be renewed; the answer was stopped")]
    PermitLost,
}

impl ExchangeError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::ShuttingDown => "shutting_down",
            Self::Queue(err) => err.code(),
            Self::Upstream(err) => err.code(),
            Self::ToolRoundLimit => "tool_round_limit",
            Self::ToolsOff => "upstream_tool_call",
            Self::ClientTooSlow => "client_too_slow",
            Self::PermitLost => "permit_lost",
        }
    }
}
