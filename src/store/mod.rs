//! Logging to the database: the [`db`] (MySQL or SQLite) and its `insert` statements, the
//! [`records`] it stores, the [`reads`] back, and the background [`writer`] with its [`spill`]
//! file and its crash [`journal`].

pub mod db;
mod insert;
pub mod journal;
pub mod reads;
pub mod records;
pub mod spill;
pub mod writer;

pub use db::{Database, StoreError};
pub use reads::{OcrCorrection, StoredChatLog, StoredOcrResult};
pub use records::{ChatLogRecord, LogRecord, OcrResultRecord};
pub use writer::{INTERRUPTED, LogWriter, WriterStats};
