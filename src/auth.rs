//! Client API keys: `Authorization: Bearer KEY`, checked against `auth.keys` (keys or their
//! `sha256:` hashes), the keys in the variable named by `auth.keys_env`, and `auth.admin_keys`
//! (keys that may also read and correct every client's OCR results). Only hashes are
//! kept, compared in constant time; a request's key is known downstream by its id (the first
//! 12 hex digits of its hash), never by the key itself.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::AuthConfig;
use crate::error::ApiError;

/// The id of the key a request came with (for logs and `chat_logs.client_key_id`).
#[derive(Debug, Clone)]
pub struct ClientKeyId(pub String);

/// Marks a request made with one of `auth.admin_keys`: it may read and correct every client's
/// OCR results and jobs.
#[derive(Debug, Clone, Copy)]
pub struct AdminKey;

/// The configured key hashes, each with whether it is an admin key; empty means no key is
/// needed.
#[derive(Debug, Clone, Default)]
pub struct ClientKeys {
    hashes: Arc<Vec<([u8; 32], bool)>>,
}

impl ClientKeys {
    /// Reads `auth.keys` and the `auth.keys_env` variable. A non-loopback bind with no key
    /// is refused unless `auth.disabled` says so.
    pub fn load(config: &AuthConfig, bind: SocketAddr) -> anyhow::Result<Self> {
        let from_env = std::env::var(&config.keys_env).unwrap_or_default();
        let mut hashes = Vec::new();
        for key in config
            .keys
            .iter()
            .map(String::as_str)
            .chain(from_env.split(',').map(str::trim).filter(|k| !k.is_empty()))
        {
            hashes.push((hash("auth.keys", key)?, false));
        }
        for key in &config.admin_keys {
            hashes.push((hash("auth.admin_keys", key)?, true));
        }
        if hashes.is_empty() && !bind.ip().is_loopback() {
            if !config.disabled {
                anyhow::bail!(
                    "config key `auth.keys`: server.bind {bind} is not loopback, so clients need keys \
                     (auth.keys or ${}); set auth.disabled = true to run open on purpose",
                    config.keys_env
                );
            }
            tracing::warn!(%bind, "auth.disabled: serving a non-loopback address without client keys");
        }
        Ok(Self {
            hashes: Arc::new(hashes),
        })
    }

    pub fn required(&self) -> bool {
        !self.hashes.is_empty()
    }

    /// The id of the matching key, and whether it is an admin key, if `presented` is one.
    fn check(&self, presented: &str) -> Option<(ClientKeyId, bool)> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        // Every stored hash is compared, so timing does not tell which one matched.
        for (hash, admin) in self.hashes.iter() {
            if bool::from(hash.ct_eq(&digest)) {
                found = Some((ClientKeyId(hex::encode(&hash[..6])), *admin));
            }
        }
        found
    }
}

/// A configured key's hash: `sha256:HEX` as given, or the hash of the key itself.
fn hash(config_key: &str, key: &str) -> anyhow::Result<[u8; 32]> {
    Ok(match key.strip_prefix("sha256:") {
        Some(hex) => {
            let bytes = hex::decode(hex)
                .map_err(|e| anyhow::anyhow!("config key `{config_key}`: bad sha256 hex: {e}"))?;
            bytes
                .try_into()
                .map_err(|_| anyhow::anyhow!("config key `{config_key}`: a sha256 is 32 bytes"))?
        }
        None => Sha256::digest(key.as_bytes()).into(),
    })
}

/// Lets a request through with a valid key (or when no key is configured); the health routes
/// and the chat page's own files are open (the page asks for the key itself).
pub async fn require_key(
    State(keys): State<ClientKeys>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if !keys.required() || is_open(path) {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .map(str::trim);
    match presented.and_then(|key| keys.check(key)) {
        Some((id, admin)) => {
            request.extensions_mut().insert(id);
            if admin {
                request.extensions_mut().insert(AdminKey);
            }
            next.run(request).await
        }
        None => {
            let message = if presented.is_some() {
                "the API key is not valid"
            } else {
                "an API key is required: Authorization: Bearer KEY"
            };
            let mut response =
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}

/// The health routes answer without a key: probes and monitors carry none.
fn is_open(path: &str) -> bool {
    matches!(
        path,
        "/health" | "/actuator/health" | "/health/live" | "/health/ready" | "/"
    ) || path.starts_with("/ui/")
}

/// The token of `Bearer TOKEN`; the scheme's name is case-insensitive (RFC 9110).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_read_in_any_case() {
        for header in ["Bearer k1", "bearer k1", "BEARER k1", "bEaReR   k1"] {
            assert_eq!(bearer_token(header).map(str::trim), Some("k1"), "{header}");
        }
        assert_eq!(bearer_token("Basic k1"), None);
        assert_eq!(bearer_token("Bearerk1"), None);
    }

    fn keys(list: &[&str]) -> ClientKeys {
        let config = AuthConfig {
            keys: list.iter().map(|k| k.to_string()).collect(),
            keys_env: "CHAT_PROXY_TEST_NO_SUCH_VAR".into(),
            admin_keys: vec!["admin-key-0123456789".into()],
            disabled: false,
        };
        ClientKeys::load(&config, "127.0.0.1:8080".parse().expect("addr")).expect("valid")
    }

    #[test]
    fn plain_and_hashed_keys_match_by_id() {
        let hashed = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(b"second-key-0123456789"))
        );
        let keys = keys(&["first-key-0123456789", &hashed]);
        let (first, admin) = keys.check("first-key-0123456789").expect("plain key");
        assert!(!admin);
        let (second, _) = keys.check("second-key-0123456789").expect("hashed key");
        assert_ne!(first.0, second.0);
        assert_eq!(first.0.len(), 12);
        assert!(keys.check("first-key-012345678").is_none());
        let (_, admin) = keys.check("admin-key-0123456789").expect("admin key");
        assert!(admin, "an admin key is a key, marked as admin");
    }

    #[test]
    fn an_open_non_loopback_bind_is_refused_unless_disabled() {
        let mut config = AuthConfig {
            keys_env: "CHAT_PROXY_TEST_NO_SUCH_VAR".into(),
            ..AuthConfig::default()
        };
        let public: SocketAddr = "0.0.0.0:8080".parse().expect("addr");
        let err = ClientKeys::load(&config, public).expect_err("open and public");
        assert!(err.to_string().contains("auth.keys"), "{err}");
        config.disabled = true;
        assert!(
            !ClientKeys::load(&config, public)
                .expect("allowed")
                .required()
        );
    }
}
