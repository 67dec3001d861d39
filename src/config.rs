//! Typed settings: built-in defaults, then each `--config` file in order (key by key), then
//! `CHAT_PROXY__SECTION__KEY` environment variables. A bad value stops start-up with the key's name.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Prefix of environment variables that override config keys (`CHAT_PROXY__LIMITS__MAX_QUEUE=50`).
pub const ENV_PREFIX: &str = "CHAT_PROXY__";

/// Value of `upstream.base_url` that starts the built-in offline demo model.
pub const DEMO_BASE_URL: &str = "demo";

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub upstream: UpstreamConfig,
    pub limits: LimitsConfig,
    pub demo: DemoConfig,
    pub database: DatabaseConfig,
    pub writer: WriterConfig,
    pub ocr: OcrConfig,
    pub tools: ToolsConfig,
    pub prompts: PromptsConfig,
    pub log: LogConfig,
    pub cors: CorsConfig,
}

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
    /// A connection with no request in progress is closed after this.
    pub idle_timeout_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            shutdown_grace_ms: 10_000,
            keepalive_ms: 15_000,
            max_body_bytes: 1024 * 1024,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
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
    /// Run without keys on a non-loopback bind (refused otherwise).
    pub disabled: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            keys_env: "CHAT_PROXY_CLIENT_KEYS".into(),
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
    /// First backoff; doubled on each retry.
    pub retry_backoff_ms: u64,
    /// Speak HTTP/2 without negotiation (h2c) to a plain-`http` upstream that supports it, so
    /// all streams share one connection. `https` upstreams negotiate HTTP/2 by themselves.
    pub http2_prior_knowledge: bool,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            base_url: DEMO_BASE_URL.into(),
            model: "demo".into(),
            api_key_env: "CHAT_PROXY_API_KEY".into(),
            connect_timeout_ms: 5_000,
            first_chunk_timeout_ms: 60_000,
            chunk_gap_timeout_ms: 30_000,
            total_timeout_ms: 300_000,
            max_retries: 2,
            retry_backoff_ms: 200,
            http2_prior_knowledge: false,
        }
    }
}

impl UpstreamConfig {
    pub fn is_demo(&self) -> bool {
        self.base_url == DEMO_BASE_URL
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
    /// `/answer` requests one client (key, or address when no keys are set) may have open at
    /// once; 0 for no limit.
    pub per_key_max_concurrent: usize,
    /// `/answer` requests one client may start per minute, on average; 0 for no limit.
    pub per_key_requests_per_minute: u32,
    /// Requests one client may start in a burst before the per-minute rate applies.
    pub per_key_burst: u32,
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
    pub retry_max_ms: u64,
    /// On shutdown, how long to keep trying the database before spilling the rest.
    pub drain_timeout_ms: u64,
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
    /// Largest decoded image, width times height (decompression bombs are refused).
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
}

impl Default for OcrConfig {
    fn default() -> Self {
        Self {
            languages: "chi_sim+eng".into(),
            worker_program: PathBuf::new(),
            pool_size: 0,
            preload: true,
            max_image_bytes: 10 * 1024 * 1024,
            max_pixels: 40_000_000,
            connect_timeout_ms: 3_000,
            fetch_timeout_ms: 15_000,
            max_redirects: 3,
            oss_hosts: vec!["*.aliyuncs.com".into()],
            local_root: PathBuf::from("data/images"),
            allow_private_networks: false,
            default_url_type: "oss".into(),
            timeout_ms: 60_000,
            max_job_items: 1_000,
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
    /// Offer the model the `ocr_image` tool on `/answer`.
    pub enabled: bool,
    /// Most tool rounds in one answer; after that the model is asked once more without tools.
    pub max_rounds: usize,
}

impl Default for ToolsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_rounds: 3,
        }
    }
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// tracing filter, e.g. `info` or `chat_proxy=debug,info`; `RUST_LOG` wins when set.
    pub filter: String,
    /// Include the user's question and the model's reply in the exchange log line.
    pub user_text: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            filter: "info".into(),
            user_text: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Browser origins allowed to call the API (`https://chat.example.com`), or `*` for any.
    /// Empty: no CORS headers at all.
    pub allowed_origins: Vec<String>,
    /// How long browsers may cache a preflight answer.
    pub max_age_s: u64,
}

impl Default for CorsConfig {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            max_age_s: 600,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key `{key}`: {message}")]
    Key { key: String, message: String },
}

