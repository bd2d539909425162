#!/usr/bin/env bash
# One Autobahn|Testsuite run against one Tidewire peer, then its summary:
#
#   scripts/autobahn-run.sh server OUTDIR 'SERVER COMMAND, listening on 127.0.0.1:{port}'
#   scripts/autobahn-run.sh client OUTDIR 'CLIENT COMMAND, given {url} and {agent}'
#
# `server` tests a WebSocket server: wstest plays the client (its fuzzingclient mode).
# `client` tests a WebSocket client: wstest plays the server (its fuzzingserver mode) and the
# client command runs every case it offers, then asks it to write the reports.
#
# Both peers run inside a network namespace of their own, made for the run, in which only
# loopback exists: the fixed ports cannot collide with anything on the machine and no packet
# can leave it. (As root that is `unshare --net`; otherwise a user namespace is made too.)
#
# Which cases (patterns as wstest takes them, comma-separated):
#   TIDEWIRE_AUTOBAHN_CASES     default `*`: every case, 1 to 13 (517), the permessage-deflate
#                               ones (12.*, 13.*) included
#   TIDEWIRE_AUTOBAHN_EXCLUDE   default none
# An UNIMPLEMENTED case (wstest's verdict when the peer does not negotiate permessage-deflate)
# counts as failed. TIDEWIRE_AUTOBAHN_DEFLATE=0 is the run of a peer without compression:
# 12.* and 13.* excluded by default, and UNIMPLEMENTED passes.
# Other knobs: TIDEWIRE_AUTOBAHN_PORT (default 9001), TIDEWIRE_AUTOBAHN_TIMEOUT (seconds for
# the whole run, default 1800; cases 12 and 13 alone take about ten minutes).
#
# Writes OUTDIR/{config.json,wstest.log,peer.log,reports/} (the per-case pages:
# OUTDIR/reports/index.html). Prints the counts per outcome and `LABEL: N passed, N failed`
# (LABEL is OUTDIR's last component); exits 1 when any case failed or the run broke down.
set -euo pipefail

say() { echo "autobahn-run: $*" >&2; }

# ---- inside the namespace: bring loopback up, run both peers, stop them ------------------
if [ "${1:-}" = --in-netns ]; then
  mode=$2 wstest=$3 port=$4 peer_cmd=$5 limit=$6
  ip link set lo up

  wait_for_port() {
    local _
    for _ in $(seq 150); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
      sleep 0.1
    done
    return 1
  }
  stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
  ended() { # WHAT STATUS HINT
    if [ "$2" -eq 124 ] || [ "$2" -eq 137 ]; then
      echo "$1 was stopped after the run's limit of ${limit}s ($3)" >>outcome.log
    else
      echo "$1 exited with status $2 ($3)" >>outcome.log
    fi
  }

  status=0
  if [ "$mode" = server ]; then
    bash -c "exec $peer_cmd" >peer.log 2>&1 &
    peer=$!
    if ! wait_for_port; then
      echo "the server never listened on 127.0.0.1:$port (see peer.log)" >>outcome.log
      stop "$peer"
      exit 1
    fi
    # wstest exits 0 whatever the cases gave: the report decides.
    timeout -k 10 "$limit" "$wstest" -m fuzzingclient -s config.json >wstest.log 2>&1 ||
      { ended "wstest fuzzingclient" $? "see wstest.log"; status=1; }
    if ! kill -0 "$peer" 2>/dev/null; then
      echo "the server was no longer running at the end of the run (see peer.log)" >>outcome.log
      status=1
    fi
    stop "$peer"
  else
    "$wstest" -m fuzzingserver -s config.json -u 0 >wstest.log 2>&1 &
    fuzzer=$!
    if ! wait_for_port; then
      echo "wstest fuzzingserver never listened on 127.0.0.1:$port (see wstest.log)" >>outcome.log
      stop "$fuzzer"
      exit 1
    fi
    timeout -k 10 "$limit" bash -c "exec $peer_cmd" >peer.log 2>&1 ||
      { ended "the client" $? "see peer.log"; status=1; }
    stop "$fuzzer"
  fi
  exit $status
