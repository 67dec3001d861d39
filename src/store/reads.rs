//! What is read back from the database (by `GET /ocr/{id}`, tests and operators), and the
//! corrections a person makes to an OCR result.

use chrono::{DateTime, Utc};
use sqlx::{Row, Type};

use super::db::{Database, StoreError};

/// A `chat_logs` row as read back (for `/health` checks, tests and operators).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredChatLog {
    pub log_id: String,
    pub request_id: String,
    pub api: String,
    pub client_key_id: Option<String>,
    pub session_id: Option<String>,
    pub user_id: Option<String>,
    pub model: String,
    pub request_messages: String,
    pub answer: String,
    pub tool_calls: Option<String>,
    pub status: String,
    pub error_code: Option<String>,
    pub finish_reason: Option<String>,
}

/// An `ocr_results` row as read back for `GET /ocr/{id}`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StoredOcrResult {
    pub ocr_id: String,
    pub request_id: String,
    /// The key id that made it (none without keys).
    pub client_key_id: Option<String>,
    pub image_url: String,
    pub url_type: String,
    pub status: String,
    pub error_code: Option<String>,
    pub ocr_fund_code: Option<String>,
    pub ocr_hold_share: Option<String>,
    pub funds: Option<String>,
    pub ocr_text: String,
    pub update_fund_code: Option<String>,
    pub update_hold_share: Option<String>,
    /// Every fund as corrected, JSON (`[{"fund_code", "hold_share"}]`).
    pub update_funds: Option<String>,
    pub elapsed_ms: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Database {
    pub async fn count_chat_logs(&self) -> Result<u64, StoreError> {
        self.count("SELECT COUNT(*) FROM chat_logs").await
    }

    pub async fn count_ocr_results(&self) -> Result<u64, StoreError> {
        self.count("SELECT COUNT(*) FROM ocr_results").await
    }

    async fn count(&self, sql: &'static str) -> Result<u64, StoreError> {
        let count: i64 = match self {
            Self::MySql(pool) => sqlx::query_scalar(sql).fetch_one(pool).await?,
            Self::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await?,
        };
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// The first row with this `request_id` (a client may reuse one).
    pub async fn chat_log(&self, request_id: &str) -> Result<Option<StoredChatLog>, StoreError> {
        const SQL: &str = "SELECT log_id, request_id, api, client_key_id, session_id, user_id, model, \
            request_messages, answer, tool_calls, status, error_code, finish_reason \
            FROM chat_logs WHERE request_id = ? ORDER BY id LIMIT 1";
        Ok(match self {
            Self::MySql(pool) => sqlx::query(SQL)
                .bind(request_id)
                .fetch_optional(pool)
                .await?
                .map(|row| stored_chat_log(&row))
                .transpose()?,
            Self::Sqlite(pool) => sqlx::query(SQL)
                .bind(request_id)
                .fetch_optional(pool)
                .await?
                .map(|row| stored_chat_log(&row))
                .transpose()?,
        })
    }

    /// Every `chat_logs` row, oldest first.
    pub async fn chat_logs(&self) -> Result<Vec<StoredChatLog>, StoreError> {
        const SQL: &str = "SELECT log_id, request_id, api, client_key_id, session_id, user_id, model, \
            request_messages, answer, tool_calls, status, error_code, finish_reason \
            FROM chat_logs ORDER BY id";
        let rows = match self {
            Self::MySql(pool) => sqlx::query(SQL)
                .fetch_all(pool)
                .await?
                .iter()
                .map(stored_chat_log)
                .collect::<Result<Vec<_>, _>>()?,
            Self::Sqlite(pool) => sqlx::query(SQL)
                .fetch_all(pool)
                .await?
                .iter()
                .map(stored_chat_log)
                .collect::<Result<Vec<_>, _>>()?,
        };
        Ok(rows)
    }

    pub async fn ocr_result(&self, ocr_id: &str) -> Result<Option<StoredOcrResult>, StoreError> {
        // The CAST reads MySQL's unsigned column as i64; SQLite takes it as a no-op.
        const SQL: &str = "SELECT ocr_id, request_id, client_key_id, image_url, url_type, status, error_code, \
            ocr_fund_code, ocr_hold_share, funds, ocr_text, update_fund_code, update_hold_share, \
            update_funds, CAST(elapsed_ms AS SIGNED) AS elapsed_ms, created_at, updated_at \
            FROM ocr_results WHERE ocr_id = ?";
        Ok(match self {
            Self::MySql(pool) => sqlx::query(SQL)
                .bind(ocr_id)
                .fetch_optional(pool)
                .await?
                .map(|row| stored_ocr_result(&row))
                .transpose()?,
            Self::Sqlite(pool) => sqlx::query(SQL)
                .bind(ocr_id)
                .fetch_optional(pool)
                .await?
                .map(|row| stored_ocr_result(&row))
                .transpose()?,
        })
    }

    /// Stores a person's correction beside the OCR's own values (which stay); what it leaves
    /// out keeps its earlier correction. Returns whether the row exists and, when `owner` is
    /// given, belongs to that key id.
    pub async fn correct_ocr_result(
        &self,
        ocr_id: &str,
        owner: Option<&str>,
        correction: &OcrCorrection<'_>,
    ) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE ocr_results SET \
            update_fund_code = COALESCE(?, update_fund_code), \
            update_hold_share = COALESCE(?, update_hold_share), \
            update_funds = COALESCE(?, update_funds), updated_at = ? \
            WHERE ocr_id = ? AND (? IS NULL OR client_key_id = ?)";
        let now = Utc::now();
        let affected = match self {
            Self::MySql(pool) => sqlx::query(SQL)
                .bind(correction.fund_code)
                .bind(correction.hold_share)
                .bind(correction.funds)
                .bind(now)
                .bind(ocr_id)
                .bind(owner)
                .bind(owner)
                .execute(pool)
                .await?
                .rows_affected(),
            Self::Sqlite(pool) => sqlx::query(SQL)
                .bind(correction.fund_code)
                .bind(correction.hold_share)
                .bind(correction.funds)
                .bind(now)
                .bind(ocr_id)
                .bind(owner)
                .bind(owner)
                .execute(pool)
                .await?
                .rows_affected(),
        };
        Ok(affected > 0)
    }
}

