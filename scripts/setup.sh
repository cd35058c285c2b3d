#!/usr/bin/env bash
# Create .venv and install moola with its test tools. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
# The CPU build of torch goes in first: resolving a bare `torch` would pull gigabytes of CUDA
# packages. Set MOOLA_TORCH_SPEC to install another build (e.g. a CUDA wheel on a GPU box).
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/python -m pip install -q "${MOOLA_TORCH_SPEC:-torch==2.13.0}"
fi
if ! .venv/bin/python -c "import moola, moola_watch, pytest, hypothesis" 2>/dev/null \
    || [ pyproject.toml -nt .venv/.moola-installed ]; then
    .venv/bin/python -m pip install -q -e ".[test]"
    touch .venv/.moola-installed
fi
