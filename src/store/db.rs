//! The database: MySQL (production) or SQLite (embedded default) as two concrete pools behind
//! one type (sqlx's `Any` driver cannot read MySQL's DATETIME), migrations for each, and the
//! writer's INSERTs (their statements are written in `insert.rs`) and the reads back.

use std::borrow::Borrow;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{MySql, Row, Sqlite, Type};

use crate::config::{DatabaseConfig, ms};

use super::insert::{
    Bind, CHAT_INSERT, Dialect, InsertSql, OCR_INSERT, bind_chat, bind_ocr, execute_statements,
};
use super::records::{ChatLogRecord, OcrResultRecord};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database.url: {0}")]
    Url(String),
    #[error("creating the SQLite folder {path}: {source}")]
    Folder {
        path: String,
        source: std::io::Error,
    },
    #[error("running migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database: {0}")]
    Query(#[from] sqlx::Error),
}

/// A pool for one of the two supported databases. Cheap to clone.
#[derive(Debug, Clone)]
pub enum Database {
    MySql(MySqlPool),
    Sqlite(SqlitePool),
}

/// A `chat_logs` row as read back (for `/health` checks, tests and operators).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredChatLog {
    pub request_id: String,
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
    pub elapsed_ms: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Database {
    /// Builds the pool without connecting: the service starts even while the database is down,
    /// and the writer connects (and migrates) when it can.
    pub fn connect_lazy(config: &DatabaseConfig) -> Result<Self, StoreError> {
        let acquire = ms(config.connect_timeout_ms);
        if config.url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(&config.url)
                .map_err(|e| StoreError::Url(e.to_string()))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(5));
            if let Some(folder) = options.get_filename().parent() {
                if !folder.as_os_str().is_empty() {
                    std::fs::create_dir_all(folder).map_err(|source| StoreError::Folder {
                        path: folder.display().to_string(),
                        source,
                    })?;
                }
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(config.max_connections)
                .acquire_timeout(acquire)
                .connect_lazy_with(options);
            return Ok(Self::Sqlite(pool));
        }
        let url = config.url.replacen("mariadb://", "mysql://", 1);
        let mut options =
            MySqlConnectOptions::from_str(&url).map_err(|e| StoreError::Url(e.to_string()))?;
        let has_password = url::Url::parse(&url)
            .map(|u| u.password().is_some())
            .unwrap_or(false);
        if !has_password {
            if let Ok(password) = std::env::var(&config.password_env) {
                options = options.password(&password);
            }
        }
        let pool = MySqlPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(acquire)
            .connect_lazy_with(options);
        Ok(Self::MySql(pool))
    }

    /// The URL without its password, for the start-up log.
    pub fn describe(url: &str) -> String {
        match url::Url::parse(url) {
            Ok(mut parsed) if parsed.password().is_some() => {
                let _ = parsed.set_password(Some("***"));
                parsed.to_string()
            }
            _ => url.to_owned(),
        }
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Self::MySql(pool) => sqlx::migrate!("./migrations/mysql").run(pool).await?,
            Self::Sqlite(pool) => sqlx::migrate!("./migrations/sqlite").run(pool).await?,
        }
        Ok(())
    }

    /// Inserts the rows in as few statements as the parameter limits allow; a row whose
    /// `request_id` is already stored is skipped, so a replay never duplicates. Takes records
    /// or references to them, so the writer stores its batch without copying it.
    pub async fn insert_chat_logs(
        &self,
        rows: &[impl Borrow<ChatLogRecord>],
    ) -> Result<(), StoreError> {
        self.insert_rows(rows, &CHAT_INSERT, bind_chat::<MySql>, bind_chat::<Sqlite>)
            .await
    }

    /// Like [`Database::insert_chat_logs`], keyed on `ocr_id`.
    pub async fn insert_ocr_results(
        &self,
        rows: &[impl Borrow<OcrResultRecord>],
    ) -> Result<(), StoreError> {
        self.insert_rows(rows, &OCR_INSERT, bind_ocr::<MySql>, bind_ocr::<Sqlite>)
            .await
    }

    /// Multi-row INSERTs, skipping rows whose unique key is already stored; in one
    /// transaction when a batch takes more than one statement. The statements have a few
    /// sizes only (`statement_rows`), so each stays prepared on its connection: a statement
    /// per batch size would be prepared anew for every batch or, cached, grow the process.
    async fn insert_rows<R, B: Borrow<R>>(
        &self,
        rows: &[B],
        sql: &InsertSql,
        mysql: Bind<MySql, R>,
        sqlite: Bind<Sqlite, R>,
    ) -> Result<(), StoreError> {
        match self {
            Self::MySql(pool) => {
                execute_statements(pool, rows, sql, Dialect::MySql, mysql).await?;
            }
            Self::Sqlite(pool) => {
                execute_statements(pool, rows, sql, Dialect::Sqlite, sqlite).await?;
            }
        }
        Ok(())
    }

    /// One `INSERT` per row: the baseline the batching writer is measured against.
    pub async fn insert_chat_log_single(&self, row: &ChatLogRecord) -> Result<(), StoreError> {
        self.insert_chat_logs(std::slice::from_ref(row)).await
    }

    /// One round trip to the database (`SELECT 1`): whether it answers now.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Self::MySql(pool) => {
                sqlx::query("SELECT 1").execute(pool).await?;
            }
            Self::Sqlite(pool) => {
                sqlx::query("SELECT 1").execute(pool).await?;
            }
        }
        Ok(())
    }

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

    pub async fn chat_log(&self, request_id: &str) -> Result<Option<StoredChatLog>, StoreError> {
        const SQL: &str = "SELECT request_id, client_key_id, session_id, user_id, model, request_messages, \
            answer, tool_calls, status, error_code, finish_reason FROM chat_logs WHERE request_id = ?";
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
        const SQL: &str = "SELECT request_id, client_key_id, session_id, user_id, model, request_messages, \
            answer, tool_calls, status, error_code, finish_reason FROM chat_logs ORDER BY id";
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
        const SQL: &str = "SELECT ocr_id, request_id, image_url, url_type, status, error_code, \
            ocr_fund_code, ocr_hold_share, funds, ocr_text, update_fund_code, update_hold_share, \
            CAST(elapsed_ms AS SIGNED) AS elapsed_ms, created_at, updated_at \
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

    /// Stores a person's correction beside the OCR's own values (which stay). Returns whether
    /// the row exists.
    pub async fn correct_ocr_result(
        &self,
        ocr_id: &str,
        fund_code: Option<&str>,
        hold_share: Option<&str>,
    ) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE ocr_results SET \
            update_fund_code = COALESCE(?, update_fund_code), \
            update_hold_share = COALESCE(?, update_hold_share), updated_at = ? WHERE ocr_id = ?";
        let now = Utc::now();
        let affected = match self {
            Self::MySql(pool) => sqlx::query(SQL)
                .bind(fund_code)
                .bind(hold_share)
                .bind(now)
                .bind(ocr_id)
                .execute(pool)
                .await?
                .rows_affected(),
            Self::Sqlite(pool) => sqlx::query(SQL)
                .bind(fund_code)
                .bind(hold_share)
                .bind(now)
                .bind(ocr_id)
                .execute(pool)
                .await?
                .rows_affected(),
        };
        Ok(affected > 0)
    }

    pub async fn close(&self) {
        match self {
            Self::MySql(pool) => pool.close().await,
            Self::Sqlite(pool) => pool.close().await,
        }
    }
}

