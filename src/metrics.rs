//! `GET /metrics` in the Prometheus text format. Each part owns the instruments it updates
//! ([`AnswerMetrics`] for exchanges, [`OcrMetrics`] for recognitions, the HTTP counter here);
//! the numbers other parts already keep (permits, queue, writer, engines) are read at scrape time.
//! One registry per application, so several apps in one process (the tests) never mix counts.

use std::sync::Mutex;

use axum::http::{Method, StatusCode};
use prometheus::{
    Encoder as _, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    Opts, Registry, TextEncoder,
};

use crate::answer::{ExchangeOutcome, ExchangeStatus};
use crate::store::WriterStats;

const NAMESPACE: &str = "chat_proxy";

/// Seconds, from a millisecond to two minutes: queue waits, first tokens, OCR runs, response
/// heads.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Seconds, from a tenth to ten minutes: whole answers, which stream for a while.
const STREAM_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help).namespace(NAMESPACE), labels)
        .expect("static metric definition")
}

fn histogram(name: &str, help: &str, buckets: &[f64]) -> Histogram {
    Histogram::with_opts(
        HistogramOpts::new(name, help)
            .namespace(NAMESPACE)
            .buckets(buckets.to_vec()),
    )
    .expect("static metric definition")
}

fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::with_opts(Opts::new(name, help).namespace(NAMESPACE))
        .expect("static metric definition")
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::with_opts(Opts::new(name, help).namespace(NAMESPACE))
        .expect("static metric definition")
}

/// What `/answer` exchanges record as they end, and the per-client limit refusals.
#[derive(Clone)]
pub struct AnswerMetrics {
    queue_wait: Histogram,
    ttft: Histogram,
    total: Histogram,
    finished: IntCounterVec,
    upstream_errors: IntCounterVec,
    rate_limited: IntCounterVec,
}

impl Default for AnswerMetrics {
    fn default() -> Self {
        Self {
            queue_wait: histogram(
                "queue_wait_seconds",
                "Time /answer requests waited for an upstream permit.",
                LATENCY_BUCKETS,
            ),
            ttft: histogram(
                "time_to_first_token_seconds",
                "From a request's arrival to the first answer text.",
                LATENCY_BUCKETS,
            ),
            total: histogram(
                "answer_duration_seconds",
                "From a request's arrival to the end of its answer, whatever the end.",
                STREAM_BUCKETS,
            ),
            finished: counter_vec(
                "answers_total",
                "Finished /answer exchanges by how they ended.",
                &["status"],
            ),
            upstream_errors: counter_vec(
                "upstream_errors_total",
                "Exchanges that failed because of the upstream, by error code.",
                &["kind"],
            ),
            rate_limited: counter_vec(
                "client_limited_total",
                "/answer requests refused by a per-client limit.",
                &["limit"],
            ),
        }
    }
}

impl AnswerMetrics {
    pub fn observe(&self, outcome: &ExchangeOutcome) {
        let status = outcome.status;
        self.finished.with_label_values(&[status.as_str()]).inc();
        if status != ExchangeStatus::QueueTimeout {
            self.queue_wait
                .observe(outcome.timings.queue_ms as f64 / 1000.0);
        }
        if let Some(ttft_ms) = outcome.timings.ttft_ms {
            self.ttft.observe(ttft_ms as f64 / 1000.0);
        }
        self.total.observe(outcome.timings.total_ms as f64 / 1000.0);
        if let (ExchangeStatus::Error, Some(err)) = (status, &outcome.error) {
            self.upstream_errors.with_label_values(&[err.code()]).inc();
        }
    }

    /// A request refused by the per-client `concurrency` or `rate` limit.
    pub fn limited(&self, limit: &str) {
        self.rate_limited.with_label_values(&[limit]).inc();
    }
}

/// What each recognition records.
#[derive(Clone)]
pub struct OcrMetrics {
    duration: HistogramVec,
}

