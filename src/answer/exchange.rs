//! One `/answer` exchange, run in its own task: wait for a permit, stream the upstream's answer
//! into this request's own channel, and report how it ended. Nothing here is shared between
//! requests but the permit queue and the HTTP client, so no byte can reach another user.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::limiter::{Entry, PermitQueue, QueueError};
use crate::upstream::wire::Usage;
use crate::upstream::{UpstreamClient, UpstreamError};

use super::request::AnswerRequest;

/// What the client is told, in order: `Meta`, maybe `Queued`, `Delta`s, then `Done` or `Error`.
#[derive(Debug, Clone)]
pub enum AnswerEvent {
    Meta { request_id: String, model: String },
    Queued { position: usize },
    Delta(String),
    // Boxed: a channel's slots are sized for the largest variant, and most events are deltas.
    Done(Box<DoneInfo>),
    Error(Box<ApiError>),
}

#[derive(Debug, Clone, Serialize)]
pub struct DoneInfo {
    pub finish_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    pub timings: Timings,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
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
}

impl ExchangeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Cancelled => "cancelled",
            Self::QueueTimeout => "queue_timeout",
            Self::ShuttingDown => "shutting_down",
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
    pub error: Option<(String, String)>,
    pub timings: Timings,
}

/// The shared handles an exchange uses.
#[derive(Clone)]
pub struct AnswerContext {
    pub upstream: Arc<UpstreamClient>,
    /// Name shown in `meta` (`demo` for the built-in model).
    pub model_label: String,
    pub queue: PermitQueue,
    /// Cancelled when shutdown's grace period is over: exchanges still running end with an error.
    pub stop_streams: CancellationToken,
}

/// Why an exchange stopped before its end.
enum Interrupt {
    ClientGone,
    Shutdown,
}

/// One exchange's running state.
pub struct Exchange {
    ctx: AnswerContext,
    tx: mpsc::Sender<AnswerEvent>,
    received: Instant,
    answer: String,
    finish_reason: Option<String>,
    usage: Option<Usage>,
    timings: Timings,
}

impl Exchange {
    pub fn new(ctx: AnswerContext, tx: mpsc::Sender<AnswerEvent>, received: Instant) -> Self {
        Self {
            ctx,
            tx,
            received,
            answer: String::new(),
            finish_reason: None,
            usage: None,
            timings: Timings::default(),
        }
    }

    /// Runs to the end and returns how it went. `entry` is the place the handler already took in
    /// the queue (so a full queue was refused before any stream began).
    pub async fn run(
        mut self,
        request_id: String,
        request: &AnswerRequest,
        entry: Entry,
    ) -> ExchangeOutcome {
        let result = self.drive(request_id, request, entry).await;
        self.timings.total_ms = millis(self.received.elapsed());
        let (status, error) = match result {
            Ok(()) => (ExchangeStatus::Ok, None),
            Err(Ended::Interrupted(Interrupt::ClientGone)) => (ExchangeStatus::Cancelled, None),
            Err(Ended::Interrupted(Interrupt::Shutdown)) => {
                let err = ApiError::shutting_down();
                self.emit_last(AnswerEvent::Error(Box::new(err.clone())))
                    .await;
                (ExchangeStatus::ShuttingDown, Some(err))
            }
            Err(Ended::Failed(err)) => {
                let status = if err.code == "queue_timeout" {
                    ExchangeStatus::QueueTimeout
                } else {
                    ExchangeStatus::Error
                };
                self.emit_last(AnswerEvent::Error(Box::new(err.clone())))
                    .await;
                (status, Some(err))
            }
        };
        ExchangeOutcome {
            status,
            answer: self.answer,
            finish_reason: self.finish_reason,
            usage: self.usage,
            error: error.map(|e| (e.code.to_owned(), e.message)),
            timings: self.timings,
        }
    }

    async fn drive(
        &mut self,
        request_id: String,
        request: &AnswerRequest,
        entry: Entry,
    ) -> Result<(), Ended> {
        let model = self.ctx.model_label.clone();
        self.emit(AnswerEvent::Meta { request_id, model }).await?;
        let permit = match entry {
            Entry::Ready(permit) => permit,
            Entry::Queued(waiter) => {
                let position = waiter.position();
                self.emit(AnswerEvent::Queued { position }).await?;
                self.guarded(waiter.wait()).await?.map_err(queue_error)?
            }
        };
        self.timings.queue_ms = millis(self.received.elapsed());

        let upstream = self.ctx.upstream.clone();
        let mut chunks = self
            .guarded(upstream.open(&request.messages, None))
            .await?
            .map_err(|e| upstream_error(&e))?;
        while let Some(chunk) = self.guarded(chunks.next_chunk()).await? {
            let chunk = chunk.map_err(|e| upstream_error(&e))?;
            if let Some(usage) = chunk.usage {
                self.usage = Some(usage);
            }
            for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
                if let Some(reason) = choice.finish_reason {
                    self.finish_reason = Some(reason);
                }
                if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
                    if self.timings.ttft_ms.is_none() {
                        self.timings.ttft_ms = Some(millis(self.received.elapsed()));
                    }
                    self.answer.push_str(&text);
                    self.emit(AnswerEvent::Delta(text)).await?;
                }
            }
        }
        // `[DONE]` arrived: the upstream request is over, so its permit goes back now.
        drop(chunks);
        drop(permit);
        self.timings.total_ms = millis(self.received.elapsed());
        self.emit(AnswerEvent::Done(Box::new(DoneInfo {
            finish_reason: self.finish_reason.clone(),
            usage: self.usage,
            timings: self.timings,
        })))
        .await
    }

    /// Awaits `work` unless the client leaves or shutdown ends the streams first; dropping
    /// `work` then releases whatever it held (queue place, permit, upstream connection).
    async fn guarded<F: Future>(&self, work: F) -> Result<F::Output, Ended> {
        tokio::select! {
            biased;
            () = self.tx.closed() => Err(Ended::Interrupted(Interrupt::ClientGone)),
            () = self.ctx.stop_streams.cancelled() => Err(Ended::Interrupted(Interrupt::Shutdown)),
            output = work => Ok(output),
        }
    }

    async fn emit(&self, event: AnswerEvent) -> Result<(), Ended> {
        match self.guarded(self.tx.send(event)).await? {
            Ok(()) => Ok(()),
            Err(_) => Err(Ended::Interrupted(Interrupt::ClientGone)),
        }
    }

    /// Sends the final error if the client is still there; a slow reader gets a moment, not forever.
    async fn emit_last(&self, event: AnswerEvent) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.tx.send(event)).await;
    }
}

enum Ended {
    Interrupted(Interrupt),
    Failed(ApiError),
}

fn queue_error(err: QueueError) -> Ended {
    Ended::Failed(err.into())
}

fn upstream_error(err: &UpstreamError) -> Ended {
    Ended::Failed(err.into())
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
