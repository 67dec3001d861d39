//! `POST /ocr` (and the older clients' `POST /ocr_handler`): JSON `{image_url, url_type}` or a
//! multipart upload with the image in a part named `image`. `GET /ocr/{id}` reads a result back,
//! and `PATCH /ocr/{id}` stores a person's correction beside the OCR's own values.

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, FromRequest, Multipart, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ApiError, ErrorBody};
use crate::ocr::jobs::Job;
use crate::ocr::{ImageRequest, OcrData, OcrError, OcrResult, UrlType};
use crate::routes::read_body;
use crate::routes::request_id::RequestId;
use crate::state::AppState;

/// `{image_url, url_type}`: where to fetch the image.
#[derive(Debug, utoipa::ToSchema)]
#[expect(
    dead_code,
    reason = "the spec's view of the body; `parse_item` reads it to name the wrong field"
)]
pub struct ImageBody {
    /// An `https` URL on a host in `ocr.oss_hosts`, or a path under `ocr.local_root`.
    image_url: String,
    #[schema(pattern = "^(oss|7min_local)$")]
    url_type: String,
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

/// What `POST /ocr/jobs` accepts: a list, or `{"items": [...]}`.
// The spec's view of the body; `create_job` reads it to name the wrong item.
#[derive(Debug, utoipa::ToSchema)]
#[serde(untagged)]
pub enum JobBody {
    List(Vec<ImageBody>),
    Items { items: Vec<ImageBody> },
}

/// `202` to `POST /ocr/jobs`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobCreated {
    pub job_id: String,
    pub total: usize,
    /// Where to follow the job: `/ocr/jobs/{job_id}`.
    pub status_url: String,
}

/// An OCR result as `GET /ocr/{id}` shows it: what was read, and any correction.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OcrResultView {
    pub id: String,
    /// The request it came from (null while only in memory).
    pub request_id: Option<String>,
    pub image_url: String,
    pub url_type: String,
    /// `ok` or `error`.
    pub status: String,
    pub error_code: Option<String>,
    pub data: OcrData,
    pub update_fund_code: Option<String>,
    pub update_hold_share: Option<String>,
    pub elapsed_ms: i64,
    pub created_at: DateTime<Utc>,
    /// Null until the row is stored.
    pub updated_at: Option<DateTime<Utc>>,
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
    /// No image at that URL or path
    #[response(status = 404)]
    NotFound(ErrorBody<'static>),
    /// Image too large (bytes or pixels)
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
    let is_multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let image = if is_multipart {
        let multipart = Multipart::from_request(request, &state)
            .await
            .map_err(|e| body_error(e.status(), e.body_text()))?;
        read_upload(multipart, state.ocr.config().max_image_bytes).await?
    } else {
        let body = Bytes::from_request(request, &state)
            .await
            .map_err(|e| body_error(e.status(), e.body_text()))?;
        parse_json(&body)?
    };
    let result = state
        .ocr
        .recognize_logged(&state.log, &request_id, image)
        .await
        .map_err(|e| ApiError::from(&e))?;
    Ok((StatusCode::OK, Json(result)).into_response())
}

fn body_error(status: StatusCode, text: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(status, "image_too_large", "the request body is too large")
    } else {
        ApiError::bad_request("invalid_body", text)
    }
}

fn parse_json(body: &[u8]) -> Result<ImageRequest, ApiError> {
    let body: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("body is not JSON: {e}")))?;
    parse_item(&body, "")
}

