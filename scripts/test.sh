#!/usr/bin/env bash
# Set up (if needed), lint, and run the whole test suite (the report's tests need Chromium: installed here).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/setup-browser.sh
.venv/bin/ruff check .
.venv/bin/python -m pytest -q "$@"
