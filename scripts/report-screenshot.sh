#!/usr/bin/env bash
# Regenerate docs/report.png, the README's picture of a report: the top of the page `moola-watch report` makes
# of two shipped sample logs, as headless Chromium draws it (scripts/setup-browser.sh installs one).
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# The collapse log fails its check (exit 1): the page is written all the same.
.venv/bin/moola-watch report sample_logs/pointer_collapse.jsonl sample_logs/healthy.jsonl -o "$work/report.html" || true
test -s "$work/report.html"
browser="$(command -v chromium || command -v chromium-browser || command -v google-chrome)"
# The virtual time budget lets plotly draw every figure before the shot is taken.
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,1900 \
    --virtual-time-budget=15000 --screenshot="$work/report.png" "file://$work/report.html" >/dev/null 2>&1
mv "$work/report.png" docs/report.png
echo "wrote docs/report.png"
