#!/usr/bin/env bash
# Install Debian's Java 17 runtime for the Spark engine (`--engine spark`, tests/test_spark.py) when no Java 17+
# is present. PySpark itself comes from uv.lock; it needs a JVM, which is not a Python package.
set -euo pipefail

java_major() {
  local java="${JAVA_HOME:+$JAVA_HOME/bin/}java"
  command -v "$java" >/dev/null 2>&1 || return 1
  "$java" -version 2>&1 | head -n 1 | sed -E 's/.*version "([0-9]+).*/\1/'
}

major="$(java_major || true)"
if [[ "$major" =~ ^[0-9]+$ ]] && [ "$major" -ge 17 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "ensure-java: Spark needs Java 17 (found: ${major:-none}) and apt-get is not available to install" \
       "openjdk-17-jre-headless; install a Java 17 runtime and set JAVA_HOME" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
echo "installing Debian's openjdk-17-jre-headless (for the Spark engine)"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless >/dev/null
java -version
