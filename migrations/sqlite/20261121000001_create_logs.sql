-- Same tables as migrations/mysql, in SQLite's types.
CREATE TABLE IF NOT EXISTS chat_logs (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id        TEXT    NOT NULL UNIQUE,
    session_id        TEXT    NULL,
    user_id           TEXT    NULL,
    client_key_id     TEXT    NULL,
    model             TEXT    NOT NULL,
    request_messages  TEXT    NOT NULL,
    answer            TEXT    NOT NULL,
    tool_calls        TEXT    NULL,
    status            TEXT    NOT NULL,
    error_code        TEXT    NULL,
    error_message     TEXT    NULL,
    finish_reason     TEXT    NULL,
    prompt_tokens     INTEGER NULL,
    completion_tokens INTEGER NULL,
    queue_ms          INTEGER NOT NULL,
    ttft_ms           INTEGER NULL,
    total_ms          INTEGER NOT NULL,
    created_at        TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_chat_logs_session ON chat_logs (session_id);
CREATE INDEX IF NOT EXISTS idx_chat_logs_created ON chat_logs (created_at);

CREATE TABLE IF NOT EXISTS ocr_results (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    ocr_id            TEXT    NOT NULL UNIQUE,
    request_id        TEXT    NOT NULL,
    image_url         TEXT    NOT NULL,
    url_type          TEXT    NOT NULL,
    status            TEXT    NOT NULL,
    error_code        TEXT    NULL,
    ocr_fund_code     TEXT    NULL,
    ocr_hold_share    TEXT    NULL,
    funds             TEXT    NULL,
    ocr_text          TEXT    NOT NULL,
    update_fund_code  TEXT    NULL,
    update_hold_share TEXT    NULL,
    fetch_ms          INTEGER NULL,
    ocr_ms            INTEGER NULL,
    elapsed_ms        INTEGER NOT NULL,
    created_at        TEXT    NOT NULL,
    updated_at        TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_ocr_results_request ON ocr_results (request_id);
CREATE INDEX IF NOT EXISTS idx_ocr_results_created ON ocr_results (created_at);