fi

# ---- outside: check arguments, write the config, enter the namespace, summarize ----------
if [ $# -ne 3 ] || { [ "$1" != server ] && [ "$1" != client ]; }; then
  sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
mode=$1 out=$2 peer_cmd=$3
here=$(cd "$(dirname "$0")" && pwd)
port=${TIDEWIRE_AUTOBAHN_PORT:-9001}
limit=${TIDEWIRE_AUTOBAHN_TIMEOUT:-1800}
cases=${TIDEWIRE_AUTOBAHN_CASES:-*}
summary_flags=()
if [ "${TIDEWIRE_AUTOBAHN_DEFLATE:-1}" = 0 ]; then
  exclude=${TIDEWIRE_AUTOBAHN_EXCLUDE-12.*,13.*}
else
  exclude=${TIDEWIRE_AUTOBAHN_EXCLUDE-}
  summary_flags+=(--unimplemented-fails)
fi

command -v ip >/dev/null || { say "needs \`ip\` to bring up loopback in the run's namespace: install iproute2"; exit 2; }
command -v unshare >/dev/null || { say "needs \`unshare\` for the run's network namespace: install util-linux"; exit 2; }
wstest=$("$here/autobahn-setup.sh")

# "1.*,2.1.1" -> ["1.*","2.1.1"]
json_list() {
  local item items sep='' list='['
  IFS=, read -ra items <<<"$1"
  for item in "${items[@]}"; do
    item=${item// /}
    [ -n "$item" ] || continue
    if ! [[ $item =~ ^[0-9.*]+$ ]]; then
      say "not a case pattern: '$item' (digits, dots and * only)"
      exit 2
    fi
    list+="$sep\"$item\""
    sep=,
  done
  echo "$list]"
}
cases_json=$(json_list "$cases")
exclude_json=$(json_list "$exclude")

mkdir -p "$out"
out=$(cd "$out" && pwd)
label=$(basename "$out")
rm -rf "$out/reports" "$out"/*.log "$out/config.json"

url="ws://127.0.0.1:$port"
if [ "$mode" = server ]; then
  cmd=${peer_cmd//\{port\}/$port}
  cat >"$out/config.json" <<EOF
{
  "outdir": "./reports",
  "servers": [{ "agent": "tidewire", "url": "$url" }],
  "cases": $cases_json,
  "exclude-cases": $exclude_json,
  "exclude-agent-cases": {}
}
EOF
else
  cmd=${peer_cmd//\{url\}/$url}
  cmd=${cmd//\{agent\}/tidewire}
  cat >"$out/config.json" <<EOF
{
  "url": "$url",
  "outdir": "./reports",
  "cases": $cases_json,
  "exclude-cases": $exclude_json,
  "exclude-agent-cases": {}
}
EOF
fi

say "$label: $mode mode, cases $cases_json minus $exclude_json${summary_flags:+, UNIMPLEMENTED fails}"
netns=(unshare --net)
[ "$(id -u)" -eq 0 ] || netns=(unshare --user --map-root-user --net)
ran=0
(cd "$out" && "${netns[@]}" -- bash "$here/autobahn-run.sh" --in-netns \
  "$mode" "$wstest" "$port" "$cmd" "$limit") || ran=1
if [ -s "$out/outcome.log" ]; then
  sed "s/^/autobahn-run: $label: /" "$out/outcome.log" >&2
fi

summary=0
python3 "$here/autobahn-summary.py" --label "$label" "${summary_flags[@]}" \
  "$out/reports/index.json" || summary=1
if [ $ran -ne 0 ] || [ $summary -ne 0 ]; then
  say "$label: FAILED (logs: $out/wstest.log, $out/peer.log; reports: $out/reports/index.html)"
  exit 1
fi
