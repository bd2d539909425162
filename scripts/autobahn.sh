#!/usr/bin/env bash
# Runs the Autobahn|Testsuite (cases 1-10; 12.*/13.* are permessage-deflate, not built yet)
# against the echo servers, through ../shared/conformance. Fails on any FAILED case.
# The suite installs itself once (Python 2.7 from the machine image + the package registry).
set -euo pipefail
cd "$(dirname "$0")/.."
CONF=${TIDEWIRE_CONFORMANCE:-../shared/conformance}
if [ ! -d "$CONF" ]; then
  echo "autobahn: $CONF not found (CI clones the repo with shared/ beside it)" >&2
  exit 1
fi
cargo build --release --locked -p tidewire-std --example echo
bash "$CONF/autobahn-server.sh" target/autobahn/std-server \
  "$PWD/target/release/examples/echo --addr 127.0.0.1:{port} --no-keepalive"