/// One `{image_url, url_type}`; `at` prefixes the field names in messages (`items[3].`).
fn parse_item(item: &Value, at: &str) -> Result<ImageRequest, ApiError> {
    let invalid = |m: String| ApiError::bad_request("invalid_request", m);
    let Some(object) = item.as_object() else {
        return Err(invalid(format!(
            "`{}` must be an object with image_url and url_type",
            at.trim_end_matches('.')
        )));
    };
    let image_url = match object.get("image_url") {
        Some(Value::String(url)) if !url.trim().is_empty() => url.clone(),
        Some(Value::String(_)) => {
            return Err(invalid(format!("`{at}image_url` must not be empty")));
        }
        Some(_) => return Err(invalid(format!("`{at}image_url` must be a string"))),
        None => return Err(invalid(format!("`{at}image_url` is required"))),
    };
    let url_type = match object.get("url_type") {
        Some(Value::String(name)) => name.as_str(),
        Some(_) => return Err(invalid(format!("`{at}url_type` must be a string"))),
        None => return Err(invalid(format!("`{at}url_type` is required"))),
    };
    let url_type = match UrlType::parse(url_type) {
        Some(UrlType::Upload) => {
            return Err(invalid(format!(
                "`{at}url_type` upload needs a multipart/form-data request with the image in a part named `image`"
            )));
        }
        Some(t) => t,
        None => {
            return Err(invalid(format!(
                "`{at}url_type` `{url_type}` is not one of oss, 7min_local, upload"
            )));
        }
    };
    Ok(ImageRequest {
        url_type,
        image_url,
        upload: None,
    })
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

/// `POST /ocr/jobs`: many images in the background; 202 with the job id at once.
#[utoipa::path(
    post,
    path = "/ocr/jobs",
    tag = "ocr",
    request_body(content = JobBody, content_type = "application/json"),
    responses(
        (status = 202, description = "Started", body = JobCreated),
        (status = 400, description = "Invalid body or item, or too many items", body = ErrorBody),
        (status = 401, description = "Missing or wrong client API key", body = ErrorBody),
        (status = 413, description = "Body larger than `server.max_body_bytes`", body = ErrorBody),
        (status = 503, description = "Shutting down", body = ErrorBody),
    ),
    security((), ("client_key" = [])),
)]
pub async fn create_job(
    State(state): State<AppState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<JobCreated>), ApiError> {
    let body = read_body(body, state.config.server.max_body_bytes)?;
    let body: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("body is not JSON: {e}")))?;
    let items = match &body {
        Value::Array(items) => items,
        Value::Object(o) => o.get("items").and_then(Value::as_array).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_request",
                "`items` must be a list of {image_url, url_type}",
            )
        })?,
        _ => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "body must be a list of {image_url, url_type}",
            ));
        }
    };
    let limit = state.config.ocr.max_job_items;
    if items.is_empty() || items.len() > limit {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!(
                "`items` must hold 1 to {limit} images; it holds {}",
                items.len()
            ),
        ));
    }
    let images = items
        .iter()
        .enumerate()
        .map(|(i, item)| parse_item(item, &format!("items[{i}].")))
        .collect::<Result<Vec<_>, _>>()?;
    if state.is_draining() {
        return Err(ApiError::shutting_down());
    }
    let total = images.len();
    let job_id = state.jobs.start(
        state.ocr.clone(),
        state.log.clone(),
        request_id,
        images,
        &state.tasks,
        state.answer.stop_streams.clone(),
    );
    let status_url = format!("/ocr/jobs/{job_id}");
    Ok((
        StatusCode::ACCEPTED,
        Json(JobCreated {
            job_id,
            total,
            status_url,
        }),
    ))
}

/// A job's progress and each item's result.
#[utoipa::path(
    get,
    path = "/ocr/jobs/{id}",
    tag = "ocr",
    params(("id" = String, Path, description = "The job id from `POST /ocr/jobs`")),
    responses(
        (status = 200, description = "The job", body = Job),
        (status = 401, description = "Missing or wrong client API key", body = ErrorBody),
        (status = 404, description = "No such job (jobs are kept in memory, the last 1,000)", body = ErrorBody),
    ),
    security((), ("client_key" = [])),
)]
pub async fn get_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    state.jobs.get(&id).map(Json).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no OCR job `{id}`"),
        )
    })
}

