#!/usr/bin/env bash
# Installs what the real-Redis test (tests/tests/redis_bus.rs) needs, once, and prints where
# it is:
#
#   redis-server=/usr/bin/redis-server
#
# - Debian's `redis-server`, with apt-get, when `redis-server` is not on the PATH (as root, or
#   with a password-less sudo). `apt-get update` runs only when apt knows no candidate for it,
#   or when an install from the current lists fails (stale lists). The package's own service
#   is not used: the test starts its own server on a free loopback port.
#
# Idempotent, and fast (no network) when redis-server is there. Safe to run from several
# processes at once (serialised with a lock, checked again under it). Progress goes to
# stderr; stdout holds only the line above.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(redis-server)

log() { echo "redis-setup: $*" >&2; }

find_redis() {
  REDIS=$(command -v redis-server || true)
  [ -n "$REDIS" ]
}

install_redis() {
  ./scripts/apt-install.sh redis-server "${PACKAGES[@]}"
}

if ! find_redis; then
  mkdir -p target
  exec 8>target/redis-setup.lock
  command -v flock >/dev/null 2>&1 && flock 8
  if ! find_redis; then
    install_redis
    if ! find_redis; then
      log "redis-server still missing after the install"
      exit 1
    fi
  fi
  exec 8>&-
fi

echo "redis-server=$REDIS"
