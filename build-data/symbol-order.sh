#!/usr/bin/env bash
# Remakes build-data/symbol-order.txt: the functions chat-proxy runs, from a profile of the /answer
# benchmark (start-up, HTTP/1.1 and h2c upstreams, a full queue, clients leaving, the log).
# The release build links them side by side (build.rs), so the server's code keeps fewer pages
# in memory. Run it after a dependency update or a larger change; a stale list only means
# that the functions it no longer names are laid out as before.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is needed: apt-get install valgrind" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# `make run` and `cargo bench` build the binary with different dependency hashes, so the
# list names the functions of both builds.
cargo build --release --bins
cp target/release/chat-proxy "$work/chat-proxy.run"
cargo bench --bench answer --no-run
cp target/release/chat-proxy "$work/chat-proxy.bench"

CHAT_PROXY_BENCH_WRAP="valgrind --tool=callgrind --demangle=no --callgrind-out-file=$work/cg.%p" \
CHAT_PROXY_BENCH_CPU="100 1 300" \
    cargo bench --bench answer -- cpu rss
python3 build-data/symbol-order.py build-data/symbol-order.txt "$work" \
    "$work/chat-proxy.bench" "$work/chat-proxy.run"
