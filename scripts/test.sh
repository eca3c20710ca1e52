#!/usr/bin/env bash
# Installs everything the tests need (Python packages; Debian's Chromium for the browser
# tests and Debian's PostgreSQL server binaries, from which the tests start a throwaway
# server of their own), then runs lint and the whole suite. README's test command runs this.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -r requirements-test.txt

SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
apt_install() {  # apt_install PACKAGE: quietly, refreshing the package lists only if needed
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -qq "$1" >/dev/null 2>&1 \
    || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "$1"; }
}
command -v chromium >/dev/null 2>&1 || apt_install chromium
# initdb/pg_ctl live under /usr/lib/postgresql/<version>/bin, not on PATH.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null 2>&1 \
  || apt_install postgresql

python3 -m ruff check .
# Two to four workers (pytest-xdist), each taking whole test files, so a file's module
# fixtures (a trained teacher, a prepared handoff) are built once: much of the suite waits
# on browsers, servers and training processes.
workers=$(nproc 2>/dev/null || echo 2)
workers=$(( workers < 2 ? 2 : (workers > 4 ? 4 : workers) ))
python3 -m pytest -q -n "$workers" --dist loadfile "$@"
