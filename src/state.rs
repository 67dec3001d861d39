//! The handles every handler shares, cheap to clone.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use chrono::Utc;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::answer::{AnswerContext, AnswerEvent, AnswerRequest, Exchange, ExchangeOutcome};
use crate::auth::{ClientKeyId, ClientKeys};
use crate::config::Config;
use crate::fairness::{ClientLimits, ClientSlot};
use crate::limiter::Entry;
use crate::metrics::Metrics;
use crate::ocr::OcrService;
use crate::ocr::jobs::OcrJobs;
use crate::store::{ChatLogRecord, Database, LogWriter};

/// A request let through the per-client limits and into the permit queue.
pub struct Admitted {
    pub client_key: Option<ClientKeyId>,
    /// Counts against the client's concurrency limit until the exchange ends.
    pub slot: ClientSlot,
    pub entry: Entry,
    pub received: Instant,
}

/// Cloned for every request (axum's `State`, each middleware) and by every exchange task, so
/// it is one `Arc`: a clone is one atomic increment however many handles it holds.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What every clone of [`AppState`] points to.
pub struct Shared {
    /// Settings as loaded at start-up.
    pub config: Arc<Config>,
    /// What every `/answer` exchange needs: the upstream client, the permit queue, the stop signal.
    pub answer: Arc<AnswerContext>,
    /// Owns every exchange task, so shutdown waits for them (and for what they log).
    pub tasks: TaskTracker,
    /// Hands log records to the background writer; never waits for the database.
    pub log: LogWriter,
    /// Reads (and corrections) that must see the database itself.
    pub database: Database,
    /// The OCR pipeline and its engine pool.
    pub ocr: Arc<OcrService>,
    /// Batch OCR jobs in progress and recently finished.
    pub jobs: Arc<OcrJobs>,
    /// The client API keys every route but `/health` checks.
    pub client_keys: ClientKeys,
    /// The `/metrics` registry.
    pub metrics: Arc<Metrics>,
    /// Per-client concurrency and rate limits on `/answer`.
    pub client_limits: ClientLimits,
    /// Set when shutdown begins: new work is refused with 503 and `/health` says so.
    draining: AtomicBool,
    /// Exchanges running now, for `/health`.
    exchanges_open: AtomicUsize,
}

impl AppState {
    pub fn new(
        config: Arc<Config>,
        answer: AnswerContext,
        log: LogWriter,
        database: Database,
        ocr: Arc<OcrService>,
        client_keys: ClientKeys,
        metrics: Arc<Metrics>,
    ) -> Self {
        let client_limits = ClientLimits::new(&config.limits);
        Self(Arc::new(Shared {
            config,
            answer: Arc::new(answer),
            tasks: TaskTracker::new(),
            log,
            database,
            ocr,
            jobs: Arc::new(OcrJobs::default()),
            client_keys,
            metrics,
            client_limits,
            draining: AtomicBool::new(false),
            exchanges_open: AtomicUsize::new(0),
        }))
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn begin_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn exchanges_open(&self) -> usize {
        self.exchanges_open.load(Ordering::Acquire)
    }

    /// Runs one exchange in its own tracked task; its events go to `tx` only.
    pub fn start_exchange(
        &self,
        request_id: String,
        request: AnswerRequest,
        admitted: Admitted,
        tx: mpsc::Sender<AnswerEvent>,
    ) {
        let Admitted {
            client_key,
            slot,
            entry,
            received,
        } = admitted;
        let received_at = Utc::now();
        let exchange = Exchange::new(self.answer.clone(), tx, received);
        exchange.announce(&request_id);
        let state = self.clone();
        self.exchanges_open.fetch_add(1, Ordering::AcqRel);
        // The exchange outlives the handler: it carries the request's span with it.
        let span = tracing::Span::current();
        self.tasks.spawn(
            async move {
                let outcome = exchange.run(request_id.clone(), &request, entry).await;
                drop(slot);
                state.exchanges_open.fetch_sub(1, Ordering::AcqRel);
                state.answer.metrics.observe(&outcome);
                // User text only when the operator allows it (`log.user_text`).
                let log_user_text = state.config.log.user_text;
                let question = log_user_text.then(|| last_user_text(&request.messages));
                let reply = log_user_text.then_some(outcome.answer.as_str());
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
                state.log.submit(chat_log_record(
                    request_id,
                    request,
                    client_key,
                    state.answer.model_label.to_string(),
                    outcome,
                    received_at,
                ));
            }
            .instrument(span),
        );
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
    let (error_code, error_message) = outcome.error.unzip();
    ChatLogRecord {
        request_id,
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
