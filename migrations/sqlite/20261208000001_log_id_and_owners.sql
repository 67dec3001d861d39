-- Same as migrations/mysql: chat_logs is keyed by the server's `log_id`, and `request_id` is no
-- longer unique. SQLite cannot drop a column's UNIQUE, so the table is rebuilt.
CREATE TABLE chat_logs_new (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    log_id            TEXT    NOT NULL UNIQUE,
    request_id        TEXT    NOT NULL,
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
    created_at        TEXT    NOT NULL,
    api               TEXT    NOT NULL DEFAULT 'answer'
);
INSERT INTO chat_logs_new (id, log_id, request_id, session_id, user_id, client_key_id, model,
    request_messages, answer, tool_calls, status, error_code, error_message, finish_reason,
    prompt_tokens, completion_tokens, queue_ms, ttft_ms, total_ms, created_at, api)
SELECT id, request_id, request_id, session_id, user_id, client_key_id, model,
    request_messages, answer, tool_calls, status, error_code, error_message, finish_reason,
    prompt_tokens, completion_tokens, queue_ms, ttft_ms, total_ms, created_at, api
FROM chat_logs;
DROP TABLE chat_logs;
ALTER TABLE chat_logs_new RENAME TO chat_logs;
CREATE INDEX IF NOT EXISTS idx_chat_logs_session ON chat_logs (session_id);
CREATE INDEX IF NOT EXISTS idx_chat_logs_created ON chat_logs (created_at);
CREATE INDEX IF NOT EXISTS idx_chat_logs_request ON chat_logs (request_id);

ALTER TABLE ocr_results ADD COLUMN client_key_id TEXT NULL;
CREATE INDEX IF NOT EXISTS idx_ocr_results_client ON ocr_results (client_key_id);