impl Default for OcrMetrics {
    fn default() -> Self {
        Self {
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "ocr_duration_seconds",
                    "Whole OCR runs (fetch, recognition, extraction) by outcome: ok or the error code.",
                )
                .namespace(NAMESPACE)
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["outcome"],
            )
            .expect("static metric definition"),
        }
    }
}

impl OcrMetrics {
    pub fn observe(&self, outcome: &str, elapsed_ms: u64) {
        self.duration
            .with_label_values(&[outcome])
            .observe(elapsed_ms as f64 / 1000.0);
    }
}

/// The numbers other parts keep, read by the caller at scrape time: `Metrics` knows none of
/// those parts.
#[derive(Debug, Clone)]
pub struct Readings {
    pub streams_open: usize,
    pub permits_in_use: usize,
    pub permits_total: usize,
    pub queue_length: usize,
    pub ocr_engines: usize,
    pub ocr_engines_busy: usize,
    pub writer: WriterStats,
    /// Whether the shared permit pool's Redis answers (`None` without `[cluster]`).
    pub cluster_up: Option<bool>,
    /// Script calls made to that Redis so far.
    pub redis_calls: u64,
}

/// Numbers kept elsewhere, copied in at each scrape.
struct Sampled {
    streams_open: IntGauge,
    permits_in_use: IntGauge,
    permits_total: IntGauge,
    queue_length: IntGauge,
    ocr_engines: IntGauge,
    ocr_engines_busy: IntGauge,
    writer_backlog: IntGauge,
    writer_database_up: IntGauge,
    cluster_up: IntGauge,
    redis_calls: IntCounter,
    rows_written: IntCounter,
    write_failures: IntCounter,
    rows_spilled: IntCounter,
    rows_replayed: IntCounter,
}

pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    /// Held while a scrape copies values in, so two scrapes never interleave.
    sampled: Mutex<Sampled>,
}

