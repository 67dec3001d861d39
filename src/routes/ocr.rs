//! `POST /ocr` (and the older clients' `POST /ocr_handler`): JSON `{image_url, url_type}` or a
//! multipart upload with the image in a part named `image`. Results are read back and corrected
//! in [`super::ocr_results`]; many images at once go through [`super::ocr_jobs`].

use axum::Json;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

use crate::auth::ClientKeyId;
use crate::error::{ApiError, ErrorBody};
use crate::ocr::{ImageRequest, OcrError, OcrResult, Priority, Requester, UrlType};
use crate::routes::request_id::RequestId;
use crate::routes::{body_error, upload_limit};
use crate::state::AppState;

/// `{image_url, url_type}`: where to fetch the image.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ImageBody {
    /// An `https` URL on a host in `ocr.oss_hosts`, or a path under `ocr.local_root`.
    image_url: String,
    #[schema(value_type = String, pattern = "^(oss|7min_local)$")]
    url_type: UrlType,
}

/// A multipart upload: the image in a part named `image`.
#[derive(Debug, utoipa::ToSchema)]
#[expect(
    dead_code,
    reason = "the spec's view of the body; `read_upload` reads it part by part"
)]
pub struct ImageUpload {
    #[schema(value_type = String, format = Binary)]
    image: Vec<u8>,
    /// `upload`, or left out.
    url_type: Option<String>,
}

