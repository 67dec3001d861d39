//! What the caller of an OCR route may see, read from what the key check left on the request.

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::auth::{AdminKey, ClientKeyId};
use crate::ocr::Access;

impl<S: Send + Sync> FromRequestParts<S> for Access {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        let key = parts.extensions.get::<ClientKeyId>();
        let admin = parts.extensions.get::<AdminKey>().is_some();
        Ok(Access::new(key, admin))
    }
}
