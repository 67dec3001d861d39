//! One exchange (of `/answer` or `/v1/chat/completions`), run in its own task: wait for a permit, stream the upstream's answer
//! into this request's own channel, and report how it ended. Nothing here is shared between
//! requests but the permit queue and the HTTP client, so no byte can reach another user.
//!
//! With tools on, an exchange is a loop of rounds. Each round takes a permit, streams one
//! upstream answer (assembling any tool calls from their fragments) and gives the permit back.
//! If the model asked for tools, they run with no permit held, so other users get the upstream
//! meanwhile. Their results join the conversation and the next round queues again, up to
//! `tools.max_rounds` rounds with tools; then the model is asked once more without them.
//! A call to one of the client's own tools ends the exchange instead: it goes back to the client.

mod round;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::config::ImageParts;
use crate::metrics::AnswerMetrics;
use crate::ocr::{Priority, Requester};
use crate::permit_pool::{Entry, PermitPool, UpstreamPermit};
use crate::permit_queue::QueueError;
use crate::upstream::wire::{CallOptions, UpstreamMessage, Usage};
use crate::upstream::{TimeoutPhase, UpstreamClient, UpstreamError};

use super::backlog::{AnswerEvents, BufferBudget};
use super::burst::Burst;
use super::error::ExchangeError;
use super::events::{AnswerEvent, DoneInfo, ExchangeOutcome, ExchangeStatus, Meta, Timings};
use super::images::{Attachments, reference_images};
use super::models::ModelRoute;
use super::outbox::{Interrupt, Outbox};
use super::request::AnswerRequest;
use super::tools::{OfferedTools, ToolBox, ToolCall};

/// The shared handles an exchange uses.
#[derive(Clone)]
pub struct AnswerContext {
    pub upstream: Arc<UpstreamClient>,
    pub permits: PermitPool,
    /// Cancelled when shutdown's grace period is over: exchanges still running end with an error.
    pub stop_streams: CancellationToken,
    /// The tools offered to the model; `None` when `tools.enabled` is off.
    pub tools: Option<Arc<ToolBox>>,
    /// Queue waits, first tokens and outcomes for `/metrics`.
    pub metrics: AnswerMetrics,
    /// The bytes waiting for clients, over all exchanges, and their limits.
    pub buffers: Arc<BufferBudget>,
}

/// One exchange's running state.
pub struct Exchange {
    ctx: Arc<AnswerContext>,
    model: ModelRoute,
    outbox: Outbox,
    received: Instant,
    answer: String,
    finish_reason: Option<String>,
    usage: Option<Usage>,
    timings: Timings,
    tool_calls: Vec<Value>,
}

/// What one upstream round gave.
struct Round {
    text: String,
    calls: Vec<ToolCall>,
}

impl Exchange {
    /// The exchange and its client's end, where its events arrive.
    pub fn new(
        ctx: Arc<AnswerContext>,
        model: ModelRoute,
        received: Instant,
    ) -> (Self, AnswerEvents) {
        let (outbox, events) = Outbox::new(ctx.buffers.clone(), ctx.stop_streams.clone());
        let exchange = Self {
            ctx,
            model,
            outbox,
            received,
            answer: String::new(),
            finish_reason: None,
            usage: None,
            timings: Timings::default(),
            tool_calls: Vec::new(),
        };
        (exchange, events)
    }

    /// Puts the `meta` event in the channel at once, before the exchange task first runs, so
    /// that the response head and `meta` leave in one write. A client already gone is noticed
    /// by the exchange's first wait.
    pub fn announce(&self, request_id: &str) {
        let _ = self.outbox.emit(AnswerEvent::Meta(Box::new(Meta {
            request_id: request_id.to_owned(),
            model: self.model.name.to_string(),
        })));
    }

