//! One open upstream response as parsed chunks: its events decoded ([`super::sse`]), each
//! `data` parsed as a chunk, and the first-chunk, chunk-gap and total deadlines kept with one
//! timer.

use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use serde_json::Value;
use tokio::time::{Instant, Sleep, sleep_until};

use super::sse::SseDecoder;
use super::wire::ChatCompletionChunk;
use super::{TimeoutPhase, UpstreamError};

/// The response body's bytes as they arrive.
pub(super) type Body = Pin<Box<dyn Stream<Item = Result<bytes::Bytes, reqwest::Error>> + Send>>;

/// The parsed chunks of one open upstream response. Dropping it aborts the HTTP request.
pub struct ChunkStream {
    body: Body,
    /// Set once the body has ended.
    body_ended: bool,
    events: SseDecoder,
    started: Instant,
    first_deadline: Instant,
    total_deadline: Instant,
    chunk_gap_timeout: Duration,
    /// When the last event arrived; none before the first.
    last_event: Option<Instant>,
    /// How long the upstream was quiet before the last event.
    quiet: Duration,
    /// One timer for the whole stream, set no later than the deadline in force. An event only
    /// notes its time: the deadline it moves is checked when the timer fires, so a stream of
    /// many chunks registers a timer a few times, not once per chunk.
    timer: Pin<Box<Sleep>>,
    finished: bool,
}

impl ChunkStream {
    /// The `body` of a call sent at `started`, with the timeouts of `upstream.*_timeout_ms`.
    pub(super) fn new(
        body: Body,
        started: Instant,
        first_chunk_timeout: Duration,
        chunk_gap_timeout: Duration,
        total_timeout: Duration,
    ) -> Self {
        let first_deadline = started + first_chunk_timeout;
        let total_deadline = started + total_timeout;
        Self {
            body,
            body_ended: false,
            events: SseDecoder::default(),
            started,
            first_deadline,
            total_deadline,
            chunk_gap_timeout,
            last_event: None,
            quiet: Duration::ZERO,
            timer: Box::pin(sleep_until(first_deadline.min(total_deadline))),
            finished: false,
        }
    }

    /// The next chunk, `None` after `[DONE]`, or the error that ended the stream. A stream that
    /// ends without `[DONE]` is [`UpstreamError::Cut`], never a normal end.
    pub async fn next_chunk(&mut self) -> Option<Result<ChatCompletionChunk, UpstreamError>> {
        if self.finished {
            return None;
        }
        let result = self.read_chunk().await;
        if !matches!(result, Some(Ok(_))) {
            self.finished = true;
        }
        result
    }

    /// The deadline in force and the phase it belongs to.
    fn deadline(&self) -> (Instant, TimeoutPhase) {
        let (deadline, phase) = match self.last_event {
            None => (self.first_deadline, TimeoutPhase::FirstChunk),
            Some(last) => (last + self.chunk_gap_timeout, TimeoutPhase::ChunkGap),
        };
        if self.total_deadline <= deadline {
            (self.total_deadline, TimeoutPhase::Total)
        } else {
            (deadline, phase)
        }
    }

    /// How long the upstream was quiet before the chunk last returned (from the request, for
    /// the first): a paced answer's chunks come milliseconds apart, a burst's microseconds.
    pub fn quiet_before_last(&self) -> Duration {
        self.quiet
    }

    /// An event arrived: the gap deadline runs from now.
    fn note_event(&mut self) {
        let now = Instant::now();
        let last = self.last_event.replace(now);
        self.quiet = now - last.unwrap_or(self.started);
        if last.is_none() {
            // From the first event on, the gap deadline applies, and it may come before the
            // first-chunk deadline the timer was set for.
            let (deadline, _) = self.deadline();
            self.timer.as_mut().reset(deadline);
        }
    }

    /// The body's next bytes, or the timeout that came first.
    async fn next_bytes(
        &mut self,
    ) -> Result<Option<Result<bytes::Bytes, reqwest::Error>>, UpstreamError> {
        loop {
            tokio::select! {
                biased;
                bytes = self.body.next() => return Ok(bytes),
                () = self.timer.as_mut() => {
                    let (deadline, phase) = self.deadline();
                    if Instant::now() < deadline {
                        // Events came since the timer was set: it waits for the later deadline.
                        self.timer.as_mut().reset(deadline);
                        continue;
                    }
                    let after = match phase {
                        TimeoutPhase::ChunkGap => self.chunk_gap_timeout,
                        _ => self.started.elapsed(),
                    };
                    return Err(UpstreamError::Timeout { phase, after });
                }
            }
        }
    }

