//! A streamed `/v1/chat/completions` body in OpenAI's exact shape: `data:` lines of
//! `chat.completion.chunk` objects that share one id, `created` and `model`; the first delta
//! carries `role: "assistant"`, the last choice chunk the `finish_reason`, then (with
//! `include_usage`) a usage chunk with no choices, then `data: [DONE]`.
//!
//! The queue shows as SSE comments (`: queued position=N`), which the SDKs and front ends skip.
//! A failure after the stream began is a `data: {"error": {...}}` line and `data: [DONE]`: the
//! `openai` SDKs raise `APIError` on it, and a failed answer never ends with `finish_reason`.

use bytes::{BufMut as _, BytesMut};
use serde::Serialize;
use serde_json::json;

use crate::answer::AnswerEvent;
use crate::answer::tools::ToolCall;
use crate::error::ApiError;
use crate::routes::sse::{EventEncoder, is_plain, put_json};

use super::errors::OpenAiErrorBody;

/// Writes one stream's chunks.
pub struct ChunkEncoder {
    /// `data: {"id":…,"object":"chat.completion.chunk","created":…,"model":…,"choices":[`,
    /// written once: every chunk starts with it.
    head: Vec<u8>,
    /// `,"usage":null}` with `include_usage` (OpenAI's chunks then carry a null usage), else `}`.
    tail: &'static [u8],
    include_usage: bool,
    role_sent: bool,
}

impl ChunkEncoder {
    pub fn new(id: &str, created: i64, model: &str, include_usage: bool) -> Self {
        let mut head = b"data: {\"id\":".to_vec();
        serde_json::to_writer(&mut head, id).expect("a string serialises");
        head.extend_from_slice(b",\"object\":\"chat.completion.chunk\",\"created\":");
        head.extend_from_slice(created.to_string().as_bytes());
        head.extend_from_slice(b",\"model\":");
        serde_json::to_writer(&mut head, model).expect("a string serialises");
        head.extend_from_slice(b",\"choices\":[");
        Self {
            head,
            tail: if include_usage {
                b",\"usage\":null}\n\n"
            } else {
                b"}\n\n"
            },
            include_usage,
            role_sent: false,
        }
    }

    /// `{"index":0,"delta":DELTA,"logprobs":null,"finish_reason":REASON}]` between the head and
    /// the tail.
    fn put_choice(&self, frame: &mut BytesMut, delta: &impl Serialize, finish: Option<&str>) {
        frame.put_slice(&self.head);
        frame.put_slice(b"{\"index\":0,\"delta\":");
        put_json(frame, "delta", delta);
        frame.put_slice(b",\"logprobs\":null,\"finish_reason\":");
        put_json(frame, "finish_reason", &finish);
        frame.put_slice(b"}]");
        frame.put_slice(self.tail);
    }

    /// A content delta, the most common chunk: plain text is copied as it is.
    fn put_content(&mut self, frame: &mut BytesMut, text: &str) {
        if !self.role_sent || !is_plain(text) {
            let delta = self.role_delta(json!({ "content": text }));
            self.put_choice(frame, &delta, None);
            return;
        }
        frame.put_slice(&self.head);
        frame.put_slice(b"{\"index\":0,\"delta\":{\"content\":\"");
        frame.put_slice(text.as_bytes());
        frame.put_slice(b"\"},\"logprobs\":null,\"finish_reason\":null}]");
        frame.put_slice(self.tail);
    }

    /// `delta` with `role: "assistant"` added if no delta carried it yet.
    fn role_delta(&mut self, mut delta: serde_json::Value) -> serde_json::Value {
        if !self.role_sent {
            self.role_sent = true;
            delta["role"] = json!("assistant");
        }
        delta
    }

