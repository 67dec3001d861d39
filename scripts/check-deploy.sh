#!/usr/bin/env bash
# Checks what deploy/ ships: the systemd unit with `systemd-analyze verify` (on a copy whose
# ExecStart is the built binary, since verify checks that the program exists; any warning, such
# as an unknown key, fails), and the alerting rules with `promtool check rules`.
#   scripts/check-deploy.sh [BINARY]     default target/release/chat-proxy
set -euo pipefail
cd "$(dirname "$0")/.."

binary="$(realpath "${1:-target/release/chat-proxy}")"
[[ -x "$binary" ]] || { echo "no binary at $binary (cargo build --release --bins)" >&2; exit 1; }
command -v systemd-analyze >/dev/null || { echo "systemd-analyze missing (Debian package systemd)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed "s|/opt/chat-proxy/chat-proxy |$binary |" deploy/chat-proxy.service > "$work/chat-proxy.service"
grep -q "ExecStart=$binary " "$work/chat-proxy.service" || { echo "ExecStart not found in the unit" >&2; exit 1; }
if ! systemd-analyze verify "$work/chat-proxy.service" 2> "$work/verify.log"; then
    cat "$work/verify.log" >&2
    exit 1
fi
if [[ -s "$work/verify.log" ]]; then
    echo "systemd-analyze verify warned:" >&2
    cat "$work/verify.log" >&2
    exit 1
fi
echo "deploy/chat-proxy.service: verified"
promtool check rules deploy/alerts.yml
