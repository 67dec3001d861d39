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
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::auth::ClientKeyId;
use crate::client_limits::{ClientLimits, ClientSlot};
use crate::lifecycle::Lifecycle;
use crate::permit_pool::Entry;
use crate::permit_pool::PermitPool;
use crate::store::{ChatLogRecord, INTERRUPTED, LogWriter};

use super::backlog::AnswerEvents;
use super::error::AdmissionError;
use super::events::ExchangeOutcome;
use super::exchange::{AnswerContext, Exchange};
use super::images;
use super::models::{ModelCatalog, ModelRoute};
use super::request::AnswerRequest;

/// Who asks: the client key when keys are on, else the peer's address. Per-client limits count
/// against the key, or the address when the proxy runs without keys.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub key: Option<ClientKeyId>,
    pub address: Option<std::net::IpAddr>,
}

impl Caller {
    /// What per-client limits count against.
    pub fn limit_key(&self) -> String {
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

/// What is known of an exchange from its start: what its log record begins with.
struct Started {
    log_id: String,
    request_id: String,
    caller: Caller,
    /// The model's configured name.
    model: String,
    received_at: chrono::DateTime<Utc>,
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
    pub async fn start(
        self: &Arc<Self>,
        request_id: String,
        request: AnswerRequest,
        caller: Caller,
        received: Instant,
    ) -> Result<AnswerEvents, AdmissionError> {
        let admitted = self
            .admit(request.model.as_deref(), caller, received)
            .instrument(tracing::debug_span!("admission"))
            .await?;
        Ok(self.spawn(request_id, request, admitted))
    }

    async fn admit(
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
            .await
            .inspect_err(|refusal| self.ctx.metrics.limited(refusal.limit()))?;
        let entry = self.ctx.permits.enter().await?;
        Ok(Admitted {
            caller,
            model,
            slot,
            entry,
            received,
        })
    }

    /// Runs one exchange in its own tracked task; its events go to the returned end only.
    fn spawn(
        self: &Arc<Self>,
        request_id: String,
        request: AnswerRequest,
        admitted: Admitted,
    ) -> AnswerEvents {
        let Admitted {
            caller,
            model,
            slot,
            entry,
            received,
        } = admitted;
        let started = Started {
            // The row's own key: a client may send the same `x-request-id` twice.
            log_id: uuid::Uuid::now_v7().to_string(),
            request_id,
            caller,
            model: model.name.to_string(),
            received_at: Utc::now(),
        };
        // Journaled before anything streams: a crash from here on still leaves a row.
        self.log.begin(interrupted_record(&started, &request));
        let (exchange, events) = Exchange::new(self.ctx.clone(), model, received);
        exchange.announce(&started.request_id);
        let service = self.clone();
        self.open.fetch_add(1, Ordering::AcqRel);
        // The exchange outlives the handler: it carries the request's span with it.
        let span = tracing::Span::current();
        self.lifecycle.spawn(
            async move {
                let client_key = started.caller.key.as_ref().map(|k| k.0.as_str());
                let outcome = exchange
                    .run(started.request_id.clone(), client_key, &request, entry)
                    .await;
                drop(slot);
                service.open.fetch_sub(1, Ordering::AcqRel);
                service.finish(started, request, outcome);
            }
            .instrument(span),
        );
        events
    }

    /// The bookkeeping at an exchange's end: metrics, the log line, the record for the writer.
    fn finish(&self, started: Started, request: AnswerRequest, outcome: ExchangeOutcome) {
        let _span = tracing::debug_span!("log_write").entered();
        self.ctx.metrics.observe(&outcome);
        // User text only when the operator allows it (`log.user_text`).
        let question = self
            .log_user_text
            .then(|| last_user_text(&request.messages));
        let reply = self.log_user_text.then_some(outcome.answer.as_str());
        tracing::info!(
            request_id = started.request_id,
            status = outcome.status.as_str(),
            queue_ms = outcome.timings.queue_ms,
            ttft_ms = outcome.timings.ttft_ms,
            total_ms = outcome.timings.total_ms,
            question,
            reply,
            "answer finished"
        );
        self.log.submit(chat_log_record(started, request, outcome));
    }

    /// The models clients may ask for; the first is the default.
    pub fn models(&self) -> &ModelCatalog {
        &self.models
    }

    /// Whether the upstream answered its last call or probe.
    pub fn upstream_reach(&self) -> crate::upstream::Reach {
        self.ctx.upstream.reach()
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

/// The row of an exchange that never ended: what was known at its start.
fn interrupted_record(started: &Started, request: &AnswerRequest) -> ChatLogRecord {
    ChatLogRecord {
        log_id: started.log_id.clone(),
        request_id: started.request_id.clone(),
        api: request.api.as_str().to_owned(),
        session_id: request.session_id.clone(),
        user_id: request.user_id.clone(),
        client_key_id: started.caller.key.as_ref().map(|k| k.0.clone()),
        model: started.model.clone(),
        request_messages: images::for_log(request.messages.clone()),
        answer: String::new(),
        tool_calls: None,
        status: INTERRUPTED.to_owned(),
        error_code: Some(INTERRUPTED.to_owned()),
        error_message: Some("the service stopped before this exchange ended".to_owned()),
        finish_reason: None,
        prompt_tokens: None,
        completion_tokens: None,
        queue_ms: 0,
        ttft_ms: None,
        total_ms: 0,
        created_at: started.received_at,
    }
}

fn chat_log_record(
    started: Started,
    request: AnswerRequest,
    outcome: ExchangeOutcome,
) -> ChatLogRecord {
    let (error_code, error_message) = outcome
        .error
        .map(|err| (err.code().to_owned(), err.to_string()))
        .unzip();
    ChatLogRecord {
        log_id: started.log_id,
        request_id: started.request_id,
        api: request.api.as_str().to_owned(),
        session_id: request.session_id,
        user_id: request.user_id,
        client_key_id: started.caller.key.map(|k| k.0),
        model: started.model,
        request_messages: images::for_log(request.messages),
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
        created_at: started.received_at,
    }
}
