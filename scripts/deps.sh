#!/usr/bin/env bash
# Installs the Debian packages chat-proxy needs to build, run and test, when they are missing.
# Idempotent: installed packages are left alone, and apt is not touched when nothing is missing.
#   scripts/deps.sh run    packages to build and run the service
#   scripts/deps.sh test   also what the tests use (MariaDB, Redis, curl, Chromium and playwright-core)
#   scripts/deps.sh bench  also nginx, which the vs_nginx benchmark relays the same stream with
set -euo pipefail

# Build: bindgen needs libclang; OCR: Tesseract with Chinese and English data.
want=(pkg-config ca-certificates libclang-dev libtesseract-dev libleptonica-dev
      tesseract-ocr-chi-sim tesseract-ocr-eng)
mode="${1:-run}"
if [[ "$mode" == "test" || "$mode" == "bench" ]]; then
    # Tests and benchmarks: MariaDB, curl, three CJK fonts to draw the OCR fixtures, the tesseract
    # command-line tool the OCR benchmark compares against, promtool (package prometheus),
    # which checks /metrics and deploy/alerts.yml, Python's venv for the API fuzzer
    # (scripts/fuzz-api.sh), systemd-analyze, which checks deploy/chat-proxy.service,
    # Chromium for the chat page's browser test (tests/browser.rs), and Redis, which the
    # cluster tests share their permit pool through (tests/cluster.rs).
    want+=(curl mariadb-server mariadb-client fonts-wqy-zenhei fonts-wqy-microhei fonts-arphic-uming
           tesseract-ocr prometheus
           python3 python3-venv systemd chromium redis-server redis-tools)
    # The npm SDK test (scripts/sdk-tests.sh) and the browser test need Node.js; Debian's is
    # used only when the machine has none of its own.
    if ! command -v node >/dev/null 2>&1; then
        want+=(nodejs npm)
    fi
fi
if [[ "$mode" == "bench" ]]; then
    want+=(nginx)
fi

missing=()
for pkg in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done

if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
        exit 1
    fi
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install a Rust toolchain (1.85 or newer), e.g. with rustup" >&2
    exit 1
fi

# The browser test drives Debian's Chromium with playwright-core from npm (no browser download),
# installed once under target/.
if [[ "$mode" == "test" || "$mode" == "bench" ]]; then
    playwright="$(dirname "$0")/../target/browser-node"
    if [[ ! -f "$playwright/node_modules/playwright-core/package.json" ]]; then
        mkdir -p "$playwright"
        npm install --prefix "$playwright" --no-audit --no-fund --silent playwright-core@1.64.1
    fi
fi
