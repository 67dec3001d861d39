//! One upstream round of an exchange: open the call, relay its chunks to the client (text in
//! bursts, tool-call fragments assembled), and give the permit back as soon as the upstream is
//! done with it.

use std::pin::pin;

use serde_json::value::RawValue;

use crate::permit_pool::UpstreamPermit;
use crate::upstream::ChunkStream;
use crate::upstream::wire::{CallOptions, UpstreamMessage, Usage};

use super::super::burst::{Burst, PACED_GAP, ready_within_a_turn};
use super::super::error::ExchangeError;
use super::super::events::AnswerEvent;
use super::super::outbox::watched;
use super::super::tools::CallAssembler;
use super::super::woken::WhenWoken;
use super::{Ended, Exchange, Round, millis, upstream_error};

impl Exchange {
    /// One upstream request, holding `permit` exactly while it is open.
    pub(super) async fn stream_round(
        &mut self,
        messages: &[UpstreamMessage],
        tools: Option<&RawValue>,
        call: CallOptions<'_>,
        permit: UpstreamPermit,
    ) -> Result<Round, Ended> {
        let upstream = self.ctx.upstream.clone();
        // A shared permit whose lease cannot be renewed ends the round before it expires,
        // whether the upstream has answered yet or not.
        let opened = tokio::select! {
            biased;
            () = WhenWoken::new(permit.lost()) => return Err(Ended::Failed(ExchangeError::PermitLost)),
            // Boxed: the opening (retries, the error body) is larger than the streaming
            // that follows, and the round's state would keep that size to its end.
            opened = Box::pin(self.outbox.guarded(upstream.open(messages, tools, call))) => opened,
        };
        let mut chunks = opened?.map_err(upstream_error)?;
        // The round's text is the end of the answer from here on.
        let text_starts = self.answer.len();
        let mut calls = CallAssembler::default();
        let mut burst = Burst::default();
        let relayed = tokio::select! {
            biased;
            () = WhenWoken::new(permit.lost()) => Err(Ended::Failed(ExchangeError::PermitLost)),
            relayed = self.relay(&mut chunks, &mut calls, &mut burst) => relayed,
        };
        // `[DONE]` arrived, or the stream failed: the upstream request is over, so its permit
        // goes back now, before the last deltas wait for room in the client's channel.
        drop(chunks);
        drop(permit);
        // What the client has not been handed yet goes before the error that ends the stream.
        if !matches!(relayed, Err(Ended::Interrupted(_))) {
            self.flush(&mut burst)?;
        }
        relayed?;
        if calls.is_empty() {
            // No tool calls: nothing goes back upstream, so the text needs no copy.
            return Ok(Round {
                text: String::new(),
                calls: Vec::new(),
            });
        }
        Ok(Round {
            text: self.answer[text_starts..].to_owned(),
            calls: calls.finish(),
        })
    }

    /// Reads `chunks` to `[DONE]`: the text into the exchange's answer, tool-call fragments
    /// into `calls`, deltas to the client through `burst`.
    async fn relay(
        &mut self,
        chunks: &mut ChunkStream,
        calls: &mut CallAssembler,
        burst: &mut Burst,
    ) -> Result<(), Ended> {
        // What ends an exchange early is watched for the whole round, not anew for each chunk:
        // a new waiter per chunk registered with (and removed from) every notifier.
        let outbox = self.outbox.clone();
        let mut interruption = pin!(outbox.interruption());
        loop {
            let next = {
                let mut next = pin!(watched(interruption.as_mut(), chunks.next_chunk()));
                if burst.is_empty() {
                    next.await?
                } else {
                    match ready_within_a_turn(next.as_mut()).await {
                        Some(next) => next?,
                        // The burst is over: its deltas go out while the upstream is quiet.
                        None => {
                            self.flush(burst)?;
                            next.await?
                        }
                    }
                }
            };
            let Some(chunk) = next else {
                return Ok(());
            };
            let chunk = chunk.map_err(upstream_error)?;
            if let Some(usage) = chunk.usage {
                let total = self.usage.get_or_insert_with(Usage::default);
                total.prompt_tokens += usage.prompt_tokens;
                total.completion_tokens += usage.completion_tokens;
                total.total_tokens += usage.total_tokens;
            }
            for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
                if let Some(reason) = choice.finish_reason {
                    self.finish_reason = Some(reason);
                }
                for fragment in choice.delta.tool_calls.iter().flatten() {
                    calls.add(fragment);
                }
                if let Some(piece) = choice.delta.content.filter(|t| !t.is_empty()) {
                    self.answer.push_str(&piece);
                    if self.timings.ttft_ms.is_none() {
                        // The first text of an answer is never held back.
                        self.timings.ttft_ms = Some(millis(self.received.elapsed()));
                        self.outbox.emit(AnswerEvent::Delta(piece))?;
                    } else if burst.is_empty() && chunks.quiet_before_last() >= PACED_GAP {
                        // Paced: no company is coming within a turn.
                        self.outbox.emit(AnswerEvent::Delta(piece))?;
                    } else if burst.push(AnswerEvent::Delta(piece)) {
                        self.flush(burst)?;
                    }
                }
            }
        }
    }
}
