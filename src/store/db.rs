//! The database: MySQL (production) or SQLite (embedded default) as two concrete pools behind
//! one type (sqlx's `Any` driver cannot read MySQL's DATETIME), migrations for each, and the
//! writer's INSERTs (their statements are written in `insert.rs`). The reads back and the
//! corrections are in `reads.rs`.

use std::borrow::Borrow;
use std::str::FromStr;
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{MySql, Sqlite};

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

    pub async fn close(&self) {
        match self {
            Self::MySql(pool) => pool.close().await,
            Self::Sqlite(pool) => pool.close().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat_row(request_id: String) -> ChatLogRecord {
        ChatLogRecord {
            log_id: request_id.clone(),
            request_id,
            api: "answer".into(),
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
            created_at: chrono::Utc::now(),
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
