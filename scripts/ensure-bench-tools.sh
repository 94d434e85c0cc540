#!/usr/bin/env bash
# Install the HTTP load generator the serving benchmark drives (wrk) from Debian's packages, when absent.
# Quiet and idempotent when wrk is already on PATH; nothing is fetched from anywhere but the Debian mirrors.
set -euo pipefail

if command -v wrk >/dev/null 2>&1; then
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  echo "ensure-bench-tools: wrk is not installed, and installing it needs root or password-less sudo:" >&2
  echo "  apt-get update && apt-get install -y wrk" >&2
  exit 1
fi

echo "ensure-bench-tools: installing wrk from Debian's packages" >&2
output=$(mktemp)
trap 'rm -f "$output"' EXIT
if ! { "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update \
       && "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends wrk; } \
     >"$output" 2>&1; then
  cat "$output" >&2
  echo "ensure-bench-tools: apt-get could not install wrk (output above)" >&2
  exit 1
fi

if ! command -v wrk >/dev/null 2>&1; then
  echo "ensure-bench-tools: apt-get finished but wrk is still not on PATH" >&2
  exit 1
fi