fn stored_chat_log<R>(row: &R) -> Result<StoredChatLog, sqlx::Error>
where
    R: Row,
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(StoredChatLog {
        request_id: row.try_get("request_id")?,
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
        elapsed_ms: row.try_get("elapsed_ms")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat_row(request_id: String) -> ChatLogRecord {
        ChatLogRecord {
            request_id,
            session_id: None,
            user_id: None,
            client_key_id: None,
            model: "m".into(),
            request_messages: serde_json::json!([{"role": "user", "content": "q"}]),
            answer: "a".into(),
            tool_calls: None,
            status: "ok".into(),
            error_code: None,
            error_message: None,
            finish_reason: Some("stop".into()),
            prompt_tokens: None,
            completion_tokens: None,
            queue_ms: 0,
            ttft_ms: None,
            total_ms: 1,
            created_at: Utc::now(),
        }
    }

    #[tokio::test]
    async fn batches_of_every_size_share_a_few_prepared_statements() {
        use sqlx::Connection as _;
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Database::connect_lazy(&DatabaseConfig {
            url: format!("sqlite://{}/t.db?mode=rwc", dir.path().display()),
            max_connections: 1,
            ..DatabaseConfig::default()
        })
        .expect("pool");
        db.migrate().await.expect("migrated");
        let Database::Sqlite(pool) = &db else {
            unreachable!("a SQLite URL")
        };
        let cached = || async {
            pool.acquire()
                .await
                .expect("connection")
                .cached_statements_size()
        };
        let before = cached().await;
        let mut stored = 0_u64;
        for size in 1..=130 {
            let rows: Vec<_> = (0..size).map(|i| chat_row(format!("{size}-{i}"))).collect();
            db.insert_chat_logs(&rows).await.expect("stored");
            stored += size as u64;
        }
        // One per statement size: a statement per batch size would have added 100 (the cache's
        // capacity), the largest of them 130 rows long.
        assert_eq!(cached().await - before, 7);
        assert_eq!(db.count_chat_logs().await.expect("count"), stored);
    }

    #[test]
    fn passwords_never_reach_the_log() {
        let shown = Database::describe("mysql://app:s3cret@db:3306/chat");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("app@db:3306/chat") || shown.contains("app:***@db"),
            "{shown}"
        );
    }
}
