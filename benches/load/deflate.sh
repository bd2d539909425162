#!/usr/bin/env bash
# WebSocket compression benchmark (permessage-deflate, RFC 7692): Tidewire's echo examples
# against a peer echo server that compresses (yawc), in one run, with ratios.
#
#   benches/load/deflate.sh        # from anywhere; about 4 minutes after the builds
#
# Builds (release) the load generator and peer-yawc of this package, and the `echo` examples
# of tidewire-std and tidewire-smol (each into its own target dir, since both are named
# `echo`). All three servers accept permessage-deflate whenever a client offers it, compress
# every message at level 3 (flate2 on zlib-rs) and honour the context takeover the client
# asks for. Every server runs pinned to CPU $SERVER_CPU and the load generator to CPU
# $CLIENT_CPU.
#
# Load: for each case (conns x size:payload) and each mode (`off`: no offer; `no-context`:
# client_ and server_no_context_takeover offered; `context`: plain permessage-deflate), the
# servers take turns (the order rotates), one message in flight per connection; msgs/s and
# the server's CPU time per message (/proc/PID/task/*/schedstat, read by the load generator
# at the edges of the measured window), with ratios to the peer in the same mode and to the
# same server without compression.
#
# Idle memory: each server is started afresh for each mode and $IDLE_CONNS connections are
# opened and held; its VmRSS growth per connection is reported, once right after the
# handshakes (prime 0) and once after every connection echoed one message (prime 1: zlib
# states that are created on first use exist, and pooled ones went back to their pool).
#
# Writes a markdown report to stdout and target/bench/deflate.md; raw results and server
# logs go to target/bench/deflate/. Tunables (environment): SECS (3), WARMUP (0.5),
# ROUNDS (1), CASES ("100x200:json 10x16384:prose"; empty: idle memory only), MODES ("off no-context context"),
# IDLE_CONNS (5000; 0 skips), IDLE_PRIMES ("0 1"), IDLE_SIZE (200, json, for priming),
# SERVERS ("tidewire-std tidewire-smol yawc"), SERVER_CPU (0), CLIENT_CPU (1), NO_BUILD
# (unset), BENCH_TARGET (target/bench-deflate: where the three builds go, as load/, std/
# and smol/).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
out="$root/target/bench"
raw="$out/deflate"
secs=${SECS:-3}
warmup=${WARMUP:-0.5}
rounds=${ROUNDS:-1}
cases=${CASES:-"100x200:json 10x16384:prose"}
modes=${MODES:-"off no-context context"}
idle_conns=${IDLE_CONNS:-5000}
idle_primes=${IDLE_PRIMES:-"0 1"}
idle_size=${IDLE_SIZE:-200}
server_cpu=${SERVER_CPU:-0}
client_cpu=${CLIENT_CPU:-1}
servers=${SERVERS:-"tidewire-std tidewire-smol yawc"}
peers="yawc"
builds=${BENCH_TARGET:-$root/target/bench-deflate}

mkdir -p "$raw"
rm -f "$raw"/*.log "$raw"/*.tsv "$raw"/last.out

log() { echo "[deflate] $*" >&2; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || log "cannot raise the fd limit past $(ulimit -n)"

# ---------------------------------------------------------------- build
loadgen="$builds/load/release/loadgen"
declare -A bin args
bin[yawc]="$builds/load/release/peer-yawc"
bin[tidewire-std]="$builds/std/release/examples/echo"
bin[tidewire-smol]="$builds/smol/release/examples/echo"
args[tidewire-std]="--no-keepalive"
args[tidewire-smol]="--no-keepalive"

if [[ -z ${NO_BUILD:-} ]]; then
    log "building the load generator and peer-yawc"
    (cd "$here" && CARGO_TARGET_DIR="$builds/load" cargo build --release --quiet --bin loadgen --bin peer-yawc)
    for adapter in std smol; do
        log "building tidewire-$adapter's echo example (feature deflate is on by default)"
        (cd "$root" && CARGO_TARGET_DIR="$builds/$adapter" \
            cargo build --release --quiet -p "tidewire-$adapter" --example echo) ||
            log "tidewire-$adapter's echo example does not build: skipped"
    done
fi
available=""
for s in $servers; do
    if [[ -n ${bin[$s]:-} && -x ${bin[$s]} ]]; then
        available+="$s "
    else
        log "no binary for $s: skipped"
    fi
done
servers=$available

# ---------------------------------------------------------------- servers
declare -A pid addr
started=()
cleanup() {
    local p
    for p in "${started[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# start NAME LOG: the server binds port 0 and prints `listening on ADDR`.
start() {
    local name=$1 logfile=$2 i
    : >"$logfile"
    # shellcheck disable=SC2086 # args are flags, split on purpose
    taskset -c "$server_cpu" "${bin[$name]}" --addr 127.0.0.1:0 ${args[$name]:-} >"$logfile" 2>&1 &
    pid[$name]=$!
    started+=("${pid[$name]}")
    for ((i = 0; i < 100; i++)); do
        addr[$name]=$(sed -n 's/^listening on \([^ ]*\).*/\1/p' "$logfile" | head -n1) || true
        [[ -n ${addr[$name]} ]] && return 0
        kill -0 "${pid[$name]}" 2>/dev/null || break
        sleep 0.1
    done
    log "$name did not start; its log:"
    cat "$logfile" >&2
    return 1
}

