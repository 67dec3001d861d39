//! Logging to the database: the [`db`] (MySQL or SQLite) and its `insert` statements, the
//! [`records`] it stores, and the background [`writer`] with its [`spill`] file.

pub mod db;
mod insert;
pub mod records;
pub mod spill;
pub mod writer;

pub use db::{Database, StoreError, StoredChatLog, StoredOcrResult};
pub use records::{ChatLogRecord, LogRecord, OcrResultRecord};
pub use writer::{LogWriter, WriterStats};
