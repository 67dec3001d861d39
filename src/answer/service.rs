//! The one owner of every answer, from admission to its log record. A front door (`/answer`
//! today) hands it a checked [`AnswerRequest`] and writes the events it gets back in its own wire
//! form; everything between lives here:
//! - admission: the draining check, the per-client limits, a place in the permit pool (a full
//!   queue is refused before any stream begins);
//! - the exchange, in its own task that shutdown waits for;
//! - the bookkeeping at its end: metrics, the `answer finished` line, the record for the log.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::Utc;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::auth::ClientKeyId;
use crate::client_limits::{ClientLimits, ClientSlot};
use crate::lifecycle::Lifecycle;
use crate::permit_pool::PermitPool;
use crate::permit_queue::Entry;
use crate::store::{ChatLogRecord, LogWriter};

use super::error::AdmissionError;
use super::events::{AnswerEvent, ExchangeOutcome};
use super::exchange::{AnswerContext, Exchange};
use super::models::{ModelCatalog, ModelRoute};
use super::request::AnswerRequest;

/// Events buffered between an exchange and its client; a slower client slows only its own upstream read.
const EVENT_BUFFER: usize = 32;

/// Who asks: the client key when keys are on, else the peer's address. Per-client limits count
/// against the key, or the address when the proxy runs without keys.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub key: Option<ClientKeyId>,
    pub address: Option<std::net::IpAddr>,
}

impl Caller {
    fn limit_key(&self) -> String {
        match (&self.key, self.address) {
            (Some(key), _) => key.0.clone(),
            (None, Some(address)) => address.to_string(),
            (None, None) => String::new(),
        }
    }
}

/// Cheap to share: one per application, behind an `Arc`.
pub struct AnswerService {
    ctx: Arc<AnswerContext>,
    models: ModelCatalog,
    client_limits: ClientLimits,
    lifecycle: Lifecycle,
    log: LogWriter,
    /// `log.user_text`: whether the question and the answer may appear in the log line.
    log_user_text: bool,
    /// Exchanges running now, for `/health` and `/metrics`.
    open: AtomicUsize,
}

/// A request let through the per-client limits and into the permit pool.
struct Admitted {
    caller: Caller,
    model: ModelRoute,
    /// Counts against the client's concurrency limit until the exchange ends.
    slot: ClientSlot,
    entry: Entry,
    received: Instant,
}

impl AnswerService {
    pub fn new(
        ctx: AnswerContext,
        models: ModelCatalog,
        client_limits: ClientLimits,
        lifecycle: Lifecycle,
        log: LogWriter,
        log_user_text: bool,
    ) -> Self {
        Self {
            ctx: Arc::new(ctx),
            models,
            client_limits,
            lifecycle,
            log,
            log_user_text,
            open: AtomicUsize::new(0),
        }
    }

    /// Admits `request` and starts its exchange; its events, in order, come from the receiver
    /// alone. `received` is when the request arrived, the start of its timings.
    pub fn start(
        self: &Arc<Self>,
        request_id: String,
        request: AnswerRequest,
        caller: Caller,
        received: Instant,
    ) -> Result<mpsc::Receiver<AnswerEvent>, AdmissionError> {
        let admitted = self.admit(request.model.as_deref(), caller, received)?;
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        self.spawn(request_id, request, admitted, tx);
        Ok(rx)
    }

    fn admit(
        &self,
        model: Option<&str>,
        caller: Caller,
        received: Instant,
    ) -> Result<Admitted, AdmissionError> {
        if self.lifecycle.is_draining() {
            return Err(AdmissionError::ShuttingDown);
        }
        let model = match model {
            None => self.models.default_route(),
            Some(name) => self
                .models
                .find(name)
                .ok_or_else(|| AdmissionError::UnknownModel(name.to_owned()))?,
        }
        .clone();
        let slot = self
            .client_limits
            .admit(&caller.limit_key())
            .inspect_err(|refusal| self.ctx.metrics.limited(refusal.limit()))?;
        let entry = self.ctx.permits.enter()?;
        Ok(Admitted {
            caller,
            model,
            slot,
            entry,
            received,
        })
    }

