//! What the log writer stores: one record type per table, serialisable so a record can wait in
//! the spill file and come back unchanged.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A row for `chat_logs` or `ocr_results`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "table", rename_all = "snake_case")]
pub enum LogRecord {
    ChatLogs(ChatLogRecord),
    OcrResults(OcrResultRecord),
}

/// One exchange. `log_id` is unique, so writing it twice keeps one row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatLogRecord {
    /// The server's id for this exchange's row. Records spilled before it existed take their
    /// `request_id` (see [`LogRecord::upgrade`]), as the migration did for stored rows.
    #[serde(default)]
    pub log_id: String,
    /// The request id the client saw (its `x-request-id`, or one the server made); a client
    /// may reuse one, so it is not unique.
    pub request_id: String,
    /// The front door: `answer` or `openai`. Records spilled before it existed were `answer`.
    #[serde(default = "answer_api")]
    pub api: String,
    pub session_id: Option<String>,
    pub user_id: Option<String>,
    /// The id of the client's API key (never the key).
    pub client_key_id: Option<String>,
    pub model: String,
    /// The messages as sent upstream.
    pub request_messages: Value,
    /// The answer as far as it got.
    pub answer: String,
    pub tool_calls: Option<Value>,
    /// `ok`, `error`, `cancelled`, `queue_timeout`, `shutting_down`, `client_too_slow`,
    /// `interrupted` (the process stopped mid-exchange; written from the journal).
    pub status: String,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub finish_reason: Option<String>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub queue_ms: u64,
    pub ttft_ms: Option<u64>,
    pub total_ms: u64,
    /// When the request arrived.
    pub created_at: DateTime<Utc>,
}

fn answer_api() -> String {
    "answer".to_owned()
}

/// One OCR recognition. `ocr_id` is unique.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OcrResultRecord {
    pub ocr_id: String,
    pub request_id: String,
    /// The id of the client key that asked (through `/ocr`, a job or a tool call of `/answer`).
    #[serde(default)]
    pub client_key_id: Option<String>,
    pub image_url: String,
    pub url_type: String,
    /// `ok` or the error's code.
    pub status: String,
    pub error_code: Option<String>,
    pub ocr_fund_code: Option<String>,
    pub ocr_hold_share: Option<String>,
    /// Every fund found on the page.
    pub funds: Option<Value>,
    pub ocr_text: String,
    pub fetch_ms: Option<u64>,
    pub ocr_ms: Option<u64>,
    pub elapsed_ms: u64,
    pub created_at: DateTime<Utc>,
}

impl LogRecord {
    /// The key that makes a replay idempotent.
    pub fn key(&self) -> &str {
        match self {
            Self::ChatLogs(r) => &r.log_id,
            Self::OcrResults(r) => &r.ocr_id,
        }
    }

    /// A record read back from a file written by an older version, brought up to date.
    pub fn upgrade(mut self) -> Self {
        if let Self::ChatLogs(r) = &mut self
            && r.log_id.is_empty()
        {
            r.log_id.clone_from(&r.request_id);
        }
        self
    }
}

impl From<ChatLogRecord> for LogRecord {
    fn from(record: ChatLogRecord) -> Self {
        Self::ChatLogs(record)
    }
}

impl From<OcrResultRecord> for LogRecord {
    fn from(record: OcrResultRecord) -> Self {
        Self::OcrResults(record)
    }
}
