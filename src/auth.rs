//! Client API keys: `Authorization: Bearer KEY`, checked against `auth.keys` (keys or their
//! `sha256:` hashes) and the keys in the variable named by `auth.keys_env`. Only hashes are
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

/// The configured key hashes; empty means no key is needed.
#[derive(Debug, Clone, Default)]
pub struct ClientKeys {
    hashes: Arc<Vec<[u8; 32]>>,
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
            hashes.push(match key.strip_prefix("sha256:") {
                Some(hex) => {
                    let bytes = hex::decode(hex).map_err(|e| {
                        anyhow::anyhow!("config key `auth.keys`: bad sha256 hex: {e}")
                    })?;
                    bytes.try_into().map_err(|_| {
                        anyhow::anyhow!("config key `auth.keys`: a sha256 is 32 bytes")
                    })?
                }
                None => Sha256::digest(key.as_bytes()).into(),
            });
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

    /// The id of the matching key, if `presented` is one of them.
    fn check(&self, presented: &str) -> Option<ClientKeyId> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        // Every stored hash is compared, so timing does not tell which one matched.
        for hash in self.hashes.iter() {
            if bool::from(hash.ct_eq(&digest)) {
                found = Some(ClientKeyId(hex::encode(&hash[..6])));
            }
        }
        found
    }
}

/// Lets a request through with a valid key (or when no key is configured); `/health` is open.
pub async fn require_key(
    State(keys): State<ClientKeys>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if !keys.required() || path == "/health" || path == "/actuator/health" {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .map(str::trim);
    match presented.and_then(|key| keys.check(key)) {
        Some(id) => {
            request.extensions_mut().insert(id);
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
        let first = keys.check("first-key-0123456789").expect("plain key");
        let second = keys.check("second-key-0123456789").expect("hashed key");
        assert_ne!(first.0, second.0);
        assert_eq!(first.0.len(), 12);
        assert!(keys.check("first-key-012345678").is_none());
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