    /// Runs one exchange in its own tracked task; its events go to `tx` only.
    fn spawn(
        self: &Arc<Self>,
        request_id: String,
        request: AnswerRequest,
        admitted: Admitted,
        tx: mpsc::Sender<AnswerEvent>,
    ) {
        let Admitted {
            caller,
            model,
            slot,
            entry,
            received,
        } = admitted;
        let received_at = Utc::now();
        let model_name = model.name.to_string();
        let exchange = Exchange::new(self.ctx.clone(), model, tx, received);
        exchange.announce(&request_id);
        let service = self.clone();
        self.open.fetch_add(1, Ordering::AcqRel);
        // The exchange outlives the handler: it carries the request's span with it.
        let span = tracing::Span::current();
        self.lifecycle.spawn(
            async move {
                let outcome = exchange.run(request_id.clone(), &request, entry).await;
                drop(slot);
                service.open.fetch_sub(1, Ordering::AcqRel);
                service.finish(
                    request_id,
                    request,
                    caller,
                    model_name,
                    outcome,
                    received_at,
                );
            }
            .instrument(span),
        );
    }

    /// The bookkeeping at an exchange's end: metrics, the log line, the record for the writer.
    fn finish(
        &self,
        request_id: String,
        request: AnswerRequest,
        caller: Caller,
        model: String,
        outcome: ExchangeOutcome,
        received_at: chrono::DateTime<Utc>,
    ) {
        self.ctx.metrics.observe(&outcome);
        // User text only when the operator allows it (`log.user_text`).
        let question = self
            .log_user_text
            .then(|| last_user_text(&request.messages));
        let reply = self.log_user_text.then_some(outcome.answer.as_str());
        tracing::info!(
            request_id,
            status = outcome.status.as_str(),
            queue_ms = outcome.timings.queue_ms,
            ttft_ms = outcome.timings.ttft_ms,
            total_ms = outcome.timings.total_ms,
            question,
            reply,
            "answer finished"
        );
        self.log.submit(chat_log_record(
            request_id,
            request,
            caller.key,
            model,
            outcome,
            received_at,
        ));
    }

    /// The models clients may ask for; the first is the default.
    pub fn models(&self) -> &ModelCatalog {
        &self.models
    }

    pub fn permits(&self) -> &PermitPool {
        &self.ctx.permits
    }

    /// Exchanges running now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

/// The text of the last user message (text parts joined), for the log when it may hold it.
fn last_user_text(messages: &[serde_json::Value]) -> String {
    let Some(message) = messages.iter().rev().find(|m| m["role"] == "user") else {
        return String::new();
    };
    match &message["content"] {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Array(parts) => parts
            .iter()
            .filter_map(|part| part["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn chat_log_record(
    request_id: String,
    request: AnswerRequest,
    client_key: Option<ClientKeyId>,
    model: String,
    outcome: ExchangeOutcome,
    created_at: chrono::DateTime<Utc>,
) -> ChatLogRecord {
    let (error_code, error_message) = outcome
        .error
        .map(|err| (err.code().to_owned(), err.to_string()))
        .unzip();
    ChatLogRecord {
        request_id,
        api: request.api.as_str().to_owned(),
        session_id: request.session_id,
        user_id: request.user_id,
        client_key_id: client_key.map(|k| k.0),
        model,
        request_messages: serde_json::Value::Array(request.messages),
        answer: outcome.answer,
        tool_calls: (!outcome.tool_calls.is_empty())
            .then_some(serde_json::Value::Array(outcome.tool_calls)),
        status: outcome.status.as_str().to_owned(),
        error_code,
        error_message,
        finish_reason: outcome.finish_reason,
        prompt_tokens: outcome.usage.map(|u| u.prompt_tokens),
        completion_tokens: outcome.usage.map(|u| u.completion_tokens),
        queue_ms: outcome.timings.queue_ms,
        ttft_ms: outcome.timings.ttft_ms,
        total_ms: outcome.timings.total_ms,
        created_at,
    }
}
