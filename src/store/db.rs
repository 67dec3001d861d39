//! The database: MySQL (production) or SQLite (embedded default) as two concrete pools behind
//! one type (sqlx's `Any` driver cannot read MySQL's DATETIME), migrations for each, and the
//! multi-row idempotent INSERTs the writer uses.

use std::borrow::Borrow;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::error::BoxDynError;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Arguments as _, AssertSqlSafe, Encode, MySql, Row, SqlSafeStr, SqlStr, Sqlite, Type};

use crate::config::{DatabaseConfig, ms};

use super::records::{ChatLogRecord, OcrResultRecord};

/// The most rows in one INSERT. The last statement of a batch is padded to a power of two:
/// 7 statement shapes per table in all, each kept prepared on its connection.
const STATEMENT_ROWS: usize = 64;

const CHAT_COLUMNS: &str = "request_id, session_id, user_id, client_key_id, model, \
    request_messages, answer, tool_calls, status, error_code, error_message, finish_reason, \
    prompt_tokens, completion_tokens, queue_ms, ttft_ms, total_ms, created_at";
const CHAT_COLUMN_COUNT: usize = 18;

const OCR_COLUMNS: &str = "ocr_id, request_id, image_url, url_type, status, error_code, \
    ocr_fund_code, ocr_hold_share, funds, ocr_text, fetch_ms, ocr_ms, elapsed_ms, created_at, updated_at";
const OCR_COLUMN_COUNT: usize = 15;

// SQLite allows 32,766 bind parameters in one statement (MySQL 65,535).
const _: () = assert!(STATEMENT_ROWS * CHAT_COLUMN_COUNT <= 32_766);
const _: () = assert!(STATEMENT_ROWS * OCR_COLUMN_COUNT <= 32_766);