    /// Runs to the end and returns how it went. `entry` is the place the handler already took in
    /// the queue (so a full queue was refused before any stream began). The OCR results of its
    /// tool calls belong to `client_key`.
    pub async fn run(
        mut self,
        request_id: String,
        client_key: Option<&str>,
        request: &AnswerRequest,
        entry: Entry,
    ) -> ExchangeOutcome {
        let requester = Requester {
            request_id: &request_id,
            client_key_id: client_key,
            priority: Priority::Interactive,
        };
        let result = self.drive(requester, request, entry).await;
        self.timings.total_ms = millis(self.received.elapsed());
        let (status, error) = match result {
            Ok(()) => (ExchangeStatus::Ok, None),
            Err(Ended::Interrupted(Interrupt::ClientGone)) => (ExchangeStatus::Cancelled, None),
            Err(Ended::Interrupted(interrupt)) => {
                let (status, err) = match interrupt {
                    Interrupt::ClientTooSlow => {
                        (ExchangeStatus::ClientTooSlow, ExchangeError::ClientTooSlow)
                    }
                    Interrupt::OutOfTime => (
                        ExchangeStatus::Error,
                        ExchangeError::Upstream(UpstreamError::Timeout {
                            phase: TimeoutPhase::Total,
                            after: self.ctx.upstream.total_timeout(),
                        }),
                    ),
                    Interrupt::Shutdown | Interrupt::ClientGone => {
                        (ExchangeStatus::ShuttingDown, ExchangeError::ShuttingDown)
                    }
                };
                self.outbox
                    .emit_last(AnswerEvent::Failed(Box::new(err.clone())));
                (status, Some(err))
            }
            Err(Ended::Failed(err)) => {
                let status = match err {
                    ExchangeError::Queue(QueueError::Timeout { .. }) => {
                        ExchangeStatus::QueueTimeout
                    }
                    _ => ExchangeStatus::Error,
                };
                self.outbox
                    .emit_last(AnswerEvent::Failed(Box::new(err.clone())));
                (status, Some(err))
            }
        };
        ExchangeOutcome {
            status,
            answer: self.answer,
            finish_reason: self.finish_reason,
            usage: self.usage,
            error,
            timings: self.timings,
            tool_calls: self.tool_calls,
        }
    }

