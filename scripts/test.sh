#!/usr/bin/env bash
# Installs everything the tests need (Python packages and Debian's Chromium for the
# browser tests), then runs lint and the whole suite. README's test command runs this.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -r requirements-test.txt
if ! command -v chromium >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get install -y -qq chromium >/dev/null 2>&1 \
    || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium; }
fi
python3 -m ruff check .
python3 -m pytest -q "$@"
