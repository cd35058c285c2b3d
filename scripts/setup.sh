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
# The framework extras are looked up, not imported: importing them takes seconds.
if ! .venv/bin/python -c "import moola, moola_watch, pytest, hypothesis, importlib.util as u, sys
sys.exit(not all(map(u.find_spec, ('lightning', 'transformers', 'accelerate'))))" 2>/dev/null \
    || [ pyproject.toml -nt .venv/.moola-installed ]; then
    .venv/bin/python -m pip install -q -e ".[test,lightning,transformers,accelerate]"
    touch .venv/.moola-installed
fi