    fn put_tool_calls(&mut self, frame: &mut BytesMut, calls: &[ToolCall]) {
        let calls: Vec<_> = calls
            .iter()
            .enumerate()
            .map(|(index, call)| {
                json!({
                    "index": index, "id": call.id, "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                })
            })
            .collect();
        let delta = self.role_delta(json!({ "content": null, "tool_calls": calls }));
        self.put_choice(frame, &delta, None);
    }
}

impl EventEncoder for ChunkEncoder {
    const KEEP_ALIVE: &'static [u8] = b": keep-alive\n\n";

    fn encode(&mut self, frame: &mut BytesMut, event: AnswerEvent) -> bool {
        match event {
            // The head and id were settled before the stream; the proxy's own tools run out of
            // the client's sight, which sees the model's final answer.
            AnswerEvent::Meta(_) | AnswerEvent::ToolCall(_) | AnswerEvent::ToolResult(_) => false,
            AnswerEvent::Queued { position } => {
                frame.put_slice(format!(": queued position={position}\n\n").as_bytes());
                false
            }
            AnswerEvent::Delta(text) => {
                self.put_content(frame, &text);
                false
            }
            AnswerEvent::ClientToolCalls(calls) => {
                self.put_tool_calls(frame, &calls);
                false
            }
            AnswerEvent::Done(done) => {
                if !self.role_sent {
                    // An empty answer still says whose it is.
                    let delta = self.role_delta(json!({ "content": "" }));
                    self.put_choice(frame, &delta, None);
                }
                let reason = done.finish_reason.as_deref().unwrap_or("stop");
                self.put_choice(frame, &json!({}), Some(reason));
                if self.include_usage {
                    frame.put_slice(&self.head);
                    frame.put_slice(b"],\"usage\":");
                    put_json(frame, "usage", &done.usage);
                    frame.put_slice(b"}\n\n");
                }
                frame.put_slice(b"data: [DONE]\n\n");
                true
            }
            AnswerEvent::Failed(err) => {
                frame.put_slice(b"data: ");
                put_json(
                    frame,
                    "error",
                    &OpenAiErrorBody::from(&ApiError::from(&*err)),
                );
                frame.put_slice(b"\n\ndata: [DONE]\n\n");
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::answer::{DoneInfo, ExchangeError, Meta, Timings};
    use crate::upstream::wire::Usage;

    /// The `data:` payloads of a body, parsed, and its comment lines.
    fn lines(frame: &[u8]) -> (Vec<Value>, Vec<String>) {
        let text = std::str::from_utf8(frame).expect("UTF-8");
        let mut data = Vec::new();
        let mut comments = Vec::new();
        for block in text.split("\n\n").filter(|b| !b.is_empty()) {
            if let Some(payload) = block.strip_prefix("data: ") {
                data.push(if payload == "[DONE]" {
                    Value::String("[DONE]".into())
                } else {
                    serde_json::from_str(payload).expect("a JSON chunk")
                });
            } else {
                comments.push(block.to_owned());
            }
        }
        (data, comments)
    }

    fn done(reason: Option<&str>, usage: Option<Usage>) -> AnswerEvent {
        AnswerEvent::Done(Box::new(DoneInfo {
            finish_reason: reason.map(str::to_owned),
            usage,
            timings: Timings::default(),
            tool_calls: Vec::new(),
        }))
    }

    fn encode_all(encoder: &mut ChunkEncoder, events: Vec<AnswerEvent>) -> BytesMut {
        let mut frame = BytesMut::new();
        for event in events {
            encoder.encode(&mut frame, event);
        }
        frame
    }

    #[test]
    fn a_stream_in_openais_shape() {
        let mut encoder = ChunkEncoder::new("chatcmpl-r1", 1_700_000_000, "demo", true);
        let usage = Usage {
            prompt_tokens: 3,
            completion_tokens: 2,
            total_tokens: 5,
        };
        let frame = encode_all(
            &mut encoder,
            vec![
                AnswerEvent::Meta(Box::new(Meta {
                    request_id: "r1".into(),
                    model: "demo".into(),
                })),
                AnswerEvent::Queued { position: 2 },
                AnswerEvent::Delta("Hel".into()),
                AnswerEvent::Delta("lo \"you\"".into()),
                AnswerEvent::Delta("!".into()),
                done(Some("stop"), Some(usage)),
            ],
        );
        let (data, comments) = lines(&frame);
        assert_eq!(comments, [": queued position=2"]);
        assert_eq!(data.len(), 6, "{data:?}");
        for chunk in &data[..5] {
            assert_eq!(chunk["id"], "chatcmpl-r1");
            assert_eq!(chunk["object"], "chat.completion.chunk");
            assert_eq!(chunk["created"], 1_700_000_000);
            assert_eq!(chunk["model"], "demo");
        }
        assert!(data[..4].iter().all(|chunk| chunk["usage"].is_null()));
        assert_eq!(
            data[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": "Hel"})
        );
        assert_eq!(
            data[1]["choices"][0]["delta"],
            json!({"content": "lo \"you\""})
        );
        assert_eq!(data[2]["choices"][0]["delta"], json!({"content": "!"}));
        assert!(data[2]["choices"][0]["finish_reason"].is_null());
        assert_eq!(data[3]["choices"][0]["finish_reason"], "stop");
        assert_eq!(data[3]["choices"][0]["delta"], json!({}));
        assert_eq!(data[4]["choices"], json!([]));
        assert_eq!(data[4]["usage"]["total_tokens"], 5);
        assert_eq!(data[5], "[DONE]");
    }

    #[test]
    fn client_tool_calls_end_with_tool_calls_and_no_usage_chunk_without_asking() {
        let mut encoder = ChunkEncoder::new("chatcmpl-r2", 1, "m", false);
        let call = ToolCall {
            id: "call_1".into(),
            name: "lookup".into(),
            arguments: "{\"q\":1}".into(),
        };
        let frame = encode_all(
            &mut encoder,
            vec![
                AnswerEvent::ClientToolCalls(Box::new(vec![call])),
                done(Some("tool_calls"), None),
            ],
        );
        let (data, _) = lines(&frame);
        assert_eq!(data.len(), 3);
        let delta = &data[0]["choices"][0]["delta"];
        assert_eq!(delta["role"], "assistant");
        assert_eq!(delta["tool_calls"][0]["function"]["name"], "lookup");
        assert_eq!(delta["tool_calls"][0]["index"], 0);
        assert!(data[0].get("usage").is_none());
        assert_eq!(data[1]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(data[2], "[DONE]");
    }

    #[test]
    fn a_failure_is_an_error_line_then_done_and_never_a_finish_reason() {
        let mut encoder = ChunkEncoder::new("chatcmpl-r3", 1, "m", true);
        let cut = ExchangeError::Upstream(crate::upstream::UpstreamError::Cut);
        let frame = encode_all(
            &mut encoder,
            vec![
                AnswerEvent::Delta("partial".into()),
                AnswerEvent::Failed(Box::new(cut)),
            ],
        );
        let (data, _) = lines(&frame);
        assert_eq!(data.len(), 3);
        assert_eq!(data[1]["error"]["code"], "upstream_cut");
        assert_eq!(data[1]["error"]["type"], "server_error");
        assert!(data[1]["error"]["message"].as_str().is_some());
        assert_eq!(data[2], "[DONE]");
        assert!(data.iter().all(|d| {
            d.pointer("/choices/0/finish_reason")
                .is_none_or(Value::is_null)
        }));
    }
}
