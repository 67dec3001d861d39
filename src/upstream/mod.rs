//! The model API client: one shared `reqwest::Client`, OpenAI-compatible streaming
//! `/chat/completions`, retries before anything is relayed, and a timeout for every phase.

mod error;
pub mod reachability;
pub mod retry;
pub mod sse;
pub mod wire;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::time::{Instant, Sleep, sleep, sleep_until, timeout_at};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::config::{UpstreamConfig, ms};
pub use error::{TimeoutPhase, UpstreamError};
pub use reachability::Reach;
use reachability::Reachability;
use retry::RetryPolicy;
use sse::SseDecoder;
use wire::{
    CallOptions, ChatCompletionChunk, ChatCompletionRequest, StreamOptions, UpstreamMessage,
};

/// HTTP/2 flow-control windows: room for a long answer per stream, and for many at once per
/// connection, so that WINDOW_UPDATE frames are rare.
const HTTP2_STREAM_WINDOW: u32 = 1 << 20;
const HTTP2_CONNECTION_WINDOW: u32 = 16 << 20;

/// Everything the client needs to know about the upstream, resolved at start-up.
#[derive(Clone)]
pub struct UpstreamClient {
    http: reqwest::Client,
    /// Parsed once: every request clones it rather than parsing the text again.
    endpoint: reqwest::Url,
    api_key: Option<SecretString>,
    first_chunk_timeout: Duration,
    chunk_gap_timeout: Duration,
    total_timeout: Duration,
    retry: RetryPolicy,
    /// Whether the upstream answered the last call or probe, for `/health/ready`.
    reach: Arc<Reachability>,
    /// `{base_url}/models`, what the probe asks.
    probe_url: reqwest::Url,
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClient")
            .field("endpoint", &self.endpoint.as_str())
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .finish_non_exhaustive()
    }
}

