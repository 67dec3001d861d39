//! The multi-row idempotent INSERTs the writer uses: a few statement sizes per table, each
//! statement's text written once, and the row binders.

use std::borrow::Borrow;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use sqlx::error::BoxDynError;
use sqlx::{Arguments as _, AssertSqlSafe, Encode, SqlSafeStr, SqlStr, Type};

use super::records::{ChatLogRecord, OcrResultRecord};

/// The most rows in one INSERT. The last statement of a batch is padded to a power of two:
/// 7 statement shapes per table in all, each kept prepared on its connection.
const STATEMENT_ROWS: usize = 64;

const CHAT_COLUMNS: &str = "log_id, request_id, session_id, user_id, client_key_id, model, \
    request_messages, answer, tool_calls, status, error_code, error_message, finish_reason, \
    prompt_tokens, completion_tokens, queue_ms, ttft_ms, total_ms, created_at, api";
const CHAT_COLUMN_COUNT: usize = 20;

const OCR_COLUMNS: &str = "ocr_id, request_id, client_key_id, image_url, url_type, status, error_code, \
    ocr_fund_code, ocr_hold_share, funds, ocr_text, fetch_ms, ocr_ms, elapsed_ms, created_at, updated_at";
const OCR_COLUMN_COUNT: usize = 16;

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
pub(super) enum Dialect {
    MySql,
    Sqlite,
}

/// How many statement sizes `statement_rows` makes: 1, 2, 4, ... `STATEMENT_ROWS`.
const STATEMENT_SIZES: usize = STATEMENT_ROWS.trailing_zeros() as usize + 1;

/// The text of a table's multi-row INSERT for each dialect and statement size, written once
/// per process and shared by every batch after it.
pub(super) struct InsertSql {
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

pub(super) static CHAT_INSERT: InsertSql =
    InsertSql::new("chat_logs", CHAT_COLUMNS, CHAT_COLUMN_COUNT, "log_id");
pub(super) static OCR_INSERT: InsertSql =
    InsertSql::new("ocr_results", OCR_COLUMNS, OCR_COLUMN_COUNT, "ocr_id");

/// Adds one row's values to a statement's arguments, in the order of the table's columns.
pub(super) type Bind<DB, R> =
    fn(&mut <DB as sqlx::Database>::Arguments, &R) -> Result<(), BoxDynError>;

/// The INSERTs of `sql` for `rows` (`statement_rows`): alone on the pool when there is one,
/// else in one transaction.
pub(super) async fn execute_statements<DB, R, B: Borrow<R>>(
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

/// Integers go in as `i64`: SQLite has no unsigned 64-bit type.
fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(super) fn bind_chat<DB>(
    arguments: &mut DB::Arguments,
    r: &ChatLogRecord,
) -> Result<(), BoxDynError>
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
    arguments.add(r.log_id.as_str())?;
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
    arguments.add(r.created_at)?;
    arguments.add(r.api.as_str())
}

pub(super) fn bind_ocr<DB>(
    arguments: &mut DB::Arguments,
    r: &OcrResultRecord,
) -> Result<(), BoxDynError>
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
    arguments.add(r.client_key_id.as_deref())?;
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
}
