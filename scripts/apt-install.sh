#!/usr/bin/env bash
# Installs Debian packages for the test scripts: `scripts/apt-install.sh PROBE PKG...`.
#
# - Runs as root, or with a password-less sudo; fails clearly otherwise, or without apt-get.
# - `apt-get update` runs only when apt knows no candidate for PROBE (one of the packages),
#   or when an install from the current lists fails (stale lists).
# - `RUNLEVEL=1` keeps a package's own service from starting (and being left running).
# Progress goes to stderr. The caller checks afterwards that what it needs is there, and
# serialises concurrent runs itself.
set -euo pipefail

log() { echo "apt-install: $*" >&2; }

probe=$1
shift
packages=("$@")

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
  else
    log "${packages[*]}: installing needs root (or sudo -n)"
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  log "${packages[*]}: there is no apt-get to install them"
  exit 1
fi
apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get -qq -y
  -o DPkg::Lock::Timeout=300 -o Dpkg::Use-Pty=0)
candidate=$(apt-cache policy "$probe" 2>/dev/null | awk '/Candidate:/ {print $2}')
updated=no
if [ -z "$candidate" ] || [ "$candidate" = "(none)" ]; then
  log "apt-get update (no candidate for $probe yet)"
  "${apt[@]}" update >&2
  updated=yes
fi
log "apt-get install ${packages[*]}"
if ! "${apt[@]}" install --no-install-recommends "${packages[@]}" >&2; then
  if [ "$updated" = yes ]; then
    log "apt-get install failed"
    exit 1
  fi
  log "apt-get install failed; apt-get update (stale lists?) and trying again"
  "${apt[@]}" update >&2
  "${apt[@]}" install --no-install-recommends "${packages[@]}" >&2
fi
