-- Which front door an exchange came through: `answer` (POST /answer) or `openai`
-- (POST /v1/chat/completions). Rows written before this column were all `answer`.
ALTER TABLE chat_logs ADD COLUMN api VARCHAR(16) NOT NULL DEFAULT 'answer';
