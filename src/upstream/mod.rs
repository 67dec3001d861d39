//! The model API client: one shared `reqwest::Client`, OpenAI-compatible streaming
//! `/chat/completions`, retries before anything is relayed, and a timeout for every phase.

mod chunks;
mod error;
pub mod reachability;
pub mod retry;
mod sse;
pub mod wire;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::time::{Instant, sleep, timeout_at};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::config::{UpstreamConfig, ms};
pub use chunks::ChunkStream;
pub use error::{TimeoutPhase, UpstreamError};
pub use reachability::Reach;
use reachability::Reachability;
use retry::RetryPolicy;
use wire::{CallOptions, ChatCompletionRequest, StreamOptions, UpstreamMessage};

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

#[cfg(test)]
mod tests {
    use super::*;

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
