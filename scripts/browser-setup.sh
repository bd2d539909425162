#!/usr/bin/env bash
# Sets up what the browser tests (tests/tests/browser.rs) need, once, and prints where it is:
#
#   chromium=/usr/bin/chromium
#   chromedriver=/usr/bin/chromedriver
#   python=/…/target/py-venv/bin/python      (the venv of scripts/py-venv.sh, with selenium)
#
# - Debian's `chromium` and `chromium-driver`, with apt-get, when either is missing (as root,
#   or with a password-less sudo). `apt-get update` runs only when apt knows no candidate for
#   them, or when an install from the current lists fails (stale lists).
# - `selenium` (pinned) in the Python venv of scripts/py-venv.sh, beside its `websockets`.
#
# Idempotent, and fast (no network) when everything is there. Safe to run from several
# processes at once: each step is serialised with a lock and checked again under it.
# Progress goes to stderr; stdout holds only the three lines above.
set -euo pipefail
cd "$(dirname "$0")/.."

SELENIUM_VERSION=4.48.0
PACKAGES=(chromium chromium-driver)

log() { echo "browser-setup: $*" >&2; }

find_browser() {
  CHROMIUM=$(command -v chromium || true)
  CHROMEDRIVER=$(command -v chromedriver || true)
  [ -n "$CHROMIUM" ] && [ -n "$CHROMEDRIVER" ]
}

# ----- Chromium and ChromeDriver (Debian's packages) -----

install_browser() {
  ./scripts/apt-install.sh chromium-driver "${PACKAGES[@]}"
}

if ! find_browser; then
  mkdir -p target
  exec 8>target/browser-setup.lock
  command -v flock >/dev/null 2>&1 && flock 8
  if ! find_browser; then
    install_browser
    if ! find_browser; then
      log "chromium or chromedriver still missing after the install"
      exit 1
    fi
  fi
  exec 8>&-
fi

# ----- selenium in the venv of scripts/py-venv.sh -----

PY=$(./scripts/py-venv.sh | tail -n 1)
VENV=$(cd "$(dirname "$PY")/.." && pwd)

have_selenium() {
  "$PY" - "$SELENIUM_VERSION" <<'PYEOF' >/dev/null 2>&1
import sys
import selenium
sys.exit(0 if selenium.__version__ == sys.argv[1] else 1)
PYEOF
}

if ! have_selenium; then
  # The same lock as scripts/py-venv.sh: one pip at a time in this venv.
  exec 9>"$VENV.lock"
  command -v flock >/dev/null 2>&1 && flock 9
  if ! have_selenium; then
    log "installing selenium==$SELENIUM_VERSION into $VENV"
    "$PY" -m pip install --disable-pip-version-check --quiet "selenium==$SELENIUM_VERSION" >&2
    if ! have_selenium; then
      log "selenium $SELENIUM_VERSION is not importable from $PY"
      exit 1
    fi
  fi
  exec 9>&-
fi

echo "chromium=$CHROMIUM"
echo "chromedriver=$CHROMEDRIVER"
echo "python=$PY"