/// What `POST /ocr` (and `/ocr_handler`) may answer.
#[derive(utoipa::IntoResponses)]
pub enum RecognizeResponses {
    /// The text and the funds found
    #[response(status = 200)]
    Found(OcrResult),
    /// Invalid body, or an image URL that is not allowed
    #[response(status = 400)]
    Invalid(ErrorBody<'static>),
    /// Missing or wrong client API key
    #[response(status = 401)]
    Unauthorized(ErrorBody<'static>),
    /// From a web page of another origin (`origin_not_allowed`)
    #[response(status = 403)]
    Forbidden(ErrorBody<'static>),
    /// No image at that URL or path
    #[response(status = 404)]
    NotFound(ErrorBody<'static>),
    /// The body did not arrive within `server.body_read_timeout_ms` (`body_timeout`)
    #[response(status = 408)]
    BodyTimeout(ErrorBody<'static>),
    /// Image too large (bytes or pixels), or the body itself (`body_too_large`)
    #[response(status = 413)]
    TooLarge(ErrorBody<'static>),
    /// Not a readable image
    #[response(status = 422)]
    Undecodable(ErrorBody<'static>),
    /// The OCR engine failed
    #[response(status = 500)]
    Engine(ErrorBody<'static>),
    /// Downloading the image failed
    #[response(status = 502)]
    Download(ErrorBody<'static>),
    /// Longer than `ocr.timeout_ms`
    #[response(status = 504)]
    Timeout(ErrorBody<'static>),
}

/// Recognise one image: fetched from `image_url`, or uploaded.
#[utoipa::path(
    post,
    path = "/ocr",
    tag = "ocr",
    request_body(content(
        (ImageBody = "application/json"),
        (ImageUpload = "multipart/form-data"),
    )),
    responses(RecognizeResponses),
    security((), ("client_key" = [])),
)]
pub async fn recognize(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    // The result belongs to the key that asked.
    let owner = request
        .extensions()
        .get::<ClientKeyId>()
        .map(|k| k.0.clone());
    let is_multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let limit = upload_limit(&state);
    let image = if is_multipart {
        let multipart = Multipart::from_request(request, &state)
            .await
            .map_err(|e| body_error(&e, e.status(), e.body_text(), limit))?;
        read_upload(multipart, state.ocr.config().max_image_bytes, limit).await?
    } else {
        // A JSON body names the image, it does not carry it: the JSON limit of every route.
        let json_limit = state.config.server.max_body_bytes;
        let body = axum::body::to_bytes(request.into_body(), json_limit)
            .await
            .map_err(|err| {
                let err = err.into_inner();
                let status = if err.is::<http_body_util::LengthLimitError>() {
                    StatusCode::PAYLOAD_TOO_LARGE
                } else {
                    StatusCode::BAD_REQUEST
                };
                body_error(&*err, status, err.to_string(), json_limit)
            })?;
        parse_json(&body)?
    };
    let result = state
        .ocr
        .recognize_logged(
            &state.log,
            Requester {
                request_id: &request_id,
                client_key_id: owner.as_deref(),
                priority: Priority::Interactive,
            },
            image,
        )
        .await
        .map_err(|e| ApiError::from(&e))?;
    Ok((StatusCode::OK, Json(result)).into_response())
}

fn parse_json(body: &[u8]) -> Result<ImageRequest, ApiError> {
    let body: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("body is not JSON: {e}")))?;
    parse_item(body, "")
}

/// One `{image_url, url_type}` as an [`ImageRequest`]; `at` prefixes the field names in
/// messages (`items[3].`).
pub(super) fn parse_item(item: Value, at: &str) -> Result<ImageRequest, ApiError> {
    let invalid = |m: String| ApiError::bad_request("invalid_request", m);
    if !item.is_object() {
        return Err(invalid(format!(
            "`{}` must be an object with image_url and url_type",
            at.trim_end_matches('.')
        )));
    }
    let body: ImageBody = serde_path_to_error::deserialize(item).map_err(|err| {
        let field = err.path().to_string();
        let inner = err.into_inner().to_string();
        invalid(match missing_field(&inner) {
            Some(missing) => format!("`{at}{missing}` is required"),
            None => format!("`{at}{field}`: {inner}"),
        })
    })?;
    if body.image_url.trim().is_empty() {
        return Err(invalid(format!("`{at}image_url` must not be empty")));
    }
    if body.url_type == UrlType::Upload {
        return Err(invalid(format!(
            "`{at}url_type` upload needs a multipart/form-data request with the image in a part named `image`"
        )));
    }
    Ok(ImageRequest {
        url_type: body.url_type,
        image_url: body.image_url,
        upload: None,
    })
}

/// The field serde's "missing field `x`" names.
fn missing_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
}

/// The same as `POST /ocr`, under the path older clients call.
#[utoipa::path(
    post,
    path = "/ocr_handler",
    tag = "ocr",
    request_body(content(
        (ImageBody = "application/json"),
        (ImageUpload = "multipart/form-data"),
    )),
    responses(RecognizeResponses),
    security((), ("client_key" = [])),
)]
pub async fn recognize_handler(
    state: State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    recognize(state, request).await
}

/// The image part of an upload: at most `cap` bytes, in a body of at most `limit`.
async fn read_upload(
    mut multipart: Multipart,
    cap: usize,
    limit: usize,
) -> Result<ImageRequest, ApiError> {
    let mut image: Option<(String, Bytes)> = None;
    while let Some(mut field) = multipart
        .next_field()
        .await
        .map_err(|e| body_error(&e, e.status(), e.body_text(), limit))?
    {
        match field.name() {
            Some("image") => {
                let name = field.file_name().unwrap_or("upload").to_owned();
                let mut data = Vec::new();
                while let Some(chunk) = field
                    .chunk()
                    .await
                    .map_err(|e| body_error(&e, e.status(), e.body_text(), limit))?
                {
                    if data.len() + chunk.len() > cap {
                        return Err(ApiError::from(&OcrError::TooLarge(format!(
                            "the image is larger than {cap} bytes"
                        ))));
                    }
                    data.extend_from_slice(&chunk);
                }
                image = Some((name, Bytes::from(data)));
            }
            Some("url_type") => {
                let value = field
                    .text()
                    .await
                    .map_err(|e| body_error(&e, e.status(), e.body_text(), limit))?;
                if !value.is_empty() {
                    UrlType::try_from(value).map_err(|err| {
                        ApiError::bad_request("invalid_request", format!("`url_type` {err}"))
                    })?;
                }
            }
            _ => {}
        }
    }
    let (name, bytes) = image.ok_or_else(|| {
        ApiError::bad_request(
            "invalid_request",
            "the multipart body needs the image in a part named `image`",
        )
    })?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_request",
            "the `image` part is empty",
        ));
    }
    Ok(ImageRequest {
        url_type: UrlType::Upload,
        image_url: name,
        upload: Some(bytes),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn refused(item: Value, at: &str) -> String {
        let err = parse_item(item, at).expect_err("refused");
        assert_eq!(
            (err.status, err.code),
            (StatusCode::BAD_REQUEST, "invalid_request")
        );
        err.message
    }

    #[test]
    fn an_item_becomes_a_typed_request() {
        let request = parse_item(
            json!({"image_url": "a/b.png", "url_type": "7min_local"}),
            "",
        )
        .expect("valid");
        assert_eq!(request.url_type, UrlType::Local);
        assert_eq!(request.image_url, "a/b.png");
        assert!(request.upload.is_none());
    }

    #[test]
    fn each_refusal_names_the_field_with_its_place() {
        assert_eq!(
            refused(json!({"image_url": "a.png"}), "items[1]."),
            "`items[1].url_type` is required"
        );
        assert_eq!(
            refused(json!({"image_url": "a.png", "url_type": "ftp"}), ""),
            "`url_type`: `ftp` is not one of oss, 7min_local, upload"
        );
        assert!(
            refused(json!({"image_url": 5, "url_type": "oss"}), "")
                .starts_with("`image_url`: invalid type")
        );
        assert_eq!(
            refused(json!({"image_url": " ", "url_type": "oss"}), ""),
            "`image_url` must not be empty"
        );
        assert!(
            refused(json!({"image_url": "a.png", "url_type": "upload"}), "").contains("multipart")
        );
        assert_eq!(
            refused(json!(["a.png"]), "items[0]."),
            "`items[0]` must be an object with image_url and url_type"
        );
    }
}
