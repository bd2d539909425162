#!/usr/bin/env bash
# WebSocket load benchmark: Tidewire's echo examples against two peer echo servers.
#
#   benches/load/run.sh            # from anywhere; about 2 minutes after the builds
#
# Builds (release) the load generator and the peers of this package, and the `echo`
# examples of tidewire-std and tidewire-smol (each into its own target dir, since both are
# named `echo`). Every server runs pinned to CPU $SERVER_CPU and the load generator to CPU
# $CLIENT_CPU. Load cases: conns x size, each with exactly one message in flight per
# connection; the servers take turns within each case, so drift hits all alike. The server
# CPU time over the measured window comes from /proc/PID/task/*/schedstat (ns), read by the
# load generator itself at the window's edges. Then each server is started afresh, $IDLE_CONNS
# connections are opened and held, and its VmRSS growth per connection is reported.
#
# Writes a markdown report to stdout and target/bench/load.md; raw results and server logs
# go to target/bench/load/. Tunables (environment): SECS (2), WARMUP (0.5), ROUNDS (2),
# CASES ("100x20 10x1024 10x16384 200x16384"), IDLE_CONNS (10000), IDLE_CONNS_THREADED
# (10000; for the thread-per-connection servers), SERVERS (all four names below),
# SERVER_CPU (0), CLIENT_CPU (1), NO_BUILD (unset), BASE_REV (unset: a git revision whose
# echo examples run in the same tables as `tidewire-std@base` and `tidewire-smol@base`, built
# from a worktree under target/bench-base; e.g. BASE_REV=HEAD~5 to compare against older work).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
out="$root/target/bench"
raw="$out/load"
secs=${SECS:-2}
warmup=${WARMUP:-0.5}
rounds=${ROUNDS:-2}
cases=${CASES:-"100x20 10x1024 10x16384 200x16384"}
idle_conns=${IDLE_CONNS:-10000}
idle_conns_threaded=${IDLE_CONNS_THREADED:-$idle_conns}
server_cpu=${SERVER_CPU:-0}
client_cpu=${CLIENT_CPU:-1}
servers=${SERVERS:-"tidewire-std tidewire-smol tokio-tungstenite tungstenite"}
peers="tokio-tungstenite tungstenite"