impl Metrics {
    pub fn new(answer: &AnswerMetrics, ocr: &OcrMetrics) -> Self {
        let http_requests = counter_vec(
            "http_requests_total",
            "HTTP requests by method, route and response status.",
            &["method", "route", "status"],
        );
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "From a request's arrival to its response head, by method, route and status (a stream's length is answer_duration_seconds).",
            )
            .namespace(NAMESPACE)
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["method", "route", "status"],
        )
        .expect("static metric definition");
        let sampled = Sampled {
            streams_open: gauge("answer_streams_open", "/answer exchanges running now."),
            permits_in_use: gauge("upstream_permits_in_use", "Upstream requests open now."),
            permits_total: gauge("upstream_permits", "Upstream requests allowed at once."),
            queue_length: gauge("queue_length", "Requests waiting for an upstream permit."),
            ocr_engines: gauge("ocr_engines", "Size of the Tesseract engine pool."),
            ocr_engines_busy: gauge("ocr_engines_busy", "Tesseract engines recognising now."),
            writer_backlog: gauge(
                "log_writer_backlog",
                "Log rows in memory waiting for the database.",
            ),
            writer_database_up: gauge(
                "log_writer_database_up",
                "1 when the log writer's last database write (before any write, its start-up check) succeeded.",
            ),
            cluster_up: gauge(
                "cluster_up",
                "1 while the Redis of the shared permit pool answers (and always without [cluster]); 0 while it does not and cluster.on_redis_down applies.",
            ),
            redis_calls: counter(
                "cluster_redis_calls_total",
                "Script calls made to the shared permit pool's Redis.",
            ),
            rows_written: counter(
                "log_rows_written_total",
                "Log rows written to the database.",
            ),
            write_failures: counter(
                "log_write_failures_total",
                "Failed attempts to write a batch of log rows.",
            ),
            rows_spilled: counter(
                "log_rows_spilled_total",
                "Log rows saved to the spill file while the database was unavailable.",
            ),
            rows_replayed: counter(
                "log_rows_replayed_total",
                "Spilled log rows later written to the database.",
            ),
        };
        let registry = Registry::new();
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(http_requests.clone()),
            Box::new(http_duration.clone()),
            Box::new(answer.queue_wait.clone()),
            Box::new(answer.ttft.clone()),
            Box::new(answer.total.clone()),
            // CPU seconds, resident memory, open files, threads: read from /proc at each scrape.
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
            Box::new(answer.finished.clone()),
            Box::new(answer.upstream_errors.clone()),
            Box::new(answer.rate_limited.clone()),
            Box::new(ocr.duration.clone()),
            Box::new(sampled.streams_open.clone()),
            Box::new(sampled.permits_in_use.clone()),
            Box::new(sampled.permits_total.clone()),
            Box::new(sampled.queue_length.clone()),
            Box::new(sampled.ocr_engines.clone()),
            Box::new(sampled.ocr_engines_busy.clone()),
            Box::new(sampled.writer_backlog.clone()),
            Box::new(sampled.writer_database_up.clone()),
            Box::new(sampled.cluster_up.clone()),
            Box::new(sampled.redis_calls.clone()),
            Box::new(sampled.rows_written.clone()),
            Box::new(sampled.write_failures.clone()),
            Box::new(sampled.rows_spilled.clone()),
            Box::new(sampled.rows_replayed.clone()),
        ];
        for collector in collectors {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        Self {
            registry,
            http_requests,
            http_duration,
            sampled: Mutex::new(sampled),
        }
    }

    /// Counts one answered HTTP request, and the time to its response head. `route` is the
    /// matched route pattern, so the label set stays small whatever paths clients send.
    pub fn count_request(
        &self,
        method: &Method,
        route: &str,
        status: StatusCode,
        head_after: std::time::Duration,
    ) {
        let method = match *method {
            Method::GET
            | Method::POST
            | Method::PATCH
            | Method::DELETE
            | Method::OPTIONS
            | Method::HEAD => method.as_str(),
            _ => "other",
        };
        let labels = [method, route, status.as_str()];
        self.http_requests.with_label_values(&labels).inc();
        self.http_duration
            .with_label_values(&labels)
            .observe(head_after.as_secs_f64());
    }

    /// The exposition, with `readings` copied in.
    pub fn render(&self, readings: &Readings) -> String {
        {
            let sampled = self.sampled.lock().expect("metrics lock");
            sampled.streams_open.set(as_i64(readings.streams_open));
            sampled.permits_in_use.set(as_i64(readings.permits_in_use));
            sampled.permits_total.set(as_i64(readings.permits_total));
            sampled.queue_length.set(as_i64(readings.queue_length));
            sampled.ocr_engines.set(as_i64(readings.ocr_engines));
            sampled
                .ocr_engines_busy
                .set(as_i64(readings.ocr_engines_busy));
            let writer = &readings.writer;
            sampled.writer_backlog.set(as_i64(writer.backlog));
            sampled
                .writer_database_up
                .set(i64::from(writer.database_ok));
            sampled
                .cluster_up
                .set(i64::from(readings.cluster_up.unwrap_or(true)));
            catch_up(&sampled.redis_calls, readings.redis_calls);
            catch_up(&sampled.rows_written, writer.written);
            catch_up(&sampled.write_failures, writer.failed_attempts);
            catch_up(&sampled.rows_spilled, writer.spilled);
            catch_up(&sampled.rows_replayed, writer.replayed);
        }
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut text)
            .expect("the text encoder writes to memory");
        String::from_utf8(text).expect("the text format is UTF-8")
    }
}

/// Moves a counter up to a total kept elsewhere (which only grows).
fn catch_up(counter: &IntCounter, total: u64) {
    let seen = counter.get();
    if total > seen {
        counter.inc_by(total - seen);
    }
}

fn as_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
