//! The sections of `config.toml`, each with its defaults (the shipped file lists the same values).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::DEMO_BASE_URL;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port (the log line `listening on` names it).
    pub bind: String,
    /// How long streams in flight may run on after SIGTERM/SIGINT before they are ended.
    pub shutdown_grace_ms: u64,
    /// Interval of SSE keep-alive comments on an idle stream.
    pub keepalive_ms: u64,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// A client must send a whole request head within this of connecting (or of its first byte
    /// after an answered request on the same connection).
    pub header_read_timeout_ms: u64,
    /// A request's whole body must arrive within this of its head (408 and the connection closed
    /// otherwise). The response, however long its stream, is not bounded by it.
    pub body_read_timeout_ms: u64,
    /// A connection with no request in progress is closed after this.
    pub idle_timeout_ms: u64,
    /// An answer whose client takes none of its waiting events for this long ends as
    /// `client_too_slow` (the upstream is cancelled); a connection whose writes stay blocked
    /// for twice this is closed.
    pub client_write_timeout_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            shutdown_grace_ms: 10_000,
            keepalive_ms: 15_000,
            max_body_bytes: 1024 * 1024,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
            client_write_timeout_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Client keys (`Authorization: Bearer KEY`): each the key itself or `sha256:HEX` of it.
    pub keys: Vec<String>,
    /// Environment variable with more keys, comma-separated.
    pub keys_env: String,
    /// Keys (or `sha256:HEX`) that work like any key and may also read and correct every
    /// client's OCR results and jobs.
    pub admin_keys: Vec<String>,
    /// Run without keys on a non-loopback bind (refused otherwise).
    pub disabled: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            keys_env: "CHAT_PROXY_CLIENT_KEYS".into(),
            admin_keys: Vec::new(),
            disabled: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// `demo` for the built-in offline model, else the API root (`https://api.openai.com/v1`).
    pub base_url: String,
    /// Model name sent upstream.
    pub model: String,
    /// The model names a client may ask for (`model` of `/v1/chat/completions`), each a name
    /// or `{ name, upstream }` to send another name upstream. Empty: `[model]`. The first is the
    /// default of `/answer`.
    pub models: Vec<ModelEntry>,
    /// Name of the environment variable holding the API key (never the key itself).
    pub api_key_env: String,
    pub connect_timeout_ms: u64,
    /// From sending the request to the first streamed chunk (covers the response headers).
    pub first_chunk_timeout_ms: u64,
    /// Longest silence between two chunks once streaming.
    pub chunk_gap_timeout_ms: u64,
    /// Whole upstream request, first byte to last.
    pub total_timeout_ms: u64,
    /// Retries on connect errors, 429 and 5xx, only before anything reached the client.
    pub max_retries: u32,
    /// The first retry waits a random time up to this; the ceiling doubles on each retry.
    pub retry_backoff_ms: u64,
    /// The ceiling of a retry's wait never exceeds this. A 429 or 503 with `Retry-After` is
    /// waited for as asked, if that fits in `total_timeout_ms`.
    pub retry_max_backoff_ms: u64,
    /// Speak HTTP/2 without negotiation (h2c) to a plain-`http` upstream that supports it, so
    /// all streams share one connection. `https` upstreams negotiate HTTP/2 by themselves.
    pub http2_prior_knowledge: bool,
    /// While no call has reached the upstream for this long, a probe (`GET {base_url}/models`)
    /// checks that it answers, for `/health/ready`.
    pub health_check_ms: u64,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            base_url: DEMO_BASE_URL.into(),
            model: "demo".into(),
            models: Vec::new(),
            api_key_env: "CHAT_PROXY_API_KEY".into(),
            connect_timeout_ms: 5_000,
            first_chunk_timeout_ms: 60_000,
            chunk_gap_timeout_ms: 30_000,
            total_timeout_ms: 300_000,
            max_retries: 2,
            retry_backoff_ms: 200,
            retry_max_backoff_ms: 5_000,
            http2_prior_knowledge: false,
            health_check_ms: 10_000,
        }
    }
}

impl UpstreamConfig {
    pub fn is_demo(&self) -> bool {
        self.base_url == DEMO_BASE_URL
    }
}