impl UpstreamClient {
    /// `base_url` is the resolved API root (the demo model's address when `upstream.base_url` is `demo`).
    /// `http2` forces HTTP/2 without negotiation (h2c); otherwise HTTP/1.1, or HTTP/2 when a TLS
    /// upstream offers it.
    pub fn new(
        config: &UpstreamConfig,
        base_url: &str,
        api_key: Option<SecretString>,
        http2: bool,
    ) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(ms(config.connect_timeout_ms))
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            // Over HTTP/2: fixed, roomy windows. An adaptive window costs a PING frame (one
            // more write) on most requests to estimate the bandwidth.
            .http2_initial_stream_window_size(HTTP2_STREAM_WINDOW)
            .http2_initial_connection_window_size(HTTP2_CONNECTION_WINDOW);
        if http2 {
            builder = builder.http2_prior_knowledge();
        }
        let http = builder
            .build()
            .context("building the upstream HTTP client")?;
        let endpoint = format!("{}/chat/completions", base_url.trim_end_matches('/'));
        let endpoint = reqwest::Url::parse(&endpoint)
            .with_context(|| format!("upstream.base_url: `{endpoint}` is not a URL"))?;
        let probe_url = format!("{}/models", base_url.trim_end_matches('/'));
        let probe_url = reqwest::Url::parse(&probe_url)
            .with_context(|| format!("upstream.base_url: `{probe_url}` is not a URL"))?;
        Ok(Self {
            http,
            endpoint,
            api_key,
            first_chunk_timeout: ms(config.first_chunk_timeout_ms),
            chunk_gap_timeout: ms(config.chunk_gap_timeout_ms),
            total_timeout: ms(config.total_timeout_ms),
            retry: RetryPolicy {
                max_retries: config.max_retries,
                base: ms(config.retry_backoff_ms),
                cap: ms(config.retry_max_backoff_ms),
            },
            reach: Arc::default(),
            probe_url,
        })
    }

    /// Whether the upstream answered the last call or probe.
    pub fn reach(&self) -> Reach {
        self.reach.now()
    }

    /// The probe that keeps [`Self::reach`] current while no call does, every `every` until
    /// `stop`.
    pub fn probe(
        &self,
        every: Duration,
        stop: CancellationToken,
    ) -> impl Future<Output = ()> + use<> {
        reachability::probe(
            self.reach.clone(),
            self.http.clone(),
            self.probe_url.clone(),
            every,
            stop,
        )
    }

    /// `upstream.total_timeout_ms`: the most one answer may take once it has its permit.
    pub fn total_timeout(&self) -> Duration {
        self.total_timeout
    }

    /// Opens a streaming completion. Connect errors, 429 and 5xx are retried as [`retry`] says,
    /// within `upstream.total_timeout_ms` from the first try; nothing has reached the client
    /// yet, so a retry is invisible to it.
    pub async fn open(
        &self,
        messages: &[UpstreamMessage],
        tools: Option<&RawValue>,
        call: CallOptions<'_>,
    ) -> Result<ChunkStream, UpstreamError> {
        let body = ChatCompletionRequest {
            model: call.model,
            messages,
            stream: true,
            stream_options: StreamOptions {
                include_usage: true,
            },
            tools,
            tool_choice: call.tool_choice.filter(|_| tools.is_some()),
            parallel_tool_calls: call.parallel_tool_calls.filter(|_| tools.is_some()),
            options: call.options,
        };
        let budget_ends = Instant::now() + self.total_timeout;
        let mut attempt = 0;
        loop {
            let span = tracing::debug_span!("upstream_attempt", attempt = attempt + 1);
            let err = match self.open_once(&body).instrument(span).await {
                Ok(stream) => return Ok(stream),
                Err(err) => err,
            };
            attempt += 1;
            let left = budget_ends.saturating_duration_since(Instant::now());
            let Some(wait) = self.retry.wait(attempt, &err, left) else {
                return Err(err);
            };
            tracing::warn!(error = %err, attempt, wait_ms = wait.as_millis() as u64, "upstream call failed; retrying");
            sleep(wait).await;
        }
    }

    async fn open_once(
        &self,
        body: &ChatCompletionRequest<'_>,
    ) -> Result<ChunkStream, UpstreamError> {
        let started = Instant::now();
        let first_deadline = started + self.first_chunk_timeout;
        let total_deadline = started + self.total_timeout;
        let mut request = self.http.post(self.endpoint.clone()).json(body);
        let mut trace = reqwest::header::HeaderMap::new();
        crate::telemetry::inject_trace(&mut trace);
        if !trace.is_empty() {
            request = request.headers(trace);
        }
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key.expose_secret());
        }
        let response = match timeout_at(first_deadline.min(total_deadline), request.send()).await {
            Err(_) => {
                return Err(UpstreamError::Timeout {
                    phase: TimeoutPhase::FirstChunk,
                    after: started.elapsed(),
                });
            }
            Ok(Err(err)) => {
                if err.is_connect() {
                    self.reach.report(false);
                }
                return Err(UpstreamError::Connect(
                    crate::http_client::describe_reqwest(err),
                ));
            }
            Ok(Ok(response)) => {
                self.reach.report(true);
                response
            }
        };
        let status = response.status();
        if !status.is_success() {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(retry::parse_retry_after);
            let message = read_error_body(response).await;
            return Err(UpstreamError::Status {
                status: status.as_u16(),
                message,
                retry_after,
            });
        }
        Ok(ChunkStream::new(
            Box::pin(response.bytes_stream()),
            started,
            self.first_chunk_timeout,
            self.chunk_gap_timeout,
            self.total_timeout,
        ))
    }
}

/// The upstream's own error message, if it sent the usual `{"error": {"message": ...}}`.
async fn read_error_body(response: reqwest::Response) -> String {
    const MAX: usize = 500;
    let bytes = tokio::time::timeout(Duration::from_secs(2), response.bytes())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let message = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
    let message = message.trim();
    match message.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &message[..cut]),
        None => message.to_owned(),
    }
}

/// The response body's bytes as they arrive.
type Body = Pin<Box<dyn Stream<Item = Result<bytes::Bytes, reqwest::Error>> + Send>>;

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
    fn new(
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

    #[test]
    fn only_connect_429_and_5xx_are_retried() {
        let status = |s| UpstreamError::Status {
            status: s,
            message: String::new(),
            retry_after: None,
        };
        assert!(status(429).is_retryable());
        assert!(status(503).is_retryable());
        assert!(!status(400).is_retryable());
        assert!(!status(401).is_retryable());
        assert!(UpstreamError::Connect("refused".into()).is_retryable());
        assert!(!UpstreamError::Cut.is_retryable());
    }
}