/// The rows of each INSERT for `rows`: `STATEMENT_ROWS` at a time, the last statement padded
/// to a power of two by repeating its last row. The copies are skipped by the statement's
/// conflict clause, like any row already stored.
fn statement_rows<'a, R: 'a, B: Borrow<R>>(rows: &'a [B]) -> impl Iterator<Item = Vec<&'a R>> {
    rows.chunks(STATEMENT_ROWS).map(|chunk| {
        let mut padded: Vec<&R> = chunk.iter().map(Borrow::borrow).collect();
        let last = padded[padded.len() - 1];
        padded.resize(chunk.len().next_power_of_two(), last);
        padded
    })
}

/// The SQL dialects of the two supported databases.
#[derive(Debug, Clone, Copy)]
enum Dialect {
    MySql,
    Sqlite,
}

/// How many statement sizes `statement_rows` makes: 1, 2, 4, ... `STATEMENT_ROWS`.
const STATEMENT_SIZES: usize = STATEMENT_ROWS.trailing_zeros() as usize + 1;

/// The text of a table's multi-row INSERT for each dialect and statement size, written once
/// per process and shared by every batch after it.
struct InsertSql {
    table: &'static str,
    columns: &'static str,
    column_count: usize,
    /// The unique column: a row whose key is already stored is skipped.
    key: &'static str,
    written: [[OnceLock<SqlStr>; STATEMENT_SIZES]; 2],
}

impl InsertSql {
    const fn new(
        table: &'static str,
        columns: &'static str,
        column_count: usize,
        key: &'static str,
    ) -> Self {
        Self {
            table,
            columns,
            column_count,
            key,
            written: [const { [const { OnceLock::new() }; STATEMENT_SIZES] }; 2],
        }
    }

    /// The statement for `rows` rows, a size `statement_rows` makes.
    fn text(&self, dialect: Dialect, rows: usize) -> SqlStr {
        assert!(
            rows.is_power_of_two() && rows <= STATEMENT_ROWS,
            "not a statement size: {rows}"
        );
        self.written[dialect as usize][rows.trailing_zeros() as usize]
            .get_or_init(|| AssertSqlSafe(self.write(dialect, rows)).into_sql_str())
            .clone()
    }

    fn write(&self, dialect: Dialect, rows: usize) -> String {
        let Self {
            table,
            columns,
            column_count,
            key,
            ..
        } = self;
        let row = format!("({})", vec!["?"; *column_count].join(", "));
        let values = vec![row; rows].join(", ");
        let conflict = match dialect {
            Dialect::MySql => format!("ON DUPLICATE KEY UPDATE {key} = {key}"),
            Dialect::Sqlite => format!("ON CONFLICT ({key}) DO NOTHING"),
        };
        format!("INSERT INTO {table} ({columns}) VALUES {values} {conflict}")
    }
}

static CHAT_INSERT: InsertSql =
    InsertSql::new("chat_logs", CHAT_COLUMNS, CHAT_COLUMN_COUNT, "request_id");
static OCR_INSERT: InsertSql =
    InsertSql::new("ocr_results", OCR_COLUMNS, OCR_COLUMN_COUNT, "ocr_id");

/// Adds one row's values to a statement's arguments, in the order of the table's columns.
type Bind<DB, R> = fn(&mut <DB as sqlx::Database>::Arguments, &R) -> Result<(), BoxDynError>;

/// The INSERTs of `sql` for `rows` (`statement_rows`): alone on the pool when there is one,
/// else in one transaction.
async fn execute_statements<DB, R, B: Borrow<R>>(
    pool: &sqlx::Pool<DB>,
    rows: &[B],
    sql: &InsertSql,
    dialect: Dialect,
    bind: Bind<DB, R>,
) -> Result<(), sqlx::Error>
where
    DB: sqlx::Database,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    for<'c> &'c mut <DB as sqlx::Database>::Connection: sqlx::Executor<'c, Database = DB>,
{
    let statement = |chunk: &[&R]| {
        let mut arguments = <DB as sqlx::Database>::Arguments::default();
        arguments.reserve(chunk.len() * sql.column_count, 0);
        for row in chunk {
            bind(&mut arguments, row).map_err(sqlx::Error::Encode)?;
        }
        Ok::<_, sqlx::Error>(sqlx::query_with(sql.text(dialect, chunk.len()), arguments))
    };
    if rows.len() <= STATEMENT_ROWS {
        for chunk in statement_rows(rows) {
            statement(&chunk)?.execute(pool).await?;
        }
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    for chunk in statement_rows(rows) {
        statement(&chunk)?.execute(&mut *tx).await?;
    }
    tx.commit().await
}

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

/// Integers go in as `i64`: SQLite has no unsigned 64-bit type.
fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn bind_chat<DB>(arguments: &mut DB::Arguments, r: &ChatLogRecord) -> Result<(), BoxDynError>
where
    DB: sqlx::Database,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Type<DB>,
{
    arguments.add(r.request_id.as_str())?;
    arguments.add(r.session_id.as_deref())?;
    arguments.add(r.user_id.as_deref())?;
    arguments.add(r.client_key_id.as_deref())?;
    arguments.add(r.model.as_str())?;
    arguments.add(r.request_messages.to_string())?;
    arguments.add(r.answer.as_str())?;
    arguments.add(r.tool_calls.as_ref().map(ToString::to_string))?;
    arguments.add(r.status.as_str())?;
    arguments.add(r.error_code.as_deref())?;
    arguments.add(r.error_message.as_deref())?;
    arguments.add(r.finish_reason.as_deref())?;
    arguments.add(r.prompt_tokens.map(int))?;
    arguments.add(r.completion_tokens.map(int))?;
    arguments.add(int(r.queue_ms))?;
    arguments.add(r.ttft_ms.map(int))?;
    arguments.add(int(r.total_ms))?;
    arguments.add(r.created_at)
}

fn bind_ocr<DB>(arguments: &mut DB::Arguments, r: &OcrResultRecord) -> Result<(), BoxDynError>
where
    DB: sqlx::Database,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Type<DB>,
{
    arguments.add(r.ocr_id.as_str())?;
    arguments.add(r.request_id.as_str())?;
    arguments.add(r.image_url.as_str())?;
    arguments.add(r.url_type.as_str())?;
    arguments.add(r.status.as_str())?;
    arguments.add(r.error_code.as_deref())?;
    arguments.add(r.ocr_fund_code.as_deref())?;
    arguments.add(r.ocr_hold_share.as_deref())?;
    arguments.add(r.funds.as_ref().map(ToString::to_string))?;
    arguments.add(r.ocr_text.as_str())?;
    arguments.add(r.fetch_ms.map(int))?;
    arguments.add(r.ocr_ms.map(int))?;
    arguments.add(int(r.elapsed_ms))?;
    arguments.add(r.created_at)?;
    arguments.add(r.created_at)
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

    #[test]
    fn batches_become_statements_of_a_few_sizes() {
        let rows: Vec<usize> = (0..1_000).collect();
        let statements = |n: usize| statement_rows(&rows[..n]).collect::<Vec<_>>();
        let sizes = |n: usize| statements(n).iter().map(Vec::len).collect::<Vec<_>>();
        assert!(statements(0).is_empty());
        assert_eq!(sizes(1), [1]);
        assert_eq!(sizes(3), [4]);
        assert_eq!(sizes(64), [64]);
        assert_eq!(sizes(65), [64, 1]);
        assert_eq!(sizes(500), [64, 64, 64, 64, 64, 64, 64, 64]);
        // Every row once, in order, then copies of the last row as padding.
        let flat: Vec<usize> = statements(3).concat().into_iter().copied().collect();
        assert_eq!(flat, [0, 1, 2, 2]);
        let shapes: std::collections::BTreeSet<usize> = (1..=1_000).flat_map(sizes).collect();
        assert_eq!(shapes.len(), 7, "{shapes:?}");
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
    fn statements_hold_a_placeholder_per_value_and_the_conflict_clause() {
        for rows in [1, 2, 64] {
            for (dialect, conflict) in [
                (Dialect::MySql, "ON DUPLICATE KEY UPDATE ocr_id = ocr_id"),
                (Dialect::Sqlite, "ON CONFLICT (ocr_id) DO NOTHING"),
            ] {
                let sql = OCR_INSERT.text(dialect, rows);
                let text = sql.as_str();
                assert!(
                    text.starts_with("INSERT INTO ocr_results (ocr_id, "),
                    "{text}"
                );
                assert_eq!(text.matches('?').count(), rows * OCR_COLUMN_COUNT, "{text}");
                assert_eq!(text.matches("), (").count(), rows - 1, "{text}");
                assert!(text.ends_with(conflict), "{text}");
            }
        }
    }

    #[test]
    fn column_counts_match_the_lists() {
        assert_eq!(CHAT_COLUMNS.split(',').count(), CHAT_COLUMN_COUNT);
        assert_eq!(OCR_COLUMNS.split(',').count(), OCR_COLUMN_COUNT);
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
