#!/usr/bin/env bash
# Set up (if needed), then a short monitored training run that writes a JSONL gradient log under runs/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/moola train --model enhanced_simple_lstm --predict-pointers --monitor-gradients \
    --gradient-log-freq 5 --task-balance-freq 1 --epochs 20 "$@"
