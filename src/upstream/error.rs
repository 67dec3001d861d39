//! How an upstream call fails, as domain values with stable machine codes.

use std::time::Duration;

/// Why the upstream call failed; `code()` is the stable machine code clients see.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("could not reach the model API: {0}")]
    Connect(String),
    #[error("the model API sent no {phase} within {} ms", .after.as_millis())]
    Timeout {
        phase: TimeoutPhase,
        after: Duration,
    },
    #[error("the model API answered HTTP {status}: {message}")]
    Status {
        status: u16,
        message: String,
        /// What its `Retry-After` header asked for, if anything.
        retry_after: Option<Duration>,
    },
    #[error("the model API sent a malformed chunk: {0}")]
    Malformed(String),
    #[error("the model API closed the stream before the answer was complete")]
    Cut,
    #[error("the model API reported an error mid-stream: {0}")]
    Reported(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    FirstChunk,
    ChunkGap,
    Total,
}

impl std::fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::FirstChunk => "first chunk",
            Self::ChunkGap => "next chunk",
            Self::Total => "complete answer",
        })
    }
}

impl UpstreamError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Connect(_) => "upstream_unavailable",
            Self::Timeout { .. } => "upstream_timeout",
            Self::Status { status: 429, .. } => "upstream_rate_limited",
            Self::Status { .. } => "upstream_status",
            Self::Malformed(_) => "upstream_malformed",
            Self::Cut => "upstream_cut",
            Self::Reported(_) => "upstream_error",
        }
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. })
    }

    /// The wait a 429 or 503 asked for with `Retry-After`.
    pub(super) fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status {
                status: 429 | 503,
                retry_after,
                ..
            } => *retry_after,
            _ => None,
        }
    }

    pub(super) fn is_retryable(&self) -> bool {
        match self {
            Self::Connect(_) => true,
            Self::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}
