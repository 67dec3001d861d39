//! `GET /ocr/{id}` reads an OCR result back (from the database, or from memory before its row is
//! written); `PATCH /ocr/{id}` stores a person's correction beside the OCR's own values.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ErrorBody};
use crate::ocr::{Access, OcrData};
use crate::routes::read_body;
use crate::state::AppState;
use crate::store::OcrCorrection;

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
    /// The first fund's corrected code (null: not corrected).
    pub update_fund_code: Option<String>,
    /// The first fund's corrected held shares.
    pub update_hold_share: Option<String>,
    /// Every fund as corrected, when a correction gave the whole list.
    pub update_funds: Option<Vec<FundCorrection>>,
    pub elapsed_ms: i64,
    pub created_at: DateTime<Utc>,
    /// Null until the row is stored.
    pub updated_at: Option<DateTime<Utc>>,
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
        (status = 403, description = "From a web page of another origin (`origin_not_allowed`)", body = ErrorBody),
        (status = 404, description = "No such result", body = ErrorBody),
        (status = 503, description = "The database cannot be read now", body = ErrorBody),
    ),
    security((), ("client_key" = [])),
)]
pub async fn get(
    State(state): State<AppState>,
    access: Access,
    Path(id): Path<String>,
) -> Result<Json<OcrResultView>, ApiError> {
    let stored = state.database.ocr_result(&id).await.map_err(store_error)?;
    if let Some(row) = stored {
        // Another key's result is answered as if it did not exist.
        if !access.allows(row.client_key_id.as_deref()) {
            return Err(not_found(&id));
        }
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
            update_funds: row
                .update_funds
                .as_deref()
                .and_then(|f| serde_json::from_str(f).ok()),
            elapsed_ms: row.elapsed_ms,
            created_at: row.created_at,
            updated_at: Some(row.updated_at),
        }));
    }
    match state.ocr.recent(&id, &access) {
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
            update_funds: None,
            elapsed_ms: i64::try_from(result.elapsed_ms).unwrap_or(i64::MAX),
            created_at: result.created_at,
            updated_at: None,
        })),
        None => Err(not_found(&id)),
    }
}

/// Most funds one correction may list.
const MAX_CORRECTED_FUNDS: usize = 100;

/// A person's correction of what the OCR read.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Correction {
    /// Six digits: the first fund's code.
    #[schema(pattern = "^[0-9]{6}$")]
    update_fund_code: Option<String>,
    /// A plain decimal number such as `12345.67`: the first fund's held shares.
    #[schema(pattern = "^[0-9.]+$")]
    update_hold_share: Option<String>,
    /// Every fund the screenshot holds, corrected (at most 100). Its first entry also stands
    /// for `update_fund_code` and `update_hold_share` when those are not given.
    update_funds: Option<Vec<FundCorrection>>,
}

/// One fund as a person corrected it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FundCorrection {
    /// Six digits.
    #[schema(pattern = "^[0-9]{6}$")]
    pub fund_code: String,
    /// A plain decimal number, or null when the page shows no share for it.
    #[schema(pattern = "^[0-9.]+$")]
    pub hold_share: Option<String>,
}

/// A correction whose values were checked: six-digit codes, plain decimal shares.
struct CheckedCorrection {
    fund_code: Option<String>,
    hold_share: Option<String>,
    /// `update_funds` as JSON.
    funds: Option<String>,
}

impl CheckedCorrection {
    fn as_store(&self) -> OcrCorrection<'_> {
        OcrCorrection {
            fund_code: self.fund_code.as_deref(),
            hold_share: self.hold_share.as_deref(),
            funds: self.funds.as_deref(),
        }
    }
}

fn check_code(field: &str, code: &str) -> Result<(), ApiError> {
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("`{field}` must be 6 digits"),
        ));
    }
    Ok(())
}

fn check_share(field: &str, share: &str) -> Result<(), ApiError> {
    let valid = share
        .parse::<f64>()
        .is_ok_and(|v| v.is_finite() && v >= 0.0)
        && share.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if !valid {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("`{field}` must be a plain decimal number such as 12345.67"),
        ));
    }
    Ok(())
}

impl TryFrom<Correction> for CheckedCorrection {
    type Error = ApiError;

    fn try_from(body: Correction) -> Result<Self, ApiError> {
        if body.update_fund_code.is_none()
            && body.update_hold_share.is_none()
            && body.update_funds.is_none()
        {
            return Err(ApiError::bad_request(
                "invalid_request",
                "give `update_fund_code`, `update_hold_share`, `update_funds`, or several",
            ));
        }
        if let Some(code) = &body.update_fund_code {
            check_code("update_fund_code", code)?;
        }
        if let Some(share) = &body.update_hold_share {
            check_share("update_hold_share", share)?;
        }
        let mut fund_code = body.update_fund_code;
        let mut hold_share = body.update_hold_share;
        let funds = match body.update_funds {
            None => None,
            Some(funds) => {
                if funds.len() > MAX_CORRECTED_FUNDS {
                    return Err(ApiError::bad_request(
                        "invalid_request",
                        format!("`update_funds` may list at most {MAX_CORRECTED_FUNDS} funds"),
                    ));
                }
                for (i, fund) in funds.iter().enumerate() {
                    check_code(&format!("update_funds[{i}].fund_code"), &fund.fund_code)?;
                    if let Some(share) = &fund.hold_share {
                        check_share(&format!("update_funds[{i}].hold_share"), share)?;
                    }
                }
                if let Some(first) = funds.first() {
                    fund_code = fund_code.or_else(|| Some(first.fund_code.clone()));
                    hold_share = hold_share.or_else(|| first.hold_share.clone());
                }
                Some(serde_json::to_string(&funds).expect("plain strings serialise"))
            }
        };
        Ok(Self {
            fund_code,
            hold_share,
            funds,
        })
    }
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
        (status = 403, description = "From a web page of another origin (`origin_not_allowed`)", body = ErrorBody),
        (status = 404, description = "No such result", body = ErrorBody),
        (status = 409, description = "The result is not stored yet; see Retry-After", body = ErrorBody),
        (status = 413, description = "Body larger than `server.max_body_bytes`", body = ErrorBody),
        (status = 408, description = "The body did not arrive within `server.body_read_timeout_ms` (`body_timeout`)", body = ErrorBody),
        (status = 503, description = "The database cannot be reached now", body = ErrorBody),
    ),
    security((), ("client_key" = [])),
)]
pub async fn correct(
    State(state): State<AppState>,
    access: Access,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<OcrResultView>, ApiError> {
    let body = read_body(body, state.config.server.max_body_bytes)?;
    let correction: Correction = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_request",
            format!(
                "body must be {{\"update_fund_code\", \"update_hold_share\", \"update_funds\"}}: {e}"
            ),
        )
    })?;
    let correction = CheckedCorrection::try_from(correction)?;
    let found = state
        .database
        .correct_ocr_result(&id, access.only_owner(), &correction.as_store())
        .await
        .map_err(store_error)?;
    if !found {
        if state.ocr.recent(&id, &access).is_some() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_stored_yet",
                "the result is still on its way to the database; retry in a moment",
            )
            .with_retry_after(1));
        }
        return Err(not_found(&id));
    }
    get(State(state), access, Path(id)).await
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