fn key_error(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Key {
        key: key.into(),
        message: message.into(),
    }
}

impl Config {
    /// Defaults, then `files` in order, then the process environment.
    pub fn load(files: &[PathBuf]) -> Result<Self, ConfigError> {
        Self::load_with_env(files, std::env::vars())
    }

    pub fn load_with_env(
        files: &[PathBuf],
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut merged = toml::Value::try_from(Config::default())
            .expect("the default config serialises to TOML");
        for path in files {
            merge(&mut merged, read_file(path)?);
        }
        let mut overrides: Vec<(String, String)> = env
            .into_iter()
            .filter(|(name, _)| name.starts_with(ENV_PREFIX))
            .collect();
        overrides.sort();
        for (name, raw) in overrides {
            apply_env_override(&mut merged, &name, &raw)?;
        }
        let config: Config = serde_path_to_error::deserialize(merged).map_err(|err| {
            let key = err.path().to_string();
            key_error(key, err.into_inner().to_string())
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks that serde cannot express; each failure names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server
            .bind
            .parse::<SocketAddr>()
            .map_err(|e| key_error("server.bind", format!("`{}`: {e}", self.server.bind)))?;
        positive("server.keepalive_ms", self.server.keepalive_ms)?;
        for key in &self.auth.keys {
            if let Some(hex) = key.strip_prefix("sha256:") {
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(key_error(
                        "auth.keys",
                        "a `sha256:` key needs 64 hex digits",
                    ));
                }
            } else if key.len() < 16 {
                return Err(key_error(
                    "auth.keys",
                    "a key must be at least 16 characters",
                ));
            }
        }
        positive("server.max_body_bytes", self.server.max_body_bytes as u64)?;
        positive(
            "server.header_read_timeout_ms",
            self.server.header_read_timeout_ms,
        )?;
        positive("server.idle_timeout_ms", self.server.idle_timeout_ms)?;
        if self.limits.per_key_requests_per_minute > 0 {
            positive("limits.per_key_burst", self.limits.per_key_burst.into())?;
        }
        for origin in &self.cors.allowed_origins {
            // An origin is exactly what a browser sends: scheme, host and port, nothing else.
            let exact = url::Url::parse(origin).is_ok_and(|url| {
                matches!(url.scheme(), "http" | "https")
                    && url.origin().ascii_serialization() == *origin
            });
            if origin != "*" && !exact {
                return Err(key_error(
                    "cors.allowed_origins",
                    format!(
                        "`{origin}` is not an origin such as `https://chat.example.com` (scheme and host, no path)"
                    ),
                ));
            }
        }
        if self.cors.allowed_origins.len() > 1 && self.cors.allowed_origins.iter().any(|o| o == "*")
        {
            return Err(key_error(
                "cors.allowed_origins",
                "`*` allows every origin and cannot be combined with others",
            ));
        }
        if !self.upstream.is_demo() {
            let url = url::Url::parse(&self.upstream.base_url).map_err(|e| {
                key_error(
                    "upstream.base_url",
                    format!(
                        "`{}` is neither `demo` nor a URL: {e}",
                        self.upstream.base_url
                    ),
                )
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(key_error("upstream.base_url", "must be http(s) or `demo`"));
            }
        }
        if self.upstream.model.trim().is_empty() {
            return Err(key_error("upstream.model", "must not be empty"));
        }
        if self.upstream.api_key_env.trim().is_empty() {
            return Err(key_error(
                "upstream.api_key_env",
                "must name an environment variable",
            ));
        }
        positive(
            "upstream.connect_timeout_ms",
            self.upstream.connect_timeout_ms,
        )?;
        positive(
            "upstream.first_chunk_timeout_ms",
            self.upstream.first_chunk_timeout_ms,
        )?;
        positive(
            "upstream.chunk_gap_timeout_ms",
            self.upstream.chunk_gap_timeout_ms,
        )?;
        positive("upstream.total_timeout_ms", self.upstream.total_timeout_ms)?;
        positive(
            "limits.max_concurrent_upstream",
            self.limits.max_concurrent_upstream as u64,
        )?;
        positive("limits.queue_timeout_ms", self.limits.queue_timeout_ms)?;
        positive("limits.max_messages", self.limits.max_messages as u64)?;
        positive("limits.max_input_chars", self.limits.max_input_chars as u64)?;
        let db = &self.database.url;
        if !(db.starts_with("sqlite:")
            || db.starts_with("mysql://")
            || db.starts_with("mariadb://"))
        {
            return Err(key_error(
                "database.url",
                "must start with `sqlite:` or `mysql://`",
            ));
        }
        positive(
            "database.max_connections",
            self.database.max_connections as u64,
        )?;
        positive("writer.queue_capacity", self.writer.queue_capacity as u64)?;
        positive("writer.batch_size", self.writer.batch_size as u64)?;
        positive("writer.flush_ms", self.writer.flush_ms)?;
        positive("writer.retry_initial_ms", self.writer.retry_initial_ms)?;
        if self.writer.retry_max_ms < self.writer.retry_initial_ms {
            return Err(key_error(
                "writer.retry_max_ms",
                "must be at least writer.retry_initial_ms",
            ));
        }
        if self.ocr.languages.trim().is_empty() {
            return Err(key_error(
                "ocr.languages",
                "must name at least one language",
            ));
        }
        positive("ocr.max_image_bytes", self.ocr.max_image_bytes as u64)?;
        positive("ocr.max_pixels", self.ocr.max_pixels)?;
        positive("ocr.connect_timeout_ms", self.ocr.connect_timeout_ms)?;
        positive("ocr.fetch_timeout_ms", self.ocr.fetch_timeout_ms)?;
        positive("ocr.timeout_ms", self.ocr.timeout_ms)?;
        positive("ocr.max_job_items", self.ocr.max_job_items as u64)?;
        positive("tools.max_rounds", self.tools.max_rounds as u64)?;
        if !crate::ocr::UrlType::NAMES.contains(&self.ocr.default_url_type.as_str()) {
            return Err(key_error(
                "ocr.default_url_type",
                format!("must be one of {}", crate::ocr::UrlType::NAMES.join(", ")),
            ));
        }
        for pattern in &self.ocr.oss_hosts {
            let host = pattern.strip_prefix("*.").unwrap_or(pattern);
            if host.is_empty() || host.contains('/') || host.contains('*') {
                return Err(key_error(
                    "ocr.oss_hosts",
                    format!("`{pattern}` is not a host name or `*.suffix` pattern"),
                ));
            }
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.filter)
            .map_err(|e| key_error("log.filter", e.to_string()))?;
        Ok(())
    }

    pub fn bind_addr(&self) -> SocketAddr {
        self.server
            .bind
            .parse()
            .expect("server.bind was validated at load")
    }
}

fn positive(key: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(key_error(key, "must be greater than 0"));
    }
    Ok(())
}

fn read_file(path: &Path) -> Result<toml::Value, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    Ok(toml::Value::Table(table))
}

