-- One row per /answer request. created_at is when the request arrived (UTC), so a replayed
-- record keeps its real time.
CREATE TABLE IF NOT EXISTS chat_logs (
    id                BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    request_id        VARCHAR(128) NOT NULL,
    session_id        VARCHAR(128) NULL,
    user_id           VARCHAR(128) NULL,
    client_key_id     VARCHAR(64)  NULL,
    model             VARCHAR(255) NOT NULL,
    request_messages  LONGTEXT     NOT NULL,
    answer            LONGTEXT     NOT NULL,
    tool_calls        LONGTEXT     NULL,
    status            VARCHAR(32)  NOT NULL,
    error_code        VARCHAR(64)  NULL,
    error_message     TEXT         NULL,
    finish_reason     VARCHAR(64)  NULL,
    prompt_tokens     BIGINT UNSIGNED NULL,
    completion_tokens BIGINT UNSIGNED NULL,
    queue_ms          BIGINT UNSIGNED NOT NULL,
    ttft_ms           BIGINT UNSIGNED NULL,
    total_ms          BIGINT UNSIGNED NOT NULL,
    created_at        DATETIME(3)  NOT NULL,
    UNIQUE KEY uq_chat_logs_request_id (request_id),
    KEY idx_chat_logs_session (session_id),
    KEY idx_chat_logs_created (created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- One row per OCR recognition; update_* hold a person's correction beside the OCR's own values.
CREATE TABLE IF NOT EXISTS ocr_results (
    id                BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    ocr_id            VARCHAR(64)  NOT NULL,
    request_id        VARCHAR(128) NOT NULL,
    image_url         TEXT         NOT NULL,
    url_type          VARCHAR(32)  NOT NULL,
    status            VARCHAR(32)  NOT NULL,
    error_code        VARCHAR(64)  NULL,
    ocr_fund_code     VARCHAR(16)  NULL,
    ocr_hold_share    VARCHAR(40)  NULL,
    funds             LONGTEXT     NULL,
    ocr_text          LONGTEXT     NOT NULL,
    update_fund_code  VARCHAR(16)  NULL,
    update_hold_share VARCHAR(40)  NULL,
    fetch_ms          BIGINT UNSIGNED NULL,
    ocr_ms            BIGINT UNSIGNED NULL,
    elapsed_ms        BIGINT UNSIGNED NOT NULL,
    created_at        DATETIME(3)  NOT NULL,
    updated_at        DATETIME(3)  NOT NULL,
    UNIQUE KEY uq_ocr_results_ocr_id (ocr_id),
    KEY idx_ocr_results_request (request_id),
    KEY idx_ocr_results_created (created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