stop() {
    local name=$1
    kill "${pid[$name]}" 2>/dev/null || true
    wait "${pid[$name]}" 2>/dev/null || true
}

# run_loadgen LABEL ARGS...: runs the load generator on its CPU, keeps its output in
# loadgen.log, prints its RESULT line (without the word) and fails when it fails.
run_loadgen() {
    local label=$1 status=0
    shift
    taskset -c "$client_cpu" "$loadgen" "$@" >"$raw/last.out" 2>&1 || status=$?
    { echo "== $label: loadgen $*"; cat "$raw/last.out"; } >>"$raw/loadgen.log"
    [[ $status -eq 0 ]] && sed -n 's/^RESULT //p' "$raw/last.out" | grep .
}

# deflate_flag MODE: the load generator's flag for a mode.
deflate_flag() { [[ $1 == off ]] || echo "--deflate $1"; }

# ---------------------------------------------------------------- load cases
[[ -z ${cases// /} ]] && rounds=0 # CASES="": idle memory only
((rounds == 0)) || for s in $servers; do start "$s" "$raw/$s.log"; done
((rounds == 0)) || log "servers: $(for s in $servers; do printf '%s=%s(pid %s) ' "$s" "${addr[$s]}" "${pid[$s]}"; done)"

turn=0
for ((round = 1; round <= rounds; round++)); do
    for case in $cases; do
        shape=${case%%:*}
        payload=${case#*:}
        [[ $payload == "$case" ]] && payload=letters
        conns=${shape%x*}
        size=${shape#*x}
        for mode in $modes; do
            # Rotate the order so no server always runs first or right after another.
            read -r -a order <<<"$servers"
            n=${#order[@]}
            for ((k = 0; k < n; k++)); do
                s=${order[$(((k + turn) % n))]}
                if ! kill -0 "${pid[$s]}" 2>/dev/null; then
                    log "$s has exited; see $raw/$s.log"
                    continue
                fi
                log "round $round: $s, $conns conns x $size B $payload, deflate $mode"
                # shellcheck disable=SC2046 # the flag is two words on purpose
                if result=$(run_loadgen "$s $case $mode" --url "ws://${addr[$s]}" --conns "$conns" \
                    --size "$size" --payload "$payload" $(deflate_flag "$mode") \
                    --secs "$secs" --warmup "$warmup" --server-pid "${pid[$s]}"); then
                    printf '%s\t%s\t%s\t%s\n' "$s" "$case" "$mode" "$result" >>"$raw/results.tsv"
                else
                    log "loadgen failed against $s (see $raw/loadgen.log)"
                    printf '%s\t%s\t%s\tfailed=1\n' "$s" "$case" "$mode" >>"$raw/results.tsv"
                fi
            done
            turn=$((turn + 1))
        done
    done
done
((rounds == 0)) || for s in $servers; do stop "$s"; done

# ---------------------------------------------------------------- idle memory
if [[ $idle_conns -gt 0 ]]; then
    for prime in $idle_primes; do
        for mode in $modes; do
            for s in $servers; do
                start "$s" "$raw/$s.idle.log"
                sleep 0.3 # past startup: the baseline RSS
                log "idle: $s, $idle_conns connections, deflate $mode, prime $prime"
                # shellcheck disable=SC2046
                if result=$(run_loadgen "$s idle $mode prime $prime" --url "ws://${addr[$s]}" \
                    --idle "$idle_conns" $(deflate_flag "$mode") --prime "$prime" \
                    --size "$idle_size" --payload json --server-pid "${pid[$s]}"); then
                    printf '%s\t%s\t%s\t%s\n' "$s" "$mode" "$prime" "$result" >>"$raw/idle.tsv"
                else
                    log "idle run failed against $s (see $raw/loadgen.log)"
                    printf '%s\t%s\t%s\tfailed=1\n' "$s" "$mode" "$prime" >>"$raw/idle.tsv"
                fi
                stop "$s"
            done
        done
    done
fi

# ---------------------------------------------------------------- report
report() {
    echo "# WebSocket compression benchmark (permessage-deflate)"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')$(
        [[ -n $(git -C "$root" status --porcelain -- core adapter-std adapter-smol 2>/dev/null) ]] && echo ' (with uncommitted library changes)'), \
$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), kernel $(uname -r)."
    echo "Servers on CPU $server_cpu, the load generator (one thread, epoll) on CPU $client_cpu;"
    echo "one message in flight per connection; ${warmup} s warmup, ${secs} s measured, $rounds round(s)."
    echo "Every server compresses every message (level 3, flate2 on zlib-rs) when the client offers"
    echo "permessage-deflate. Modes: **off** (no offer), **no-context** (client_ and"
    echo "server_no_context_takeover offered and agreed), **context** (plain offer: both ends keep"
    echo "their LZ77 context). Payloads: json, a chat message; prose, English-like text; each"
    echo "connection cycles through distinct messages (at least 128 KiB of them), all compressed by"
    echo "the load generator, the replies inflated and checked byte for byte."
    echo "Server CPU is user+system time of all its threads over the measured window. *vs peer*:"
    echo "against yawc in the same case and mode (msgs/s higher is better, CPU per message lower);"
    echo "*vs off*: the same server's CPU per message against its own uncompressed run."
    echo "*wire*: bytes of the server's replies on the wire per byte of message."
    echo "A loadgen CPU near 100% means the client, not the server, set the pace: compare CPU per message."
    echo "Other CPU: what the rest of the machine used meanwhile (/proc/stat, steal included); it"
    echo "should be near 0%: this machine has $(nproc) CPUs and the benchmark uses them all."
    echo
    [[ -f $raw/results.tsv ]] && awk -F'\t' -v cases="$cases" -v modes="$modes" -v servers="$servers" -v peers="$peers" '
    function val(line, key,   n, i, parts, kvp) {
        n = split(line, parts, " ")
        for (i = 1; i <= n; i++) { split(parts[i], kvp, "="); if (kvp[1] == key) return kvp[2] }
        return ""
    }
    {
        k = $2 SUBSEP $3 SUBSEP $1
        if (val($4, "failed") != "") { failed[k] = 1; next }
        msgs[k] += val($4, "msgs"); secs_[k] += val($4, "secs"); ns[k] += val($4, "server_cpu_ns")
        ccpu[k] += val($4, "client_cpu") * val($4, "secs")
        ocpu[k] += val($4, "other_cpu") * val($4, "secs")
        rx[k] = val($4, "rx_ratio")
        seen[k] = 1
    }
    function us(k) { return ns[k] / 1000 / msgs[k] }
    END {
        nc = split(cases, C, " "); nm = split(modes, M, " "); ns_ = split(servers, S, " "); np = split(peers, P, " ")
        for (i = 1; i <= np; i++) isPeer[P[i]] = 1
        print "| case | mode | server | msgs/s | vs peer | server µs/msg | vs peer | vs off | wire | server CPU | loadgen CPU | other CPU |"
        print "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        for (c = 1; c <= nc; c++) {
            split(C[c], cp, ":"); split(cp[1], cs, "x")
            label = cs[1] " × " (cs[2] >= 1024 ? cs[2] / 1024 " KiB" : cs[2] " B") " " (cp[2] == "" ? "letters" : cp[2])
            for (m = 1; m <= nm; m++) {
                bestRate = 0; bestCpu = 0
                for (s = 1; s <= ns_; s++) {
                    k = C[c] SUBSEP M[m] SUBSEP S[s]
                    if (!(k in seen) || !(S[s] in isPeer)) continue
                    r = msgs[k] / secs_[k]
                    if (r > bestRate) bestRate = r
                    if (bestCpu == 0 || us(k) < bestCpu) bestCpu = us(k)
                }
                for (s = 1; s <= ns_; s++) {
                    k = C[c] SUBSEP M[m] SUBSEP S[s]
                    off = C[c] SUBSEP "off" SUBSEP S[s]
                    name = (S[s] in isPeer) ? S[s] " (peer)" : "**" S[s] "**"
                    if (k in failed && !(k in seen)) { printf "| %s | %s | %s | failed | | | | | | | | |\n", label, M[m], name; continue }
                    if (!(k in seen)) continue
                    r = msgs[k] / secs_[k]; u = us(k)
                    if (ocpu[k] / secs_[k] > maxOther) maxOther = ocpu[k] / secs_[k]
                    printf "| %s | %s | %s | %.0f | %s | %.2f | %s | %s | %s | %.0f%% | %.0f%% | %.0f%% |\n", label, M[m], name, r,
                        (bestRate > 0 ? sprintf("%.2f×", r / bestRate) : "–"), u,
                        (bestCpu > 0 ? sprintf("%.2f×", u / bestCpu) : "–"),
                        (M[m] != "off" && (off in seen) ? sprintf("%.2f×", u / us(off)) : "–"),
                        (rx[k] != "" ? rx[k] : "–"),
                        ns[k] / 1e9 / secs_[k] * 100, ccpu[k] / secs_[k] * 100, ocpu[k] / secs_[k] * 100
                }
            }
        }
        if (maxOther > 0.1)
            printf "\n**Noisy run:** up to %.0f%% of a core went to other processes (or the hypervisor) during a measurement; trust the ratios of one run more than its absolute numbers, and rerun on a quiet machine.\n", maxOther * 100
    }' "$raw/results.tsv"
    [[ -f $raw/idle.tsv ]] || return 0
    echo
    echo "## Idle connections with compression negotiated: server memory"
    echo
    echo "VmRSS of the server after startup and after every connection completed its handshake"
    echo "(with prime 1: and echoed one $idle_size B json message, compressed both ways when"
    echo "negotiated), then 0.5 s to settle; no keepalive pings. *vs off*: bytes per connection"
    echo "more than the same server's idle connection without compression (same prime); the"
    echo "issue's goal is under 1 KiB for no-context."
    echo
    awk -F'\t' -v peers="$peers" '
    function val(line, key,   n, i, parts, kvp) {
        n = split(line, parts, " ")
        for (i = 1; i <= n; i++) { split(parts[i], kvp, "="); if (kvp[1] == key) return kvp[2] }
        return ""
    }
    {
        srv[NR] = $1; mode[NR] = $2; prime[NR] = $3; line[NR] = $4
        b = val($4, "bytes_per_conn")
        if ($2 == "off" && b != "") base[$1 SUBSEP $3] = b + 0
    }
    END {
        print "| server | mode | prime | connections | RSS before | RSS after | bytes / connection | vs off | threads |"
        print "|---|---|---:|---:|---:|---:|---:|---:|---:|"
        for (i = 1; i <= NR; i++) {
            l = line[i]; peer = index(" " peers " ", " " srv[i] " ")
            n = peer ? srv[i] " (peer)" : "**" srv[i] "**"
            if (val(l, "failed") != "") { printf "| %s | %s | %s | failed | | | | | |\n", n, mode[i], prime[i]; continue }
            b = val(l, "bytes_per_conn"); bk = srv[i] SUBSEP prime[i]
            d = (mode[i] != "off" && (bk in base)) ? sprintf("%+d B", b - base[bk]) : "–"
            printf "| %s | %s | %s | %d | %.1f MiB | %.1f MiB | %d | %s | %s |\n", n, mode[i], prime[i], val(l, "idle"),
                val(l, "rss_before") / 1048576, val(l, "rss_after") / 1048576, b, d, val(l, "server_threads")
        }
    }' "$raw/idle.tsv"
}
report | tee "$out/deflate.md"