async fn read_upload(mut multipart: Multipart, cap: usize) -> Result<ImageRequest, ApiError> {
    let mut image: Option<(String, Bytes)> = None;
    while let Some(mut field) = multipart
        .next_field()
        .await
        .map_err(|e| body_error(e.status(), e.body_text()))?
    {
        match field.name() {
            Some("image") => {
                let name = field.file_name().unwrap_or("upload").to_owned();
                let mut data = Vec::new();
                while let Some(chunk) = field
                    .chunk()
                    .await
                    .map_err(|e| body_error(e.status(), e.body_text()))?
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
                    .map_err(|e| body_error(e.status(), e.body_text()))?;
                if !value.is_empty() && UrlType::parse(&value).is_none() {
                    return Err(ApiError::bad_request(
                        "invalid_request",
                        format!("`url_type` `{value}` is not one of oss, 7min_local, upload"),
                    ));
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

/// An OCR result by id, with any correction.
#[utoipa::path(
    get,
    path = "/ocr/{id}",
    tag = "ocr",
    params(("id" = String, Path, description = "The `id` of a `POST /ocr` result")),
    responses(
        (status = 200, description = "The result", body = OcrResultView),
        (status = 401, description = "Missing or wrong client API key", body = ErrorBody),
        (status = 404, description = "No such result", body = ErrorBody),
        (status = 503, description = "The database cannot be read now", body = ErrorBody),
    ),
    security((), ("client_key" = [])),
)]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<OcrResultView>, ApiError> {
    let stored = state.database.ocr_result(&id).await.map_err(store_error)?;
    if let Some(row) = stored {
        let funds = row
            .funds
            .as_deref()
            .and_then(|f| serde_json::from_str(f).ok())
            .unwrap_or_default();
        return Ok(Json(OcrResultView {
            id: row.ocr_id,
            request_id: Some(row.request_id),
            image_url: row.image_url,
            url_type: row.url_type,
            status: row.status,
            error_code: row.error_code,
            data: OcrData {
                fund_code: row.ocr_fund_code,
                hold_share: row.ocr_hold_share,
                funds,
                text: row.ocr_text,
            },
            update_fund_code: row.update_fund_code,
            update_hold_share: row.update_hold_share,
            elapsed_ms: row.elapsed_ms,
            created_at: row.created_at,
            updated_at: Some(row.updated_at),
        }));
    }
    match state.ocr.recent(&id) {
        Some(result) => Ok(Json(OcrResultView {
            id: result.id,
            request_id: None,
            image_url: result.image_url,
            url_type: result.url_type.as_str().to_owned(),
            status: "ok".to_owned(),
            error_code: None,
            data: result.data,
            update_fund_code: None,
            update_hold_share: None,
            elapsed_ms: i64::try_from(result.elapsed_ms).unwrap_or(i64::MAX),
            created_at: result.created_at,
            updated_at: None,
        })),
        None => Err(not_found(&id)),
    }
}

/// A person's correction of what the OCR read.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Correction {
    /// Six digits.
    #[schema(pattern = "^[0-9]{6}$")]
    update_fund_code: Option<String>,
    /// A plain decimal number such as `12345.67`.
    #[schema(pattern = "^[0-9.]+$")]
    update_hold_share: Option<String>,
}

/// Store a correction beside the OCR's own values; answers with the updated result.
#[utoipa::path(
    patch,
    path = "/ocr/{id}",
    tag = "ocr",
    params(("id" = String, Path, description = "The `id` of a `POST /ocr` result")),
    request_body(content = Correction, content_type = "application/json"),
    responses(
        (status = 200, description = "The corrected result", body = OcrResultView),
        (status = 400, description = "Invalid correction", body = ErrorBody),
        (status = 401, description = "Missing or wrong client API key", body = ErrorBody),
        (status = 404, description = "No such result", body = ErrorBody),
        (status = 409, description = "The result is not stored yet; see Retry-After", body = ErrorBody),
        (status = 413, description = "Body larger than `server.max_body_bytes`", body = ErrorBody),
        (status = 503, description = "The database cannot be reached now", body = ErrorBody),
    ),
    security((), ("client_key" = [])),
)]
pub async fn correct(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<OcrResultView>, ApiError> {
    let body = read_body(body, state.config.server.max_body_bytes)?;
    let correction: Correction = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_request",
            format!("body must be {{\"update_fund_code\", \"update_hold_share\"}}: {e}"),
        )
    })?;
    if correction.update_fund_code.is_none() && correction.update_hold_share.is_none() {
        return Err(ApiError::bad_request(
            "invalid_request",
            "give `update_fund_code`, `update_hold_share` or both",
        ));
    }
    if let Some(code) = &correction.update_fund_code {
        if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ApiError::bad_request(
                "invalid_request",
                "`update_fund_code` must be 6 digits",
            ));
        }
    }
    if let Some(share) = &correction.update_hold_share {
        let valid = share
            .parse::<f64>()
            .is_ok_and(|v| v.is_finite() && v >= 0.0)
            && share.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        if !valid {
            return Err(ApiError::bad_request(
                "invalid_request",
                "`update_hold_share` must be a plain decimal number such as 12345.67",
            ));
        }
    }
    let found = state
        .database
        .correct_ocr_result(
            &id,
            correction.update_fund_code.as_deref(),
            correction.update_hold_share.as_deref(),
        )
        .await
        .map_err(store_error)?;
    if !found {
        if state.ocr.recent(&id).is_some() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_stored_yet",
                "the result is still on its way to the database; retry in a moment",
            )
            .with_retry_after(1));
        }
        return Err(not_found(&id));
    }
    get(State(state), Path(id)).await
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no OCR result `{id}`"),
    )
}

fn store_error(err: crate::store::StoreError) -> ApiError {
    tracing::warn!(error = %err, "database read failed");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "database_unavailable",
        "the database cannot be read right now",
    )
    .with_retry_after(1)
}
