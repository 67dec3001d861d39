-- Same as migrations/mysql: the front door of each exchange, `answer` or `openai`.
ALTER TABLE chat_logs ADD COLUMN api TEXT NOT NULL DEFAULT 'answer';
