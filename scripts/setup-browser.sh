#!/usr/bin/env bash
# Install Chromium from Debian's packages: the report's PNG export (kaleido) and its browser tests need one.
# Idempotent (a second run only checks); needs no stdin; as root it runs apt-get itself, otherwise via sudo.
set -euo pipefail
for name in chromium chromium-browser google-chrome; do
    if command -v "$name" >/dev/null 2>&1; then
        exit 0
    fi
done
if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo -n)
else
    echo "setup-browser: Chromium is missing and this user cannot install it: apt-get install chromium" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq chromium </dev/null >/dev/null
command -v chromium >/dev/null
