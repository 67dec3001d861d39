//! `POST /ocr/jobs` starts a batch of OCR runs in the background; `GET /ocr/jobs/{id}` follows
//! it and `DELETE /ocr/jobs/{id}` cancels what has not started.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Extension, Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::ClientKeyId;
use crate::error::{ApiError, ErrorBody};
use crate::ocr::Access;
use crate::ocr::http_jobs::{Job, JobOwner};
use crate::routes::answer::caller;
use crate::routes::ocr::{ImageBody, parse_item};
use crate::routes::read_body;
use crate::routes::request_id::RequestId;
use crate::state::AppState;

/// What `POST /ocr/jobs` accepts: a list, or `{"items": [...]}`. Each item is read on its own
/// (as an [`ImageBody`]), so that an error names it: `items[3].url_type`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum JobBody {
    #[schema(value_type = Vec<ImageBody>)]
    List(Vec<Value>),
    Items {
        #[schema(value_type = Vec<ImageBody>)]
        items: Vec<Value>,
    },
}

/// `202` to `POST /ocr/jobs`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobCreated {
    pub job_id: String,
    pub total: usize,
    /// Where to follow the job: `/ocr/jobs/{job_id}`.
    pub status_url: String,
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
        (status = 403, description = "From a web page of another origin (`origin_not_allowed`)", body = ErrorBody),
        (status = 413, description = "Body larger than `server.max_body_bytes`", body = ErrorBody),
        (status = 408, description = "The body did not arrive within `server.body_read_timeout_ms` (`body_timeout`)", body = ErrorBody),
        (status = 429, description = "Too many job items already wait, for this client (`ocr.max_pending_items_per_key`) or in all (`ocr.max_pending_items`); see Retry-After", body = ErrorBody),
        (status = 503, description = "Shutting down", body = ErrorBody),
    ),
    security((), ("client_key" = [])),
)]
pub async fn create_job(
    State(state): State<AppState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    client_key: Option<Extension<ClientKeyId>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<JobCreated>), ApiError> {
    let body = read_body(body, state.config.server.max_body_bytes)?;
    let body: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("body is not JSON: {e}")))?;
    let is_object = body.is_object();
    let items = match JobBody::deserialize(body) {
        Ok(JobBody::List(items) | JobBody::Items { items }) => items,
        Err(_) if is_object => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "`items` must be a list of {image_url, url_type}",
            ));
        }
        Err(_) => {
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
        .into_iter()
        .enumerate()
        .map(|(i, item)| parse_item(item, &format!("items[{i}].")))
        .collect::<Result<Vec<_>, _>>()?;
    if state.lifecycle.is_draining() {
        return Err(ApiError::shutting_down());
    }
    let total = images.len();
    let caller = caller(client_key, peer);
    let owner = JobOwner {
        client: caller.limit_key(),
        key: caller.key.map(|k| k.0),
    };
    let job_id = state
        .jobs
        .start(
            state.ocr.clone(),
            state.log.clone(),
            request_id,
            owner,
            images,
            &state.lifecycle,
        )
        .map_err(|refused| ApiError::from(&refused))?;
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
        (status = 403, description = "From a web page of another origin (`origin_not_allowed`)", body = ErrorBody),
        (status = 404, description = "No such job (jobs are kept in memory, the last 1,000)", body = ErrorBody),
    ),
    security((), ("client_key" = [])),
)]
pub async fn get_job(
    State(state): State<AppState>,
    access: Access,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    state
        .jobs
        .get(&id, &access)
        .map(Json)
        .ok_or_else(|| job_not_found(&id))
}

/// Cancels a job's items that have not started; those running finish (and are logged).
#[utoipa::path(
    delete,
    path = "/ocr/jobs/{id}",
    tag = "ocr",
    params(("id" = String, Path, description = "The job id from `POST /ocr/jobs`")),
    responses(
        (status = 200, description = "The job, cancelled (a finished job is left as it was)", body = Job),
        (status = 401, description = "Missing or wrong client API key", body = ErrorBody),
        (status = 403, description = "From a web page of another origin (`origin_not_allowed`)", body = ErrorBody),
        (status = 404, description = "No such job, or not this key's (only the key that made a job may cancel it)", body = ErrorBody),
    ),
    security((), ("client_key" = [])),
)]
pub async fn cancel_job(
    State(state): State<AppState>,
    client_key: Option<Extension<ClientKeyId>>,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    let owner = client_key.map(|Extension(key)| key.0);
    state
        .jobs
        .cancel(&id, owner.as_deref())
        .map(Json)
        .ok_or_else(|| job_not_found(&id))
}

fn job_not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no OCR job `{id}`"),
    )
}
