#!/usr/bin/env bash
# Runs the Autobahn|Testsuite (cases 1-10; 12.*/13.* are permessage-deflate, not built yet)
# through ../shared/conformance, four times: the `echo` server and the `echo-client` of both
# adapters. Fails on any FAILED case. The suite installs itself once (Python 2.7 from the
# machine image, plus its packages).
#
#   scripts/autobahn.sh [std-server|std-client|smol-server|smol-client]...   (default: all four)
set -euo pipefail
cd "$(dirname "$0")/.."
CONF=${TIDEWIRE_CONFORMANCE:-../shared/conformance}
if [ ! -d "$CONF" ]; then
  echo "autobahn: $CONF not found (CI clones the repo with shared/ beside it)" >&2
  exit 1
fi
runs=("$@")
[ ${#runs[@]} -gt 0 ] || runs=(std-server std-client smol-server smol-client)

# Both adapters have examples named `echo` and `echo-client` (DESIGN.md fixes the names), so
# each adapter builds into its own target directory and the binaries cannot overwrite each other.
bin() { echo "$PWD/target/autobahn/build-$1/release/examples/$2"; }
build() {
  CARGO_TARGET_DIR="target/autobahn/build-$1" \
    cargo build --release --locked -q -p "tidewire-$1" --example echo --example echo-client
}

status=0
for run in "${runs[@]}"; do
  adapter=${run%-*}
  case "$adapter" in std|smol) ;; *) echo "autobahn: unknown run $run" >&2; exit 2 ;; esac
  build "$adapter"
  echo "-- Autobahn: $run"
  case "$run" in
    *-server)
      bash "$CONF/autobahn-server.sh" "target/autobahn/$run" \
        "$(bin "$adapter" echo) --addr 127.0.0.1:{port} --no-keepalive" || status=1 ;;
    *-client)
      bash "$CONF/autobahn-client.sh" "target/autobahn/$run" \
        "$(bin "$adapter" echo-client) --url {url} --agent {agent}" || status=1 ;;
    *) echo "autobahn: unknown run $run" >&2; exit 2 ;;
  esac
done
exit $status
