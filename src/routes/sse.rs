//! The body of a streamed answer: each exchange event in a protocol's wire form (an
//! [`EventEncoder`]: `/answer`'s named events here, OpenAI's chunks in `routes::openai`), and a
//! keep-alive comment after `server.keepalive_ms` without one.
//!
//! Every event already waiting in the queue goes out in the same frame, so a burst from the
//! upstream (many chunks in one read) costs one socket write instead of one per event; events
//! are never held back to wait for company.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::{BufMut as _, BytesMut};
use http_body::{Body, Frame};
use serde::Serialize;
use tokio::time::{Instant, Sleep};

use crate::answer::{AnswerEvent, AnswerEvents};
use crate::error::ErrorDetail;

/// Past this many bytes in one frame, the rest waits for the next frame.
const MAX_FRAME_BYTES: usize = 64 * 1024;

/// Room made before each event: most events fit, and the buffer grows in steps of this.
const FRAME_ROOM: usize = 256;

/// How one protocol writes an exchange's events.
pub trait EventEncoder: Send + Unpin + 'static {
    /// Sent after `server.keepalive_ms` without an event: an SSE comment, which clients skip.
    const KEEP_ALIVE: &'static [u8];

    /// Appends `event`'s bytes to `frame`; true if it is the last of the body.
    fn encode(&mut self, frame: &mut BytesMut, event: AnswerEvent) -> bool;
}

/// `/answer`'s wire form: one named event per exchange event.
pub struct NamedEvents;

impl EventEncoder for NamedEvents {
    const KEEP_ALIVE: &'static [u8] = b":\n\n";

    fn encode(&mut self, frame: &mut BytesMut, event: AnswerEvent) -> bool {
        // `done` and `error` are always the last event.
        let last = matches!(event, AnswerEvent::Done(_) | AnswerEvent::Failed(_));
        encode(frame, event);
        last
    }
}

pub struct EventStream<E = NamedEvents> {
    encoder: E,
    events: AnswerEvents,
    keep_alive: Duration,
    /// Fires no later than a keep-alive is due. A frame only notes its time in `last_frame`:
    /// the timer is moved when it fires, not on every frame.
    idle: Pin<Box<Sleep>>,
    last_frame: Instant,
    ended: bool,
    /// Frames are split off its front, so several share one allocation.
    buffer: BytesMut,
}

impl EventStream {
    pub fn new(events: AnswerEvents, keep_alive: Duration) -> Self {
        Self::with_encoder(NamedEvents, events, keep_alive)
    }
}

impl<E: EventEncoder> EventStream<E> {
    pub fn with_encoder(encoder: E, events: AnswerEvents, keep_alive: Duration) -> Self {
        Self {
            encoder,
            events,
            keep_alive,
            idle: Box::pin(tokio::time::sleep(keep_alive)),
            last_frame: Instant::now(),
            ended: false,
            buffer: BytesMut::new(),
        }
    }
}