/// One entry of `upstream.models`: a name clients use, sent upstream as it is or as `upstream`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ModelEntry {
    Name(String),
    Mapped(MappedModel),
}

/// `{ name = "fast", upstream = "qwen-turbo" }`: clients say `fast`, the upstream hears `qwen-turbo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappedModel {
    pub name: String,
    pub upstream: String,
}

impl ModelEntry {
    /// The name clients ask for.
    pub fn name(&self) -> &str {
        match self {
            Self::Name(name) | Self::Mapped(MappedModel { name, .. }) => name,
        }
    }

    /// The name sent upstream.
    pub fn upstream(&self) -> &str {
        match self {
            Self::Name(name) | Self::Mapped(MappedModel { upstream: name, .. }) => name,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Upstream requests open at once (the upstream's parallel limit).
    pub max_concurrent_upstream: usize,
    /// Longest wait for a permit before the request fails with `queue_timeout`.
    pub queue_timeout_ms: u64,
    /// Requests allowed to wait for a permit; one more is refused with 429 at once.
    pub max_queue: usize,
    /// Most messages in one `/answer` request.
    pub max_messages: usize,
    /// Most characters of message text in one `/answer` request.
    pub max_input_chars: usize,
    /// Answers (`/answer` and `/v1/chat/completions`) one client (key, or address when no keys are set) may have open at
    /// once; 0 for no limit.
    pub per_key_max_concurrent: usize,
    /// Answers one client may start per minute, on average; 0 for no limit.
    pub per_key_requests_per_minute: u32,
    /// Requests one client may start in a burst before the per-minute rate applies.
    pub per_key_burst: u32,
    /// Answer bytes one exchange may hold for a client that does not keep up; past it the
    /// answer ends as `client_too_slow`.
    pub max_buffered_answer_bytes: usize,
    /// The same over every exchange together.
    pub max_buffered_answer_bytes_total: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_concurrent_upstream: 5,
            queue_timeout_ms: 60_000,
            max_queue: 2_000,
            max_messages: 200,
            max_input_chars: 200_000,
            per_key_max_concurrent: 0,
            per_key_requests_per_minute: 0,
            per_key_burst: 10,
            max_buffered_answer_bytes: 1024 * 1024,
            max_buffered_answer_bytes_total: 256 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoConfig {
    /// Delay before the demo model's first chunk.
    pub first_chunk_delay_ms: u64,
    /// Delay between the demo model's chunks.
    pub token_delay_ms: u64,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            first_chunk_delay_ms: 150,
            token_delay_ms: 40,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://PATH?mode=rwc` (embedded default) or `mysql://USER@HOST:PORT/DB`.
    pub url: String,
    /// Name of the environment variable holding the database password, if any.
    pub password_env: String,
    pub max_connections: u32,
    pub connect_timeout_ms: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://data/chat-proxy.db?mode=rwc".into(),
            password_env: "CHAT_PROXY_DB_PASSWORD".into(),
            max_connections: 4,
            connect_timeout_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WriterConfig {
    /// Records held in memory waiting for the database; beyond it they go to the spill file.
    pub queue_capacity: usize,
    /// Most rows written in one transaction (in INSERTs of up to 64 rows).
    pub batch_size: usize,
    /// Longest a record waits for its batch to fill.
    pub flush_ms: u64,
    /// Append-only JSON-lines file for records the database could not take yet.
    pub spill_path: PathBuf,
    /// First retry delay after a failed write; doubled up to `retry_max_ms`.
    pub retry_initial_ms: u64,
    /// Longest retry delay; also how often an idle writer checks the database.
    pub retry_max_ms: u64,
    /// On shutdown, how long to keep trying the database before spilling the rest.
    pub drain_timeout_ms: u64,
    /// Folder of the crash journal: each exchange's start and end, so that a `kill -9` loses
    /// no row (the next start stores what it holds). Empty: `journal` beside the spill file.
    pub journal_dir: PathBuf,
    /// The journal is synced to disk at most this long after a line is written.
    pub journal_sync_ms: u64,
}

impl WriterConfig {
    /// `journal_dir`, or `journal` beside the spill file when it is empty.
    pub fn journal_dir(&self) -> PathBuf {
        if !self.journal_dir.as_os_str().is_empty() {
            return self.journal_dir.clone();
        }
        match self.spill_path.parent() {
            Some(folder) => folder.join("journal"),
            None => PathBuf::from("journal"),
        }
    }
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 10_000,
            batch_size: 500,
            flush_ms: 50,
            spill_path: PathBuf::from("data/spill.jsonl"),
            retry_initial_ms: 100,
            retry_max_ms: 5_000,
            drain_timeout_ms: 5_000,
            journal_dir: PathBuf::new(),
            journal_sync_ms: 10,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OcrConfig {
    /// Tesseract languages.
    pub languages: String,
    /// The OCR worker binary; empty means `chat-proxy-ocr` beside the server's executable.
    pub worker_program: PathBuf,
    /// Engines in the pool (recognitions at once); 0 means one per CPU core.
    pub pool_size: usize,
    /// Create the engines at start-up (about 0.2 s and 110 MB each) rather than on first use.
    pub preload: bool,
    /// Largest image accepted, downloaded or uploaded.
    pub max_image_bytes: usize,
    /// Largest image decoded, width times height; larger ones are refused before decoding
    /// (decompression bombs). Pages over 12 M pixels are scaled down to that for recognition.
    pub max_pixels: u64,
    pub connect_timeout_ms: u64,
    /// The whole download.
    pub fetch_timeout_ms: u64,
    pub max_redirects: usize,
    /// Hosts an `oss` image may come from: exact names or `*.suffix` patterns.
    pub oss_hosts: Vec<String>,
    /// Folder `7min_local` image paths are read from (`image_url` is a path inside it).
    pub local_root: PathBuf,
    /// Let downloads reach loopback and private addresses (for test setups only).
    pub allow_private_networks: bool,
    /// `url_type` when a request gives none (the model's tool calls, uploads).
    pub default_url_type: String,
    /// Longest a whole recognition may take, download included.
    pub timeout_ms: u64,
    /// Most images in one `POST /ocr/jobs`.
    pub max_job_items: usize,
    /// Job items not yet started that one client (key, or address without keys) may have;
    /// a job past it gets 429 with `Retry-After`.
    pub max_pending_items_per_key: usize,
    /// The same over every client together.
    pub max_pending_items: usize,
}

impl Default for OcrConfig {
    fn default() -> Self {
        Self {
            languages: "chi_sim+eng".into(),
            worker_program: PathBuf::new(),
            pool_size: 0,
            preload: true,
            max_image_bytes: 10 * 1024 * 1024,
            max_pixels: 25_000_000,
            connect_timeout_ms: 3_000,
            fetch_timeout_ms: 15_000,
            max_redirects: 3,
            oss_hosts: vec!["*.aliyuncs.com".into()],
            local_root: PathBuf::from("data/images"),
            allow_private_networks: false,
            default_url_type: "oss".into(),
            timeout_ms: 60_000,
            max_job_items: 1_000,
            max_pending_items_per_key: 2_000,
            max_pending_items: 10_000,
        }
    }
}

impl OcrConfig {
    pub fn engines(&self) -> usize {
        if self.pool_size > 0 {
            self.pool_size
        } else {
            std::thread::available_parallelism().map_or(1, usize::from)
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ToolsConfig {
    /// Offer the model the `ocr_image` tool (on `/answer` and `/v1/chat/completions`).
    pub enabled: bool,
    /// Most tool rounds in one answer; after that the model is asked once more without tools.
    pub max_rounds: usize,
    /// How the `image_url` parts of user messages go upstream while tools are on.
    pub image_parts: ImageParts,
}

impl Default for ToolsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_rounds: 3,
            image_parts: ImageParts::Reference,
        }
    }
}

/// How the `image_url` parts of user messages go upstream (`tools.image_parts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageParts {
    /// As text naming the image (`(image 1: URL)`, `attachment:N` for an inline one), so a model
    /// that reads only text can pass it to `ocr_image`.
    Reference,
    /// As they are, for a model that sees images itself.
    Forward,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PromptsConfig {
    /// Folder with `system.txt` and `ocr_tool.txt`, read at start-up.
    pub dir: PathBuf,
}

impl Default for PromptsConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("prompts"),
        }
    }
}
