#!/usr/bin/env bash
# Installs the Autobahn|Testsuite's `wstest` once and prints the path of a launcher for it on
# stdout (progress and errors go to stderr):
#
#   WSTEST=$(scripts/autobahn-setup.sh) && "$WSTEST" --autobahnversion
#
# wstest runs only on Python 2.7. The script looks for one in this order: $TIDEWIRE_PYTHON27,
# `python2.7` on the PATH, pyenv's versions/2.7.* (under $PYENV_ROOT, else ~/.pyenv), and
# /usr/bin/python2.7. Without one (with ssl and zlib) it stops with a single line that says
# what to install. The rest comes from the Python package registry, pinned:
#   - a Python 3 venv holding virtualenv < 20.22 (the last series that makes 2.7 environments),
#   - a 2.7 environment made by that virtualenv, holding autobahntestsuite (whose own
#     requirements pin Twisted and the rest for 2.7).
#
# Everything lives in $TIDEWIRE_WSTEST_HOME (default ~/.cache/tidewire/wstest, outside the
# work tree so that `cargo clean` and fresh clones reuse it). Idempotent: a finished install
# leaves a stamp and is checked by running the launcher; anything short of that is wiped and
# done again. Concurrent runs are serialised with a lock.
set -euo pipefail

SUITE_VERSION=25.10.1
VIRTUALENV_SPEC='virtualenv<20.22'
HOME_DIR=${TIDEWIRE_WSTEST_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/tidewire/wstest}
LAUNCHER="$HOME_DIR/wstest"
STAMP="$HOME_DIR/installed"

say() { echo "autobahn-setup: $*" >&2; }

is_installed() {
  [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "autobahntestsuite==$SUITE_VERSION" ] &&
    [ -x "$LAUNCHER" ] && "$LAUNCHER" --autobahnversion >/dev/null 2>&1
}

usable_py27() {
  [ -n "$1" ] && "$1" -c 'import sys, ssl, zlib; sys.exit(sys.version_info[:2] != (2, 7))' \
    >/dev/null 2>&1
}

find_py27() {
  local c
  for c in "${TIDEWIRE_PYTHON27:-}" "$(command -v python2.7 || true)" \
    "${PYENV_ROOT:-$HOME/.pyenv}"/versions/2.7*/bin/python2.7 /usr/bin/python2.7; do
    if usable_py27 "$c"; then
      echo "$c"
      return 0
    fi
  done
  return 1
}

# Runs a step with its output in the install log; on failure shows the log's tail.
step() {
  say "$1"
  shift
  if ! "$@" >>"$HOME_DIR/install.log" 2>&1; then
    tail -n 30 "$HOME_DIR/install.log" >&2
    say "failed: $* (whole log: $HOME_DIR/install.log)"
    exit 1
  fi
}

if is_installed; then
  echo "$LAUNCHER"
  exit 0
fi

PY27=$(find_py27) || {
  echo "autobahn-setup: wstest needs Python 2.7 with ssl and zlib; install it (e.g. \`pyenv install 2.7.18\`) or set TIDEWIRE_PYTHON27 to its python2.7" >&2
  exit 2
}

mkdir -p "$HOME_DIR"
exec 9>"$HOME_DIR.lock"
flock 9
if is_installed; then # another run finished it while this one waited
  echo "$LAUNCHER"
  exit 0
fi

# Whatever is here is unfinished or of another version: start from nothing.
rm -rf "${HOME_DIR:?}"/*
: >"$HOME_DIR/install.log"
say "installing autobahntestsuite==$SUITE_VERSION on $PY27 into $HOME_DIR (a few minutes)"
step "making the helper venv (Python 3) with $VIRTUALENV_SPEC" \
  python3 -m venv "$HOME_DIR/helper"
step "  pip install $VIRTUALENV_SPEC" \
  "$HOME_DIR/helper/bin/python" -m pip install -q --disable-pip-version-check "$VIRTUALENV_SPEC"
step "making the Python 2.7 environment" \
  "$HOME_DIR/helper/bin/python" -m virtualenv -q -p "$PY27" "$HOME_DIR/py27"
step "  pip install autobahntestsuite==$SUITE_VERSION" \
  "$HOME_DIR/py27/bin/python" -m pip install -q --disable-pip-version-check \
  "autobahntestsuite==$SUITE_VERSION"

cat >"$LAUNCHER" <<EOF
#!/bin/sh
# Written by scripts/autobahn-setup.sh: wstest (autobahntestsuite $SUITE_VERSION) on $PY27.
exec "$HOME_DIR/py27/bin/wstest" "\$@"
EOF
chmod +x "$LAUNCHER"
if ! "$LAUNCHER" --autobahnversion >>"$HOME_DIR/install.log" 2>&1; then
  tail -n 30 "$HOME_DIR/install.log" >&2
  say "the installed wstest does not start (whole log: $HOME_DIR/install.log)"
  exit 1
fi
echo "autobahntestsuite==$SUITE_VERSION" >"$STAMP"
say "done: $("$LAUNCHER" --autobahnversion 2>&1 | tr '\n' ' ')"
echo "$LAUNCHER"