mkdir -p "$raw"
rm -f "$raw"/*.log "$raw"/*.tsv "$raw"/last.out

log() { echo "[load] $*" >&2; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || log "cannot raise the fd limit past $(ulimit -n)"

# ---------------------------------------------------------------- build
loadgen="$root/target/bench-load/release/loadgen"
declare -A bin args threaded
bin[tokio-tungstenite]="$root/target/bench-load/release/peer-tokio"
bin[tungstenite]="$root/target/bench-load/release/peer-tungstenite"
bin[tidewire-std]="$root/target/bench-std/release/examples/echo"
bin[tidewire-smol]="$root/target/bench-smol/release/examples/echo"
args[tidewire-std]="--no-keepalive"
args[tidewire-smol]="--no-keepalive"
threaded[tidewire-std]=1
threaded[tungstenite]=1
if [[ -n ${BASE_REV:-} ]]; then
    for adapter in std smol; do
        bin[tidewire-$adapter@base]="$root/target/bench-base/$adapter/release/examples/echo"
        args[tidewire-$adapter@base]="--no-keepalive"
    done
    threaded[tidewire-std@base]=1
    [[ -n ${SERVERS:-} ]] || servers+=" tidewire-std@base tidewire-smol@base"
fi

if [[ -z ${NO_BUILD:-} ]]; then
    log "building the load generator and the peers"
    (cd "$here" && CARGO_TARGET_DIR="$root/target/bench-load" cargo build --release --quiet)
    for adapter in std smol; do
        if [[ -f $root/adapter-$adapter/examples/echo.rs || -f $root/adapter-$adapter/examples/echo/main.rs ]]; then
            log "building tidewire-$adapter's echo example"
            (cd "$root" && CARGO_TARGET_DIR="$root/target/bench-$adapter" \
                cargo build --release --quiet -p "tidewire-$adapter" --example echo) ||
                log "tidewire-$adapter's echo example does not build: skipped"
        fi
    done
    if [[ -n ${BASE_REV:-} ]]; then
        tree="$root/target/bench-base/tree"
        git -C "$root" worktree remove --force "$tree" 2>/dev/null || rm -rf "$tree"
        git -C "$root" worktree add --detach "$tree" "$BASE_REV" >/dev/null
        for adapter in std smol; do
            log "building tidewire-$adapter's echo example at $BASE_REV"
            (cd "$tree" && CARGO_TARGET_DIR="$root/target/bench-base/$adapter" \
                cargo build --release --quiet -p "tidewire-$adapter" --example echo) ||
                log "tidewire-$adapter's echo example at $BASE_REV does not build: skipped"
        done
        git -C "$root" worktree remove --force "$tree"
    fi
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

# ---------------------------------------------------------------- load cases
for s in $servers; do start "$s" "$raw/$s.log"; done
log "servers: $(for s in $servers; do printf '%s=%s(pid %s) ' "$s" "${addr[$s]}" "${pid[$s]}"; done)"

for ((round = 1; round <= rounds; round++)); do
    shift_by=0
    for case in $cases; do
        conns=${case%x*}
        size=${case#*x}
        # Rotate the order per case so no server always runs first or right after another.
        read -r -a order <<<"$servers"
        n=${#order[@]}
        for ((k = 0; k < n; k++)); do
            s=${order[$(((k + shift_by + round - 1) % n))]}
            if ! kill -0 "${pid[$s]}" 2>/dev/null; then
                log "$s has exited; see $raw/$s.log"
                continue
            fi
            log "round $round: $s, $conns conns x $size B"
            if result=$(run_loadgen "$s $case" --url "ws://${addr[$s]}" --conns "$conns" --size "$size" \
                --secs "$secs" --warmup "$warmup" --server-pid "${pid[$s]}"); then
                printf '%s\t%s\t%s\n' "$s" "$case" "$result" >>"$raw/results.tsv"
            else
                log "loadgen failed against $s (see $raw/loadgen.log)"
                printf '%s\t%s\tfailed=1\n' "$s" "$case" >>"$raw/results.tsv"
            fi
        done
        shift_by=$((shift_by + 1))
    done
done
for s in $servers; do stop "$s"; done

# ---------------------------------------------------------------- idle memory
for s in $servers; do
    n=$idle_conns
    [[ -n ${threaded[$s]:-} ]] && n=$idle_conns_threaded
    [[ $n -gt 0 ]] || continue
    start "$s" "$raw/$s.idle.log"
    sleep 0.3 # past startup: the baseline RSS
    log "idle: $s, $n connections"
    if result=$(run_loadgen "$s idle" --url "ws://${addr[$s]}" --idle "$n" --server-pid "${pid[$s]}"); then
        printf '%s\t%s\n' "$s" "$result" >>"$raw/idle.tsv"
    else
        log "idle run failed against $s (see $raw/loadgen.log)"
        printf '%s\tfailed=1\n' "$s" >>"$raw/idle.tsv"
    fi
    stop "$s"
done

# ---------------------------------------------------------------- report
report() {
    echo "# WebSocket load benchmark"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?'), \
$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), kernel $(uname -r)."
    echo "Servers on CPU $server_cpu, the load generator (one thread, epoll) on CPU $client_cpu;"
    echo "one message in flight per connection; ${warmup} s warmup, ${secs} s measured, $rounds round(s)."
    echo "Server CPU is user+system time of all its threads over the measured window."
    echo "Ratios compare with the best peer (tokio-tungstenite on a current-thread runtime, or"
    echo "tungstenite with a thread per connection): msgs/s higher is better, CPU per message lower."
    echo "A loadgen CPU near 100% means the client, not the server, set the pace: compare CPU per message."
    echo "Other CPU: what the rest of the machine used meanwhile (/proc/stat, steal included); it"
    echo "should be near 0%: this machine has $(nproc) CPUs and the benchmark uses them all."
    echo
    awk -F'\t' -v cases="$cases" -v servers="$servers" -v peers="$peers" '
    function val(line, key,   n, i, parts, kvp) {
        n = split(line, parts, " ")
        for (i = 1; i <= n; i++) { split(parts[i], kvp, "="); if (kvp[1] == key) return kvp[2] }
        return ""
    }
    {
        k = $2 SUBSEP $1
        if (val($3, "failed") != "") { failed[k] = 1; next }
        msgs[k] += val($3, "msgs"); secs_[k] += val($3, "secs"); ns[k] += val($3, "server_cpu_ns")
        ccpu[k] += val($3, "client_cpu") * val($3, "secs")
        ocpu[k] += val($3, "other_cpu") * val($3, "secs")
        mn = val($3, "min") + 0; mx = val($3, "max") + 0
        if (!(k in wmin) || mn < wmin[k]) wmin[k] = mn
        if (!(k in wmax) || mx > wmax[k]) wmax[k] = mx
        seen[k] = 1
    }
    END {
        nc = split(cases, C, " "); ns_ = split(servers, S, " "); np = split(peers, P, " ")
        for (i = 1; i <= np; i++) isPeer[P[i]] = 1
        print "| case | server | msgs/s | window min–max | vs best peer | server µs/msg | vs best peer | server CPU | loadgen CPU | other CPU |"
        print "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
        for (c = 1; c <= nc; c++) {
            split(C[c], cs, "x")
            label = cs[1] " × " (cs[2] >= 1024 ? cs[2] / 1024 " KiB" : cs[2] " B")
            bestRate = 0; bestCpu = 0
            for (s = 1; s <= ns_; s++) {
                k = C[c] SUBSEP S[s]
                if (!(k in seen) || !(S[s] in isPeer)) continue
                r = msgs[k] / secs_[k]; u = ns[k] / 1000 / msgs[k]
                if (r > bestRate) bestRate = r
                if (bestCpu == 0 || u < bestCpu) bestCpu = u
            }
            for (s = 1; s <= ns_; s++) {
                k = C[c] SUBSEP S[s]
                name = (S[s] in isPeer) ? S[s] " (peer)" : "**" S[s] "**"
                if (k in failed && !(k in seen)) { printf "| %s | %s | failed | | | | | | | |\n", label, name; continue }
                if (!(k in seen)) continue
                r = msgs[k] / secs_[k]; u = ns[k] / 1000 / msgs[k]
                if (ocpu[k] / secs_[k] > maxOther) maxOther = ocpu[k] / secs_[k]
                printf "| %s | %s | %.0f | %.0f–%.0f | %s | %.2f | %s | %.0f%% | %.0f%% | %.0f%% |\n", label, name, r, wmin[k], wmax[k],
                    (bestRate > 0 ? sprintf("%.2f×", r / bestRate) : "–"), u,
                    (bestCpu > 0 ? sprintf("%.2f×", u / bestCpu) : "–"),
                    ns[k] / 1e9 / secs_[k] * 100, ccpu[k] / secs_[k] * 100, ocpu[k] / secs_[k] * 100
            }
        }
        if (maxOther > 0.1)
            printf "\n**Noisy run:** up to %.0f%% of a core went to other processes (or the hypervisor) during a measurement; rerun on a quiet machine.\n", maxOther * 100
    }' "$raw/results.tsv"
    echo
    echo "## Idle connections: server memory"
    echo
    echo "VmRSS of the server after startup and after every connection completed its handshake"
    echo "(then 0.5 s to settle); no keepalive pings."
    echo
    awk -F'\t' -v peers="$peers" '
    function val(line, key,   n, i, parts, kvp) {
        n = split(line, parts, " ")
        for (i = 1; i <= n; i++) { split(parts[i], kvp, "="); if (kvp[1] == key) return kvp[2] }
        return ""
    }
    {
        name[NR] = $1; line[NR] = $2
        b = val($2, "bytes_per_conn")
        if (index(" " peers " ", " " $1 " ") && b != "" && (best == 0 || b + 0 < best)) best = b + 0
    }
    END {
        print "| server | connections | RSS before | RSS after | bytes / connection | vs best peer | threads | open time |"
        print "|---|---:|---:|---:|---:|---:|---:|---:|"
        for (i = 1; i <= NR; i++) {
            l = line[i]; peer = index(" " peers " ", " " name[i] " ")
            n = peer ? name[i] " (peer)" : "**" name[i] "**"
            if (val(l, "failed") != "") { printf "| %s | failed | | | | | | |\n", n; continue }
            b = val(l, "bytes_per_conn")
            printf "| %s | %d | %.1f MiB | %.1f MiB | %d | %s | %s | %.2f s |\n", n, val(l, "idle"),
                val(l, "rss_before") / 1048576, val(l, "rss_after") / 1048576, b,
                (best > 0 ? sprintf("%.2f×", b / best) : "–"), val(l, "server_threads"), val(l, "open_secs")
        }
    }' "$raw/idle.tsv"
}
report | tee "$out/load.md"
