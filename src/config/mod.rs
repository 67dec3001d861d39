//! Typed settings: built-in defaults, then each `--config` file in order (key by key), then
//! `CHAT_PROXY__SECTION__KEY` environment variables. A bad value stops start-up with the key's name.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod cluster;
mod operations;
mod sections;
mod validate;

pub use cluster::*;
pub use operations::*;
pub use sections::*;

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
    pub telemetry: TelemetryConfig,
    pub ui: UiConfig,
    pub cluster: ClusterConfig,
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

    pub fn bind_addr(&self) -> SocketAddr {
        self.server
            .bind
            .parse()
            .expect("server.bind was validated at load")
    }
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
        let config = Config::load_with_env(&[repo_path("config.toml")], env(&[]))
            .expect("shipped config is valid");
        assert!(config.upstream.is_demo());
        assert_eq!(config.limits.max_concurrent_upstream, 5);
        assert_eq!(config.server.bind, "127.0.0.1:8080");
    }

    /// Every key under `value` (`section.key`) with its value.
    fn leaf_keys(value: &toml::Value) -> Vec<(String, toml::Value)> {
        fn walk(value: &toml::Value, prefix: &str, out: &mut Vec<(String, toml::Value)>) {
            if let toml::Value::Table(table) = value {
                for (k, v) in table {
                    let name = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    if v.is_table() {
                        walk(v, &name, out);
                    } else {
                        out.push((name, v.clone()));
                    }
                }
            }
        }
        let mut out = Vec::new();
        walk(value, "", &mut out);
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn defaults() -> Vec<(String, toml::Value)> {
        leaf_keys(&toml::Value::try_from(Config::default()).expect("serialises"))
    }

    fn repo_path(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(name)
    }

    fn repo_file(name: &str) -> String {
        std::fs::read_to_string(repo_path(name)).expect("a file of the repository")
    }

    #[test]
    fn the_shipped_config_lists_every_key_with_its_default() {
        let shipped: toml::Value = toml::from_str(&repo_file("config.toml")).expect("valid TOML");
        assert_eq!(
            leaf_keys(&shipped),
            defaults(),
            "config.toml must list every key with its default"
        );
    }

    #[test]
    fn the_readme_lists_every_key_with_its_default() {
        let readme = repo_file("README.md");
        for (key, value) in defaults() {
            let shown = match &value {
                toml::Value::String(text) if text.is_empty() => "\"\"".to_owned(),
                toml::Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            let row = format!("| `{key}` | `{shown}` |");
            assert!(readme.contains(&row), "README.md has no row `{row}`");
        }
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
            (
                "[cluster]\nredis_url = \"http://127.0.0.1:6379\"\n",
                "cluster.redis_url",
            ),
            (
                "[cluster]\nredis_url = \"redis://127.0.0.1\"\nlease_ms = 1500\n",
                "cluster.lease_ms",
            ),
            (
                "[cluster]\nredis_url = \"redis://127.0.0.1\"\nname = \"a b\"\n",
                "cluster.name",
            ),
            (
                "[cluster]\nredis_url = \"redis://127.0.0.1\"\nlocal_share = 9\n",
                "cluster.local_share",
            ),
            (
                "[cluster]\nredis_url = \"redis://127.0.0.1\"\non_redis_down = \"maybe\"\n",
                "cluster.on_redis_down",
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
