#!/usr/bin/env bash
# One command on a fresh Debian/Ubuntu machine: system packages -> a virtualenv with the CPU torch ->
# mmrag_li with its server extra -> ingest examples/data -> `mmrag serve`, and print the URL.
# Idempotent: a second run reuses the virtualenv, skips unchanged files and, when the server is
# already up on the port, just prints its URL.
#
# Environment: PORT (8765), HOST (127.0.0.1), STORE (.mmrag, the CLI's default), VENV (.venv), SKIP_APT=1 (no apt),
# TORCH_INDEX_URL (e.g. https://download.pytorch.org/whl/cpu to force the CPU wheel from PyTorch's index).
set -euo pipefail
cd "$(dirname "$0")"

PORT="${PORT:-8765}"
HOST="${HOST:-127.0.0.1}"
STORE="${STORE:-.mmrag}"
VENV="${VENV:-.venv}"
URL="http://${HOST/0.0.0.0/127.0.0.1}:${PORT}/"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

if curl -fsS "${URL}healthz" >/dev/null 2>&1; then
    say "mmrag serve is already running"
    echo "open ${URL}"
    exit 0
fi

# 1. system packages: OCR engine + language packs, fonts, Python's venv module
if [ "${SKIP_APT:-0}" != "1" ] && command -v apt-get >/dev/null 2>&1; then
    need=()
    for pkg in tesseract-ocr tesseract-ocr-eng tesseract-ocr-osd fonts-dejavu-core python3-venv python3-pip curl; do
        dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
    done
    if [ "${#need[@]}" -gt 0 ]; then
        SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
        say "apt-get install ${need[*]}"
        export DEBIAN_FRONTEND=noninteractive
        $SUDO apt-get update -qq
        $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
fi

# 2. a virtualenv with the CPU torch and mmrag_li[server]
if [ ! -x "$VENV/bin/python" ]; then
    say "creating the virtualenv $VENV"
    python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    say "installing the CPU torch (torch==2.13.0)"
    "$PY" -m pip install -q --upgrade pip
    "$PY" -m pip install -q ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==2.13.0"
fi
if ! "$PY" -c "import mmrag_li, fastapi, uvicorn, multipart, jinja2" >/dev/null 2>&1; then
    say "installing mmrag_li[server]"
    "$PY" -m pip install -q -e ".[server]"
fi

# 3. ingest the bundled examples (unchanged files are skipped on a second run)
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" TRANSFORMERS_OFFLINE="${TRANSFORMERS_OFFLINE:-1}"
say "ingesting examples/data into $STORE"
set +e
"$VENV/bin/mmrag" ingest examples/data --store "$STORE" --quiet
rc=$?
set -e
if [ "$rc" -ne 0 ] && [ "$rc" -ne 3 ]; then
    echo "mmrag ingest failed (exit $rc)" >&2
    exit "$rc"
fi

# 4. serve (foreground; Ctrl-C stops it)
say "starting mmrag serve (models load once, then searches are warm)"
echo "open ${URL}"
exec "$VENV/bin/mmrag" serve --store "$STORE" --host "$HOST" --port "$PORT"
