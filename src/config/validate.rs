//! Checks on the loaded settings that serde cannot express; each failure names its key.

use std::net::SocketAddr;

use super::{Config, ConfigError, OnRedisDown, key_error};

impl Config {
    /// Checks that serde cannot express; each failure names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server
            .bind
            .parse::<SocketAddr>()
            .map_err(|e| key_error("server.bind", format!("`{}`: {e}", self.server.bind)))?;
        positive("server.keepalive_ms", self.server.keepalive_ms)?;
        for (config_key, keys) in [
            ("auth.keys", &self.auth.keys),
            ("auth.admin_keys", &self.auth.admin_keys),
        ] {
            for key in keys {
                if let Some(hex) = key.strip_prefix("sha256:") {
                    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(key_error(config_key, "a `sha256:` key needs 64 hex digits"));
                    }
                } else if key.len() < 16 {
                    return Err(key_error(
                        config_key,
                        "a key must be at least 16 characters",
                    ));
                }
            }
        }
        positive("server.max_body_bytes", self.server.max_body_bytes as u64)?;
        positive(
            "server.header_read_timeout_ms",
            self.server.header_read_timeout_ms,
        )?;
        positive(
            "server.body_read_timeout_ms",
            self.server.body_read_timeout_ms,
        )?;
        positive("server.idle_timeout_ms", self.server.idle_timeout_ms)?;
        positive(
            "server.client_write_timeout_ms",
            self.server.client_write_timeout_ms,
        )?;
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
        let mut names = std::collections::HashSet::new();
        for entry in &self.upstream.models {
            let (name, upstream) = (entry.name(), entry.upstream());
            // A name travels in URLs (`/v1/models/{id}`, where a `/` is allowed, as in
            // `meta-llama/Llama-3.1-8B`) and in logs: printable ASCII, no spaces.
            let sane = |s: &str| {
                !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic())
            };
            if !sane(name) || upstream.trim().is_empty() {
                return Err(key_error(
                    "upstream.models",
                    format!(
                        "`{name}`: a name is 1 to 128 visible ASCII characters, and the upstream name is not empty"
                    ),
                ));
            }
            if !names.insert(name) {
                return Err(key_error(
                    "upstream.models",
                    format!("`{name}` is listed twice"),
                ));
            }
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
        positive("upstream.health_check_ms", self.upstream.health_check_ms)?;
        if self.upstream.retry_max_backoff_ms < self.upstream.retry_backoff_ms {
            return Err(key_error(
                "upstream.retry_max_backoff_ms",
                "must be at least upstream.retry_backoff_ms",
            ));
        }
        positive(
            "limits.max_concurrent_upstream",
            self.limits.max_concurrent_upstream as u64,
        )?;
        positive("limits.queue_timeout_ms", self.limits.queue_timeout_ms)?;
        positive("limits.max_messages", self.limits.max_messages as u64)?;
        positive("limits.max_input_chars", self.limits.max_input_chars as u64)?;
        positive(
            "limits.max_buffered_answer_bytes",
            self.limits.max_buffered_answer_bytes as u64,
        )?;
        if self.limits.max_buffered_answer_bytes_total < self.limits.max_buffered_answer_bytes {
            return Err(key_error(
                "limits.max_buffered_answer_bytes_total",
                "must be at least limits.max_buffered_answer_bytes",
            ));
        }
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
        positive("writer.journal_sync_ms", self.writer.journal_sync_ms)?;
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
        if self.ocr.max_pending_items_per_key < self.ocr.max_job_items {
            return Err(key_error(
                "ocr.max_pending_items_per_key",
                "must be at least ocr.max_job_items, or no full job could start",
            ));
        }
        if self.ocr.max_pending_items < self.ocr.max_pending_items_per_key {
            return Err(key_error(
                "ocr.max_pending_items",
                "must be at least ocr.max_pending_items_per_key",
            ));
        }
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
        self.validate_cluster()?;
        tracing_subscriber::EnvFilter::try_new(&self.log.filter)
            .map_err(|e| key_error("log.filter", e.to_string()))?;
        Ok(())
    }
}

impl Config {
    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let cluster = &self.cluster;
        if !cluster.enabled() {
            return Ok(());
        }
        let url = url::Url::parse(cluster.redis_url.trim())
            .map_err(|e| key_error("cluster.redis_url", format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "redis" | "redis+unix" | "unix") || url.cannot_be_a_base() {
            return Err(key_error(
                "cluster.redis_url",
                "must look like `redis://HOST:PORT/DB`",
            ));
        }
        let name_ok = !cluster.name.is_empty()
            && cluster.name.len() <= 64
            && cluster
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !name_ok {
            return Err(key_error(
                "cluster.name",
                "1 to 64 letters, digits, `-`, `_` or `.`",
            ));
        }
        if cluster.lease_ms < 2_000 {
            return Err(key_error(
                "cluster.lease_ms",
                "must be at least 2000 (a lease is renewed every quarter of it, and ended at half of it)",
            ));
        }
        if cluster.on_redis_down == OnRedisDown::Local
            && cluster.local_share > self.limits.max_concurrent_upstream
        {
            return Err(key_error(
                "cluster.local_share",
                "must be at most limits.max_concurrent_upstream",
            ));
        }
        Ok(())
    }
}

fn positive(key: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(key_error(key, "must be greater than 0"));
    }
    Ok(())
}