/// The response of a streamed answer: its headers go out at once, its events as they come.
pub fn response<E: EventEncoder>(
    encoder: E,
    events: AnswerEvents,
    keep_alive: Duration,
) -> Response {
    let body = EventStream::with_encoder(encoder, events, keep_alive);
    let mut response = Response::new(axum::body::Body::new(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    // Proxies in front (nginx) must pass each event on at once.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

impl<E: EventEncoder> Body for EventStream<E> {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        let frame = &mut this.buffer;
        while frame.len() < MAX_FRAME_BYTES {
            match this.events.poll_recv(cx) {
                Poll::Ready(Some(event)) => {
                    frame.reserve(FRAME_ROOM);
                    // The body ends with its last event, so the end of the response goes out
                    // in the same write.
                    if this.encoder.encode(frame, event) {
                        this.ended = true;
                        break;
                    }
                }
                Poll::Ready(None) => {
                    this.ended = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        if !frame.is_empty() {
            let frame = frame.split().freeze();
            this.last_frame = Instant::now();
            return Poll::Ready(Some(Ok(Frame::data(frame))));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        while this.idle.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            let due = this.last_frame + this.keep_alive;
            if now < due {
                // Frames went out since the timer was set: it waits for the keep-alive they moved.
                this.idle.as_mut().reset(due);
                continue;
            }
            this.last_frame = now;
            this.idle.as_mut().reset(now + this.keep_alive);
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(E::KEEP_ALIVE)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.buffer.is_empty()
    }
}

#[derive(Serialize)]
struct QueuedData {
    position: usize,
}

fn encode(frame: &mut BytesMut, event: AnswerEvent) {
    match event {
        AnswerEvent::Meta(meta) => put_event(frame, "meta", &*meta),
        AnswerEvent::Queued { position } => put_event(frame, "queued", &QueuedData { position }),
        AnswerEvent::Delta(content) => put_delta(frame, &content),
        AnswerEvent::ToolCall(call) => put_event(frame, "tool_call", &*call),
        AnswerEvent::ToolResult(result) => put_event(frame, "tool_result", &*result),
        // `/answer` offers no client tools, but a call to one is a `tool_call` like any other.
        AnswerEvent::ClientToolCalls(calls) => {
            for call in calls.iter() {
                put_event(frame, "tool_call", call);
            }
        }
        AnswerEvent::Done(done) => put_event(frame, "done", &*done),
        AnswerEvent::Failed(err) => put_event(
            frame,
            "error",
            &ErrorDetail {
                code: err.code(),
                message: &err.to_string(),
            },
        ),
    }
}

/// Appends `event: delta\ndata: {"content":TEXT}\n\n`, what most events are. Text with nothing to
/// escape (no quote, backslash or control character) is copied as it is; the rest goes through
/// the serializer. Either way the bytes are the ones `put_event` would write.
fn put_delta(frame: &mut BytesMut, content: &str) {
    frame.put_slice(b"event: delta\ndata: {\"content\":");
    if is_plain(content) {
        frame.put_u8(b'"');
        frame.put_slice(content.as_bytes());
        frame.put_u8(b'"');
    } else {
        put_json(frame, "delta", content);
    }
    frame.put_slice(b"}\n\n");
}

/// Whether JSON would write `text` as it is: no quote, backslash or control character.
pub fn is_plain(text: &str) -> bool {
    text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\')
}

/// Appends `event: NAME\ndata: JSON\n\n`. The JSON is compact, so it never holds a newline.
fn put_event(frame: &mut BytesMut, name: &str, data: &impl Serialize) {
    frame.put_slice(b"event: ");
    frame.put_slice(name.as_bytes());
    frame.put_slice(b"\ndata: ");
    put_json(frame, name, data);
    frame.put_slice(b"\n\n");
}

/// Appends `data` as compact JSON (`null`, logged, if it does not serialise).
pub fn put_json(frame: &mut BytesMut, event: &str, data: &(impl Serialize + ?Sized)) {
    // Writing to memory cannot fail, and every payload is plain data (strings, numbers, JSON).
    if let Err(err) = serde_json::to_writer(frame.writer(), data) {
        tracing::error!(error = %err, event, "an SSE payload did not serialise");
        frame.put_slice(b"null");
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use super::*;
    use crate::answer::backlog::test_channel;
    use crate::answer::{DoneInfo, Meta, Timings};

    async fn next_frame(body: &mut EventStream) -> Option<String> {
        let frame = poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await?;
        let data = frame
            .expect("infallible")
            .into_data()
            .expect("a data frame");
        Some(String::from_utf8(data.to_vec()).expect("UTF-8"))
    }

    #[tokio::test]
    async fn waiting_events_share_one_frame_in_order() {
        let (tx, rx) = test_channel();
        let mut body = EventStream::new(rx, Duration::from_secs(60));
        tx.send(AnswerEvent::Meta(Box::new(Meta {
            request_id: "r1".into(),
            model: "m".into(),
        })))
        .await
        .expect("open");
        tx.send(AnswerEvent::Delta("a \"quoted\"\nline".into()))
            .await
            .expect("open");
        tx.send(AnswerEvent::Done(Box::new(DoneInfo {
            finish_reason: Some("stop".into()),
            usage: None,
            timings: Timings::default(),
            tool_calls: Vec::new(),
        })))
        .await
        .expect("open");
        let frame = next_frame(&mut body).await.expect("a frame");
        assert_eq!(
            frame,
            "event: meta\ndata: {\"request_id\":\"r1\",\"model\":\"m\"}\n\n\
             event: delta\ndata: {\"content\":\"a \\\"quoted\\\"\\nline\"}\n\n\
             event: done\ndata: {\"finish_reason\":\"stop\",\"timings\":{\"queue_ms\":0,\"ttft_ms\":null,\"total_ms\":0}}\n\n"
        );
        assert!(
            body.is_end_stream(),
            "the body ends with `done`, while the sender is still open"
        );
        assert_eq!(next_frame(&mut body).await, None);
        drop(tx);
    }

    #[tokio::test]
    async fn an_error_event_ends_the_body_and_a_closed_channel_too() {
        let (tx, rx) = test_channel();
        let mut body = EventStream::new(rx, Duration::from_secs(60));
        tx.send(AnswerEvent::Failed(Box::new(
            crate::answer::ExchangeError::ShuttingDown,
        )))
        .await
        .expect("open");
        let frame = next_frame(&mut body).await.expect("a frame");
        assert!(frame.starts_with("event: error\n"), "{frame}");
        assert!(body.is_end_stream());
        assert_eq!(next_frame(&mut body).await, None);

        let (tx, rx) = test_channel();
        let mut body = EventStream::new(rx, Duration::from_secs(60));
        tx.send(AnswerEvent::Delta("partial".into()))
            .await
            .expect("open");
        drop(tx);
        assert!(next_frame(&mut body).await.is_some());
        assert_eq!(next_frame(&mut body).await, None, "the channel closed");
        assert!(body.is_end_stream());
    }

    #[test]
    fn a_delta_is_written_as_the_serializer_writes_it() {
        for text in [
            "plain words ",
            "",
            "\u{4e2d}\u{6587} and emoji \u{1f600}",
            "a \"quote\" and a back\\slash",
            "line\nbreak\tand\r\u{0}\u{1f}",
            "\u{7f} DEL and \u{2028} separators \u{2029}",
            "</script>",
        ] {
            let mut fast = BytesMut::new();
            put_delta(&mut fast, text);
            let mut general = BytesMut::new();
            put_event(
                &mut general,
                "delta",
                &serde_json::json!({ "content": text }),
            );
            assert_eq!(fast, general, "{text:?}");
            let data = std::str::from_utf8(&fast[b"event: delta\ndata: ".len()..])
                .expect("UTF-8")
                .trim_end();
            let parsed: serde_json::Value = serde_json::from_str(data).expect("valid JSON");
            assert_eq!(parsed["content"], text);
        }
    }

    #[test]
    fn a_queued_event_stays_small() {
        // The client's queue holds every event at this size; only `Delta` and `Queued` are inline.
        assert!(std::mem::size_of::<AnswerEvent>() <= 32);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_stream_gets_a_comment_each_interval() {
        let (tx, rx) = test_channel();
        let mut body = EventStream::new(rx, Duration::from_secs(15));
        let started = Instant::now();
        assert_eq!(next_frame(&mut body).await.as_deref(), Some(":\n\n"));
        assert_eq!(started.elapsed(), Duration::from_secs(15));
        tx.send(AnswerEvent::Queued { position: 2 })
            .await
            .expect("open");
        assert_eq!(
            next_frame(&mut body).await.as_deref(),
            Some("event: queued\ndata: {\"position\":2}\n\n")
        );
        let sent = Instant::now();
        assert_eq!(next_frame(&mut body).await.as_deref(), Some(":\n\n"));
        assert_eq!(
            sent.elapsed(),
            Duration::from_secs(15),
            "an event resets the interval"
        );
    }
}
