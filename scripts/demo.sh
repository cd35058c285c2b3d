#!/usr/bin/env bash
# Set up (if needed); train a short monitored run that writes a JSONL gradient log under runs/;
# analyze that log; then check every shipped sample log (what moola-watch says of each situation).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
log="runs/demo-$(date +%Y%m%d-%H%M%S).jsonl"
.venv/bin/moola train --model enhanced_simple_lstm --predict-pointers --monitor-gradients \
    --gradient-log-freq 5 --task-balance-freq 1 --epochs 20 --grad-log "$log" "$@"
echo
.venv/bin/moola-watch analyze "$log"
echo
echo "moola-watch check sample_logs/*.jsonl  (one line per log; the 'killed' one is stale, others as named)"
.venv/bin/moola-watch check sample_logs/*.jsonl || true