/// Overlays `top` on `base`, table by table, so a file that sets one key keeps every other.
fn merge(base: &mut toml::Value, top: toml::Value) {
    match (base, top) {
        (toml::Value::Table(base), toml::Value::Table(top)) => {
            for (key, value) in top {
                match base.get_mut(&key) {
                    Some(slot) => merge(slot, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (slot, value) => *slot = value,
    }
}

/// Sets `CHAT_PROXY__SECTION__KEY=raw`, reading `raw` as the type the key already has, so
/// `CHAT_PROXY__UPSTREAM__MODEL=123` stays a string and a typo in a name is an error.
fn apply_env_override(root: &mut toml::Value, name: &str, raw: &str) -> Result<(), ConfigError> {
    let path: Vec<String> = name[ENV_PREFIX.len()..]
        .split("__")
        .map(str::to_ascii_lowercase)
        .collect();
    let key = path.join(".");
    let mut slot = root;
    for part in &path {
        slot = slot
            .as_table_mut()
            .and_then(|table| table.get_mut(part))
            .ok_or_else(|| key_error(&key, format!("{name} names no config key")))?;
    }
    let parsed = match slot {
        toml::Value::String(_) => toml::Value::String(raw.to_owned()),
        toml::Value::Table(_) => {
            return Err(key_error(
                &key,
                format!("{name} names a section, not a key"),
            ));
        }
        _ => {
            let doc: toml::Table = toml::from_str(&format!("v = {raw}"))
                .map_err(|_| key_error(&key, format!("{name}=`{raw}` is not a valid value")))?;
            doc.get("v").cloned().expect("the document has the key v")
        }
    };
    *slot = parsed;
    Ok(())
}

/// Milliseconds from config as a `Duration`.
pub fn ms(value: u64) -> Duration {
    Duration::from_millis(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("temp dir is writable");
        path
    }

    #[test]
    fn shipped_config_loads_with_defaults() {
        let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config.toml");
        let config = Config::load_with_env(&[shipped], env(&[])).expect("shipped config is valid");
        assert!(config.upstream.is_demo());
        assert_eq!(config.limits.max_concurrent_upstream, 5);
        assert_eq!(config.server.bind, "127.0.0.1:8080");
    }

    #[test]
    fn the_shipped_config_lists_every_key() {
        fn keys(value: &toml::Value, prefix: &str, out: &mut Vec<String>) {
            if let toml::Value::Table(table) = value {
                for (k, v) in table {
                    let name = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    if v.is_table() {
                        keys(v, &name, out);
                    } else {
                        out.push(name);
                    }
                }
            }
        }
        let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config.toml");
        let text = std::fs::read_to_string(shipped).expect("config.toml");
        let shipped: toml::Value = toml::from_str(&text).expect("valid TOML");
        let defaults = toml::Value::try_from(Config::default()).expect("serialises");
        let (mut want, mut have) = (Vec::new(), Vec::new());
        keys(&defaults, "", &mut want);
        keys(&shipped, "", &mut have);
        want.sort();
        have.sort();
        assert_eq!(have, want, "config.toml must list every key");
    }

    #[test]
    fn later_files_override_key_by_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let a = write(
            dir.path(),
            "a.toml",
            "[limits]\nmax_queue = 7\nqueue_timeout_ms = 100\n",
        );
        let b = write(dir.path(), "b.toml", "[limits]\nmax_queue = 9\n");
        let config = Config::load_with_env(&[a, b], env(&[])).expect("valid");
        assert_eq!(config.limits.max_queue, 9);
        assert_eq!(config.limits.queue_timeout_ms, 100);
        assert_eq!(config.limits.max_concurrent_upstream, 5);
    }

    #[test]
    fn env_overrides_keep_the_key_type() {
        let config = Config::load_with_env(
            &[],
            env(&[
                ("CHAT_PROXY__UPSTREAM__BASE_URL", "http://127.0.0.1:9/v1"),
                ("CHAT_PROXY__UPSTREAM__MODEL", "123"),
                ("CHAT_PROXY__LIMITS__MAX_CONCURRENT_UPSTREAM", "3"),
                ("OTHER", "x"),
            ]),
        )
        .expect("valid");
        assert_eq!(config.upstream.base_url, "http://127.0.0.1:9/v1");
        assert_eq!(config.upstream.model, "123");
        assert_eq!(config.limits.max_concurrent_upstream, 3);
    }

    #[test]
    fn bad_values_name_their_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cases = [
            ("[limits]\nmax_queue = \"many\"\n", "limits.max_queue"),
            (
                "[limits]\nmax_concurrent_upstream = 0\n",
                "limits.max_concurrent_upstream",
            ),
            ("[server]\nbind = \"nowhere\"\n", "server.bind"),
            ("[upstream]\nbase_url = \"ftp://x\"\n", "upstream.base_url"),
            ("[upstream]\ntypo_key = 1\n", "upstream"),
            (
                "[cors]\nallowed_origins = [\"chat.example.com\"]\n",
                "cors.allowed_origins",
            ),
            (
                "[cors]\nallowed_origins = [\"https://chat.example.com/\"]\n",
                "cors.allowed_origins",
            ),
            (
                "[cors]\nallowed_origins = [\"*\", \"https://a.example\"]\n",
                "cors.allowed_origins",
            ),
        ];
        for (text, key) in cases {
            let file = write(dir.path(), "bad.toml", text);
            let err = Config::load_with_env(&[file], env(&[])).expect_err(text);
            assert!(err.to_string().contains(key), "{text}: {err}");
        }
        let err = Config::load_with_env(&[], env(&[("CHAT_PROXY__LIMITS__MAX_QUEUE", "x")]))
            .expect_err("not a number");
        assert!(err.to_string().contains("limits.max_queue"), "{err}");
        let err = Config::load_with_env(&[], env(&[("CHAT_PROXY__LIMITS__MAX_QUEU", "1")]))
            .expect_err("typo");
        assert!(
            err.to_string().contains("CHAT_PROXY__LIMITS__MAX_QUEU"),
            "{err}"
        );
    }

    #[test]
    fn missing_file_is_an_error_naming_it() {
        let err = Config::load_with_env(&[PathBuf::from("/nonexistent/x.toml")], env(&[]))
            .expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/x.toml"));
    }
}
