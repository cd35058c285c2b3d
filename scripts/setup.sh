#!/usr/bin/env bash
# Create .venv with what the demo and the tests need: the trainer (torch), the watcher, the test tools and the
# framework integrations. Idempotent: a second run only checks.
# (A user who only watches logs needs none of this: `pip install .` is the watcher alone, without torch.)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
extras=train,test,lightning,transformers,accelerate
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
# The CPU build of torch goes in first: resolving a bare `torch` would pull gigabytes of CUDA packages, and
# so would `torch==2.13.0` from PyPI, whose Linux wheel is the CUDA one. `+cpu` names the CPU build: from the
# machine's own wheels or index where it has them, else from PyTorch's CPU index. Set MOOLA_TORCH_SPEC to
# install another build (e.g. a CUDA wheel on a GPU box).
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    if [ -n "${MOOLA_TORCH_SPEC:-}" ]; then
        .venv/bin/python -m pip install -q "$MOOLA_TORCH_SPEC"
    elif ! .venv/bin/python -m pip install -q "torch==2.13.0+cpu" 2>/dev/null; then
        .venv/bin/python -m pip install -q --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0+cpu"
    fi
fi
# The framework extras are looked up, not imported: importing them takes seconds.
if ! .venv/bin/python -c "import moola, moola_watch, pytest, hypothesis, tensorboard, importlib.util as u, sys
sys.exit(not all(map(u.find_spec, ('lightning', 'transformers', 'accelerate', 'sklearn', 'xdist'))))" 2>/dev/null \
    || [ pyproject.toml -nt .venv/.moola-installed ] || [ scripts/setup.sh -nt .venv/.moola-installed ]; then
    .venv/bin/python -m pip install -q -e ".[$extras]"
    touch .venv/.moola-installed
fi
