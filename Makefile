# The two commands of the README. Both install missing Debian packages first (as root).
.PHONY: run test deps bench

# Run the service on its embedded defaults: SQLite under data/, the offline demo model.
# Both binaries are built: chat-proxy and its OCR worker, chat-proxy-ocr.
run:
	scripts/deps.sh run
	cargo build --release --bins
	target/release/chat-proxy --config config.toml

# Run every test: unit, end to end, OCR, the MySQL tests against MariaDB on 127.0.0.1:3306, three
# instances sharing one permit pool through Redis on 127.0.0.1:6379, the chat page in headless Chromium, a bounded schemathesis run against the service's own OpenAPI
# description, and the official OpenAI SDKs (Python and Node) against the running binary.
test:
	scripts/deps.sh test
	scripts/mariadb-up.sh
	scripts/redis-up.sh
	CHAT_PROXY_TEST_MYSQL_URL=$${CHAT_PROXY_TEST_MYSQL_URL:-mysql://root@127.0.0.1:3306/test} \
	CHAT_PROXY_TEST_REDIS_URL=$${CHAT_PROXY_TEST_REDIS_URL:-redis://127.0.0.1:6379/0} \
	CHAT_PROXY_TEST_BROWSER=1 cargo test
	scripts/fuzz-api.sh
	scripts/sdk-tests.sh

# The benchmark programs (numbers in BENCHMARKS.md).
bench:
	scripts/deps.sh bench
	scripts/mariadb-up.sh
	cargo bench --bench answer
	cargo bench --bench vs_nginx
	cargo bench --bench scale
	scripts/redis-up.sh
	cargo bench --bench cluster
	cargo bench --bench log_writer
	cargo bench --bench ocr
