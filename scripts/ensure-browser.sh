#!/usr/bin/env bash
# Install Debian's Chromium for the reviewer-page browser tests when it is missing. Playwright drives this
# system executable (/usr/bin/chromium); nothing ever downloads a browser (`playwright install` is not used).
set -euo pipefail

if [ -x /usr/bin/chromium ] && fc-list 2>/dev/null | grep -qi "wenquanyi"; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "ensure-browser: /usr/bin/chromium is missing and apt-get is not available to install it" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
echo "installing Debian's chromium (for the browser tests)"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core fonts-wqy-microhei >/dev/null
/usr/bin/chromium --version
