-- Every exchange leaves its own row: the key is `log_id`, an id the server makes, and the
-- client's `request_id` (its `x-request-id`, which it may reuse) is kept beside it, not unique.
-- Rows written before have their request_id, which was unique, as their log_id.
ALTER TABLE chat_logs ADD COLUMN log_id VARCHAR(128) NULL AFTER id;
UPDATE chat_logs SET log_id = request_id WHERE log_id IS NULL;
ALTER TABLE chat_logs
    MODIFY log_id VARCHAR(128) NOT NULL,
    DROP INDEX uq_chat_logs_request_id,
    ADD UNIQUE KEY uq_chat_logs_log_id (log_id),
    ADD KEY idx_chat_logs_request (request_id);

-- The id of the client key that made each OCR result (NULL when no keys are configured): with
-- keys on, only that key (or an admin key) may read or correct it.
ALTER TABLE ocr_results
    ADD COLUMN client_key_id VARCHAR(64) NULL AFTER request_id,
    ADD KEY idx_ocr_results_client (client_key_id);
