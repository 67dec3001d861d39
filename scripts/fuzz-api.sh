#!/usr/bin/env bash
# Checks the served OpenAPI description and fuzzes the running service against it with
# schemathesis (bounded): no 5xx, and every status, content type and body as documented.
# Runs the debug binary on the shipped config plus a private override (port, data folder).
# Tools come from PyPI into target/api-fuzz-venv (created once).
#   scripts/fuzz-api.sh [MAX_EXAMPLES]     default 60 per operation
set -euo pipefail
cd "$(dirname "$0")/.."

max_examples="${1:-60}"
venv=target/api-fuzz-venv
if [[ ! -x "$venv/bin/schemathesis" || ! -x "$venv/bin/openapi-spec-validator" ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "schemathesis==4.32.5" "openapi-spec-validator==0.9.0"
fi

# Both binaries: the server checks at start-up that its OCR worker is beside it.
cargo build -q --bins
work=$(mktemp -d)
server_pid=
cleanup() {
    [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/images"
cat > "$work/local.toml" <<TOML
[server]
bind = "127.0.0.1:0"
[database]
url = "sqlite://$work/chat.db?mode=rwc"
[writer]
spill_path = "$work/spill.jsonl"
[ocr]
preload = false
local_root = "$work/images"
[demo]
first_chunk_delay_ms = 0
token_delay_ms = 0
[log]
format = "text"
TOML

RUST_LOG=warn,chat_proxy=info target/debug/chat-proxy --config config.toml --config "$work/local.toml" \
    2> "$work/server.log" &
server_pid=$!
addr=
for _ in $(seq 1 300); do
    addr=$(grep -o 'listening on [0-9.:]*' "$work/server.log" | head -1 | cut -d' ' -f3 || true)
    [[ -n "$addr" ]] && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
    sleep 0.1
done
[[ -n "$addr" ]] || { echo "the service did not start" >&2; cat "$work/server.log" >&2; exit 1; }

curl -sf "http://$addr/openapi.json" -o "$work/openapi.json"
"$venv/bin/openapi-spec-validator" "$work/openapi.json"

status=0
timeout 900 "$venv/bin/schemathesis" run "http://$addr/openapi.json" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance \
    --max-examples "$max_examples" \
    --request-timeout 30 \
    --no-color || status=$?
if ((status != 0)); then
    echo "--- service log ---" >&2
    tail -50 "$work/server.log" >&2
fi
exit "$status"
