#!/usr/bin/env bash
# Set up (if needed), lint, and run the whole test suite (the report's tests need Chromium: installed here).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/setup-browser.sh
.venv/bin/ruff check .
# Two workers (MOOLA_TEST_WORKERS for more or fewer), each taking whole files: a file's module fixtures (a fresh
# virtual environment, a trained log) are built once. Sequential (MOOLA_TEST_WORKERS=0) the suite takes about
# 1.6x as long on 2 cores: its tests spend much of their time waiting on trainers, terminals and servers.
.venv/bin/python -m pytest -q -n "${MOOLA_TEST_WORKERS:-2}" --dist loadfile "$@"
