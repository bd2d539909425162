#!/usr/bin/env bash
# Sets up the Python environment of the interop tests (tests/interop/*.py) once and prints
# the path of its python on stdout; everything else goes to stderr. Idempotent and fast
# when the venv already holds the pinned `websockets`:
#   PY=$(scripts/py-venv.sh) && "$PY" tests/interop/client.py --url ws://127.0.0.1:9001
set -euo pipefail
cd "$(dirname "$0")/.."

WEBSOCKETS_VERSION=15.0.1
VENV=${TIDEWIRE_PY_VENV:-$PWD/target/py-venv}
PY="$VENV/bin/python"

have_pinned() {
  [ -x "$PY" ] && "$PY" - "$WEBSOCKETS_VERSION" <<'PYEOF' >/dev/null 2>&1
import sys
import websockets.version
sys.exit(0 if websockets.version.version == sys.argv[1] else 1)
PYEOF
}

if have_pinned; then
  echo "$PY"
  exit 0
fi

# Several test processes may run this at once (cargo runs tests in parallel): serialise
# the set-up with a lock next to the venv, then check again under it.
mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
if command -v flock >/dev/null 2>&1; then
  flock 9
fi

if ! have_pinned; then
  if ! { [ -x "$PY" ] && "$PY" -m pip --version >/dev/null 2>&1; }; then
    # Missing, or left half-made by an interrupted run: (re)create it.
    echo "py-venv: creating $VENV" >&2
    python3 -m venv --clear "$VENV" >&2
  fi
  echo "py-venv: installing websockets==$WEBSOCKETS_VERSION" >&2
  "$PY" -m pip install --disable-pip-version-check --quiet "websockets==$WEBSOCKETS_VERSION" >&2
  if ! have_pinned; then
    echo "py-venv: websockets $WEBSOCKETS_VERSION is not importable from $PY" >&2
    exit 1
  fi
fi
echo "$PY"