/// What a person corrected in an OCR result; `None` leaves a value as it was.
#[derive(Debug, Clone, Copy, Default)]
pub struct OcrCorrection<'a> {
    /// The first fund's code.
    pub fund_code: Option<&'a str>,
    /// The first fund's held shares.
    pub hold_share: Option<&'a str>,
    /// Every fund, as JSON (`[{"fund_code", "hold_share"}]`).
    pub funds: Option<&'a str>,
}

fn stored_chat_log<R>(row: &R) -> Result<StoredChatLog, sqlx::Error>
where
    R: Row,
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(StoredChatLog {
        log_id: row.try_get("log_id")?,
        request_id: row.try_get("request_id")?,
        api: row.try_get("api")?,
        client_key_id: row.try_get("client_key_id")?,
        session_id: row.try_get("session_id")?,
        user_id: row.try_get("user_id")?,
        model: row.try_get("model")?,
        request_messages: row.try_get("request_messages")?,
        answer: row.try_get("answer")?,
        tool_calls: row.try_get("tool_calls")?,
        status: row.try_get("status")?,
        error_code: row.try_get("error_code")?,
        finish_reason: row.try_get("finish_reason")?,
    })
}

fn stored_ocr_result<R>(row: &R) -> Result<StoredOcrResult, sqlx::Error>
where
    R: Row,
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + Type<R::Database>,
    for<'r> DateTime<Utc>: sqlx::Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(StoredOcrResult {
        ocr_id: row.try_get("ocr_id")?,
        request_id: row.try_get("request_id")?,
        client_key_id: row.try_get("client_key_id")?,
        image_url: row.try_get("image_url")?,
        url_type: row.try_get("url_type")?,
        status: row.try_get("status")?,
        error_code: row.try_get("error_code")?,
        ocr_fund_code: row.try_get("ocr_fund_code")?,
        ocr_hold_share: row.try_get("ocr_hold_share")?,
        funds: row.try_get("funds")?,
        ocr_text: row.try_get("ocr_text")?,
        update_fund_code: row.try_get("update_fund_code")?,
        update_hold_share: row.try_get("update_hold_share")?,
        update_funds: row.try_get("update_funds")?,
        elapsed_ms: row.try_get("elapsed_ms")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}
