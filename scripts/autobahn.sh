#!/usr/bin/env bash
# The Autobahn|Testsuite against Tidewire's own peers: the `echo` server and the `echo-client`
# example of each adapter, four runs in all by default.
#
#   scripts/autobahn.sh [--no-deflate] [std-server|std-client|smol-server|smol-client]...
#
# Everything it needs is in this repository:
#   scripts/autobahn-setup.sh    installs wstest once (Python 2.7 needed; ~/.cache/tidewire)
#   scripts/autobahn-run.sh      one run, in a loopback-only network namespace
#   scripts/autobahn-summary.py  counts OK, NON-STRICT, INFORMATIONAL, UNIMPLEMENTED, FAILED
#
# Cases: every one, 1 to 13 (517), the permessage-deflate cases 12.* and 13.* included (the
# examples negotiate it by default); UNIMPLEMENTED counts as failed. `--no-deflate` (or
# TIDEWIRE_AUTOBAHN_DEFLATE=0) runs the peers with `--no-deflate` and cases 1 to 11 only.
# TIDEWIRE_AUTOBAHN_CASES / TIDEWIRE_AUTOBAHN_EXCLUDE (comma-separated patterns such as
# `1.*,5.1`) choose cases by hand; see scripts/autobahn-run.sh.
#
# Results: target/autobahn/RUN/ (reports/index.html, logs). Prints each run's counts, then
# `autobahn: N passed, N failed` over all runs; exits 1 when any case failed in any run.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=()
for arg in "$@"; do
  case "$arg" in
    --deflate) export TIDEWIRE_AUTOBAHN_DEFLATE=1 ;; # the default; kept for old command lines
    --no-deflate) export TIDEWIRE_AUTOBAHN_DEFLATE=0 ;;
    std-server | std-client | smol-server | smol-client) runs+=("$arg") ;;
    -h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "autobahn: unknown run '$arg' (std-server, std-client, smol-server, smol-client)" >&2; exit 2 ;;
  esac
done
[ ${#runs[@]} -gt 0 ] || runs=(std-server std-client smol-server smol-client)

# wstest first, so that a machine without Python 2.7 stops here, before any build.
./scripts/autobahn-setup.sh >/dev/null

# Both adapters have examples named `echo` and `echo-client`: each adapter builds into a
# target directory of its own, so that neither overwrites the other's binaries.
example() { echo "$PWD/target/autobahn/build-$1/release/examples/$2"; }
built=()
build() {
  [[ " ${built[*]-} " == *" $1 "* ]] && return 0
  echo "-- building tidewire-$1's echo and echo-client (release)"
  CARGO_TARGET_DIR="target/autobahn/build-$1" \
    cargo build --release --locked -q -p "tidewire-$1" --example echo --example echo-client
  built+=("$1")
}

peer_flags=''
[ "${TIDEWIRE_AUTOBAHN_DEFLATE:-1}" != 0 ] || peer_flags=' --no-deflate'

status=0
for run in "${runs[@]}"; do
  adapter=${run%-*}
  build "$adapter"
  echo "-- Autobahn: $run"
  out="target/autobahn/$run"
  mkdir -p "$out"
  case "$run" in
    *-server)
      ./scripts/autobahn-run.sh server "$out" \
        "$(example "$adapter" echo) --addr 127.0.0.1:{port} --no-keepalive$peer_flags" ;;
    *-client)
      ./scripts/autobahn-run.sh client "$out" \
        "$(example "$adapter" echo-client) --url {url} --agent {agent}$peer_flags" ;;
  esac | tee "$out/summary.txt" || status=1
done

note=' (every case, UNIMPLEMENTED fails)'
[ "${TIDEWIRE_AUTOBAHN_DEFLATE:-1}" != 0 ] || note=' (--no-deflate: cases 1 to 11)'
echo "-- Autobahn summary$note"
passed=0 failed=0
for run in "${runs[@]}"; do
  file="target/autobahn/$run/summary.txt"
  grep -v ': [0-9]* passed, [0-9]* failed$' "$file" || true
  p='' f=''
  read -r p f < <(sed -n 's/^.*: \([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' "$file" | tail -n 1) || true
  passed=$((passed + ${p:-0})) failed=$((failed + ${f:-1}))
done
echo "autobahn: $passed passed, $failed failed"
[ "$failed" -eq 0 ] || status=1
exit $status