    async fn drive(
        &mut self,
        requester: Requester<'_>,
        request: &AnswerRequest,
        entry: Entry,
    ) -> Result<(), Ended> {
        let tools = self.ctx.tools.clone();
        let mut conversation = None;
        let mut entry = Some(entry);
        let mut round = 0;
        // The exchange is borrowed mutably by each round: the upstream name is a cheap copy.
        let upstream_model = self.model.upstream.clone();
        loop {
            let offered = tools.as_ref().filter(|t| round < t.max_rounds);
            let permit = self.permit(entry.take()).await?;
            // Built once a permit is granted, so an exchange waiting in the queue holds no copy.
            let (messages, attachments) =
                conversation.get_or_insert_with(|| upstream_messages(request, tools.as_deref()));
            let definitions = OfferedTools::new(offered.map(|t| t.definitions()), &request.tools);
            let call = CallOptions {
                model: &upstream_model,
                tool_choice: tool_choice(request, round),
                parallel_tool_calls: request.tools.parallel_calls,
                options: &request.options,
            };
            // Boxed: the round's state (the upstream call, its stream) exists only while it
            // runs, so an exchange waiting in the queue stays small.
            let span = tracing::debug_span!("upstream_call", model = %upstream_model, round);
            let Round { text, calls } =
                Box::pin(self.stream_round(messages, definitions.get(), call, permit))
                    .instrument(span)
                    .await?;
            if calls.is_empty() {
                break;
            }
            if calls.iter().any(|c| request.tools.owns(&c.name)) {
                // The client runs its own tools: the calls go back to it, and its next request,
                // with their results, continues the conversation.
                let own = calls.into_iter().filter(|c| request.tools.owns(&c.name));
                self.hand_back(own.collect()).await?;
                break;
            }
            let Some(tools) = offered else {
                return Err(Ended::Failed(if tools.is_some() {
                    ExchangeError::ToolRoundLimit
                } else {
                    ExchangeError::ToolsOff
                }));
            };
            for call in &calls {
                self.outbox
                    .emit(AnswerEvent::ToolCall(Box::new(call.clone())))?;
                self.tool_calls.push(json!({
                    "id": call.id, "name": call.name, "arguments": call.arguments, "result": null,
                }));
            }
            let first = self.tool_calls.len() - calls.len();
            // No permit is held here: other users' answers use the upstream meanwhile.
            let runs = calls.iter().map(|call| {
                let span = tracing::debug_span!("tool", name = %call.name, id = %call.id);
                tools.run(requester, call, attachments).instrument(span)
            });
            let outputs = Box::pin(self.outbox.guarded(futures::future::join_all(runs))).await?;
            messages.push(UpstreamMessage::Own(json!({
                "role": "assistant",
                "content": if text.is_empty() { Value::Null } else { Value::String(text) },
                "tool_calls": calls.iter().map(|c| json!({
                    "id": c.id, "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                })).collect::<Vec<_>>(),
            })));
            for (i, (call, output)) in calls.iter().zip(outputs).enumerate() {
                messages.push(UpstreamMessage::Own(
                    json!({"role": "tool", "tool_call_id": call.id, "content": output.content}),
                ));
                self.tool_calls[first + i]["result"] = output.event.clone();
                self.outbox
                    .emit(AnswerEvent::ToolResult(Box::new(output.event)))?;
            }
            round += 1;
        }
        self.timings.total_ms = millis(self.received.elapsed());
        self.outbox.emit(AnswerEvent::Done(Box::new(DoneInfo {
            finish_reason: self.finish_reason.clone(),
            usage: self.usage,
            timings: self.timings,
            tool_calls: self.tool_calls.clone(),
        })))?;
        // The permits are long given back; the exchange ends when its client has the answer.
        self.outbox.delivered().await?;
        Ok(())
    }

    /// A permit: the place the handler took for the first round, a new place in the queue for
    /// later ones. Time spent waiting adds to `queue_ms`.
    async fn permit(&mut self, entry: Option<Entry>) -> Result<UpstreamPermit, Ended> {
        let waiting_since = Instant::now();
        let first_round = entry.is_some();
        let entry = match entry {
            Some(entry) => entry,
            None => self.ctx.permits.enter().await.map_err(queue_error)?,
        };
        let permit = match entry {
            Entry::Ready(permit) => permit,
            Entry::Queued(waiter) => {
                let position = waiter.position();
                self.outbox.emit(AnswerEvent::Queued { position })?;
                let span = tracing::debug_span!("queue_wait", position);
                self.outbox
                    .guarded(waiter.wait())
                    .instrument(span)
                    .await?
                    .map_err(queue_error)?
            }
        };
        if first_round {
            // The first round's wait counts from the request's arrival. From its permit on,
            // the whole exchange has `upstream.total_timeout_ms`, waits for the client included.
            self.timings.queue_ms = millis(self.received.elapsed());
            let total = self.ctx.upstream.total_timeout();
            self.outbox.set_deadline(Instant::now() + total);
        } else {
            self.timings.queue_ms += millis(waiting_since.elapsed());
        }
        Ok(permit)
    }

    /// Ends the answer with the model's calls to the client's own tools. Calls to the proxy's
    /// tools in the same answer are not run: the client's next request, carrying its results,
    /// lets the model ask for them again.
    async fn hand_back(&mut self, calls: Vec<ToolCall>) -> Result<(), Ended> {
        for call in &calls {
            self.tool_calls.push(json!({
                "id": call.id, "name": call.name, "arguments": call.arguments, "client": true,
            }));
        }
        self.finish_reason = Some("tool_calls".to_owned());
        self.outbox
            .emit(AnswerEvent::ClientToolCalls(Box::new(calls)))?;
        Ok(())
    }

    /// Hands the burst's deltas to the client, in order.
    fn flush(&self, burst: &mut Burst) -> Result<(), Ended> {
        for event in burst.drain() {
            self.outbox.emit(event)?;
        }
        Ok(())
    }
}

/// The request's messages as sent upstream, and the images they carried inline. With tools on,
/// the tools' system prompt goes first unless the client brought its own, and image parts are
/// sent as `tools.image_parts` says (`answer::images`).
fn upstream_messages(
    request: &AnswerRequest,
    tools: Option<&ToolBox>,
) -> (Vec<UpstreamMessage>, Attachments) {
    let Some(tools) = tools else {
        let own = request.messages.iter().cloned().map(UpstreamMessage::Own);
        return (own.collect(), Attachments::default());
    };
    let (own, attachments) = match tools.image_parts {
        ImageParts::Reference => reference_images(&request.messages),
        ImageParts::Forward => (request.messages.clone(), Attachments::default()),
    };
    let mut messages = Vec::with_capacity(own.len() + 1);
    if !request.messages.iter().any(|m| m["role"] == "system") {
        messages.push(UpstreamMessage::Shared(tools.system_message()));
    }
    messages.extend(own.into_iter().map(UpstreamMessage::Own));
    (messages, attachments)
}

/// The client's `tool_choice` for a round. A choice that forces a call holds for the first
/// round only: after the proxy's own tools ran, forcing again would loop until `max_rounds`.
fn tool_choice(request: &AnswerRequest, round: usize) -> Option<&Value> {
    let choice = request.tools.choice.as_ref()?;
    (round == 0 || choice == "none" || choice == "auto").then_some(choice)
}

enum Ended {
    Interrupted(Interrupt),
    Failed(ExchangeError),
}

impl From<Interrupt> for Ended {
    fn from(interrupt: Interrupt) -> Self {
        Self::Interrupted(interrupt)
    }
}

fn queue_error(err: QueueError) -> Ended {
    Ended::Failed(err.into())
}

fn upstream_error(err: crate::upstream::UpstreamError) -> Ended {
    Ended::Failed(err.into())
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
