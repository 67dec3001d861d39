#!/usr/bin/env bash
# Runs the official OpenAI SDKs (Python `openai` from PyPI, the `openai` npm package) against the
# running binary: tests/sdk/python and tests/sdk/node. Two instances on 127.0.0.1: "main" on the
# built-in demo model, and "edge" (one permit, a queue of one) on tests/sdk/edge_upstream.py,
# which cuts a stream or streams slowly. The SDKs are installed once, under target/.
set -euo pipefail
cd "$(dirname "$0")/.."

python_sdk="openai==3.63.0"
node_sdk="openai@7.60.0"
venv=target/sdk-venv
if ! "$venv/bin/python" -c "import openai" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "$python_sdk"
fi
node_dir=target/sdk-node
if [[ ! -f "$node_dir/node_modules/openai/package.json" ]]; then
    mkdir -p "$node_dir"
    npm install --prefix "$node_dir" --no-audit --no-fund --silent "$node_sdk"
fi

cargo build -q --bins
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# Waits for "listening on ..." in a log and prints what follows it.
listening() {
    local log=$1 pid=$2 found=
    for _ in $(seq 1 300); do
        found=$(grep -o 'listening on [0-9.:]*' "$log" | head -1 | cut -d' ' -f3 || true)
        [[ -n "$found" ]] && { echo "$found"; return; }
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "did not start:" >&2
    cat "$log" >&2
    exit 1
}

python3 -u tests/sdk/edge_upstream.py > "$work/edge_upstream.log" 2>&1 &
pids+=($!)
edge_upstream="http://127.0.0.1:$(listening "$work/edge_upstream.log" "${pids[-1]}")"

key="sdk-test-key-0123456789"
# An instance: its name, then extra TOML.
start() {
    local name=$1 extra=$2
    mkdir -p "$work/$name"
    cat > "$work/$name/local.toml" <<TOML
[server]
bind = "127.0.0.1:0"
[auth]
keys = ["$key"]
[database]
url = "sqlite://$work/$name/chat.db?mode=rwc"
[writer]
spill_path = "$work/$name/spill.jsonl"
[ocr]
preload = false
local_root = "$work/$name"
[log]
format = "text"
$extra
TOML
    RUST_LOG=warn,chat_proxy=info target/debug/chat-proxy --config config.toml \
        --config "$work/$name/local.toml" > /dev/null 2> "$work/$name/server.log" &
    pids+=($!)
}

start main '
[demo]
first_chunk_delay_ms = 0
token_delay_ms = 5'
main_url="http://$(listening "$work/main/server.log" "${pids[-1]}")"
start edge "
[upstream]
base_url = \"$edge_upstream/v1\"
model = \"edge\"
max_retries = 0
[limits]
max_concurrent_upstream = 1
max_queue = 1"
edge_url="http://$(listening "$work/edge/server.log" "${pids[-1]}")"

export MAIN_URL="$main_url" EDGE_URL="$edge_url" EDGE_UPSTREAM="$edge_upstream" API_KEY="$key"
status=0
"$venv/bin/python" tests/sdk/python/test_openai_sdk.py || status=1
SDK_NODE_MODULES="$PWD/$node_dir/node_modules" node --test tests/sdk/node/ || status=1
if ((status != 0)); then
    for name in main edge; do
        echo "--- $name log ---" >&2
        tail -30 "$work/$name/server.log" >&2
    done
fi
exit "$status"