    async fn read_chunk(&mut self) -> Option<Result<ChatCompletionChunk, UpstreamError>> {
        loop {
            let done = match self.events.next_data() {
                Some(Ok(data)) => {
                    let data = data.trim();
                    if data == "[DONE]" {
                        true
                    } else if data.is_empty() {
                        false
                    } else {
                        let chunk = parse_chunk(data);
                        self.note_event();
                        return Some(chunk);
                    }
                }
                Some(Err(err)) => return Some(Err(UpstreamError::Malformed(err.to_string()))),
                None if self.body_ended => return Some(Err(UpstreamError::Cut)),
                None => {
                    match self.next_bytes().await {
                        Err(timeout) => return Some(Err(timeout)),
                        Ok(Some(Ok(bytes))) => {
                            if let Err(err) = self.events.push(&bytes) {
                                return Some(Err(UpstreamError::Malformed(err.to_string())));
                            }
                        }
                        Ok(Some(Err(err))) => {
                            tracing::debug!(error = %crate::http_client::describe_reqwest(err), "upstream body failed");
                            return Some(Err(UpstreamError::Cut));
                        }
                        Ok(None) => {
                            self.body_ended = true;
                            self.events.end();
                        }
                    }
                    continue;
                }
            };
            self.note_event();
            if done {
                self.finish_body().await;
                return None;
            }
        }
    }

    /// Reads the body to its end (briefly) so the connection goes back to the pool instead of
    /// being closed with the body half-read.
    async fn finish_body(&mut self) {
        let drain = async { while self.body.next().await.is_some() {} };
        let _ = tokio::time::timeout(Duration::from_millis(50), drain).await;
    }
}

fn parse_chunk(data: &str) -> Result<ChatCompletionChunk, UpstreamError> {
    let chunk: ChatCompletionChunk = serde_json::from_str(data).map_err(|e| {
        let shown: String = data.chars().take(120).collect();
        UpstreamError::Malformed(format!("{e} in `{shown}`"))
    })?;
    if let Some(error) = &chunk.error {
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| error.to_string());
        return Err(UpstreamError::Reported(message));
    }
    Ok(chunk)
}

#[cfg(test)]
mod tests {
    use tokio::time::sleep;

    use super::*;

    #[test]
    fn chunks_parse_content_usage_and_errors() {
        let chunk = parse_chunk(
            r#"{"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}"#,
        )
        .expect("valid chunk");
        assert_eq!(chunk.choices[0].delta.content.as_deref(), Some("hi"));
        let chunk = parse_chunk(
            r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}"#,
        )
        .expect("usage chunk");
        assert_eq!(chunk.usage.expect("usage").total_tokens, 8);
        assert!(matches!(
            parse_chunk("{not json"),
            Err(UpstreamError::Malformed(_))
        ));
        assert!(matches!(
            parse_chunk(r#"{"error":{"message":"overloaded"}}"#),
            Err(UpstreamError::Reported(m)) if m == "overloaded"
        ));
    }

    /// A body that sends a chunk after each of `gaps`, then nothing more.
    fn paced_chunks(gaps: &'static [u64]) -> ChunkStream {
        let body = futures::stream::iter(gaps)
            .then(|gap| async move {
                sleep(Duration::from_secs(*gap)).await;
                Ok::<_, reqwest::Error>(bytes::Bytes::from_static(
                    b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n",
                ))
            })
            .chain(futures::stream::pending());
        ChunkStream::new(
            Box::pin(body),
            Instant::now(),
            Duration::from_secs(60),
            Duration::from_secs(5),
            Duration::from_secs(600),
        )
    }

    /// That `end` is a timeout of `phase`.
    fn assert_timeout(
        end: Option<Result<ChatCompletionChunk, UpstreamError>>,
        phase: TimeoutPhase,
    ) {
        match end {
            Some(Err(UpstreamError::Timeout { phase: got, .. })) => assert_eq!(got, phase),
            other => panic!("expected a {phase:?} timeout, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_gap_deadline_follows_the_last_chunk() {
        // Chunks 4 s apart never trip a 5 s gap, though a timer set at the first would.
        let mut chunks = paced_chunks(&[1, 4, 4, 4]);
        for _ in 0..4 {
            assert!(matches!(chunks.next_chunk().await, Some(Ok(_))));
        }
        let last = Instant::now();
        assert_timeout(chunks.next_chunk().await, TimeoutPhase::ChunkGap);
        assert_eq!(last.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_gap_shorter_than_the_first_chunk_timeout_applies_from_the_first_chunk() {
        let started = Instant::now();
        let mut chunks = paced_chunks(&[1]);
        assert!(matches!(chunks.next_chunk().await, Some(Ok(_))));
        assert_timeout(chunks.next_chunk().await, TimeoutPhase::ChunkGap);
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(6),
            "not the 60 s first-chunk timeout"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_first_chunk_is_the_first_chunk_timeout() {
        let started = Instant::now();
        let mut chunks = paced_chunks(&[]);
        assert_timeout(chunks.next_chunk().await, TimeoutPhase::FirstChunk);
        assert_eq!(started.elapsed(), Duration::from_secs(60));
    }
}
