#!/usr/bin/env bash
# Hub load benchmark (issue 14, "Per-connection work must not queue behind one lock"): the
# single-owner server (every hub WebSocket inside one sans-IO `tidewire::server::Server`
# behind one mutex, commit e187342 onward) against the `HubHandle` design of 7c81dbe (each
# hub WebSocket framed on its own task, only hub calls under the hub's lock), in the same run.
#
#   benches/load/hub.sh            # from anywhere; builds, then about 2 minutes
#
# Both servers are `hub/old.rs` and `hub/new.rs` of this directory: the same small program
# (a smol `Executor` run on $THREADS OS threads, every task of the server spawned on it;
# `/ws` with `DemoAuth`; no inbound rate limit, no keepalive), each written against its
# revision's API. Each is copied into a git worktree of its revision (target/bench-hub/
# tree-{old,new}) as `adapter-smol/examples/hub-bench.rs` and built there with that
# revision's Cargo.lock and release profile, into target/bench-hub/{old,new}. Nothing of
# the old revision is committed; the worktrees are removed afterwards (KEEP_TREES=1 keeps
# them, and so the incremental builds).
#
# The load generator runs in hub mode (`loadgen --hub`, see `loadgen --help`): connection N
# is user lgN, subscribes to chat:lgN, then publishes on it with one `pub` in flight and
# counts a round trip when both the `ack` and the `msg` with the exact data are back.
#
# Pinning: the machine has 2 CPUs. The server is pinned to CPUs $SERVER_CPUS (default 0-1,
# both) so its 2 executor threads can run at the same time: that is what the issue asks
# about (connection A framed on one thread while B's is on the other, or queued behind the
# lock). Pinning a 2-thread server to one CPU would serialise the threads and hide exactly
# the contention under test. The load generator is left unpinned (CLIENT_CPUS empty), so the
# scheduler shares the 2 CPUs among the 3 busy threads; it does so alike for both servers.
# Because of that sharing, msgs/s is bounded by the 2 CPUs as a whole: read the server's
# CPU time per message beside it.
#
# Each measurement starts its server afresh (no hub state carried over); within a case the
# servers alternate (old, new, then new, old, ...), $REPS repetitions; the report gives
# medians. Writes a markdown report to stdout and target/bench/hub.md; raw results and logs
# in target/bench/hub/. Tunables (environment): SECS (2), WARMUP (0.5), REPS (3), CASES
# ("10x20 100x20 100x1024 1000x20": connections x data bytes), THREADS (2), SERVER_CPUS
# (0-1), CLIENT_CPUS (empty: unpinned), OLD_REV (7c81dbe), NEW_REV (HEAD), NO_BUILD,
# KEEP_TREES, NICE (empty; e.g. -10 runs the server and the load generator at that niceness,
# so that on a shared machine they take the CPUs from other work: both sides alike, but it
# slows everyone else's jobs while it runs, so it is off by default), QUIET_WAIT (0: off; N
# waits up to N seconds before each pair of measurements until the rest of the machine uses
# under QUIET_MAX (0.2) of a core, over 1 s), QUIET_MAX.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
out="$root/target/bench"
raw="$out/hub"
secs=${SECS:-2}
warmup=${WARMUP:-0.5}
reps=${REPS:-3}
cases=${CASES:-"10x20 100x20 100x1024 1000x20"}
threads=${THREADS:-2}
server_cpus=${SERVER_CPUS:-0-1}
client_cpus=${CLIENT_CPUS:-}
quiet_wait=${QUIET_WAIT:-0}
quiet_max=${QUIET_MAX:-0.2}
nice_cmd=()
[[ -z ${NICE:-} ]] || nice_cmd=(nice -n "$NICE")
old_rev=${OLD_REV:-7c81dbe}
new_rev=${NEW_REV:-HEAD}

mkdir -p "$raw"
rm -f "$raw"/*.log "$raw"/*.tsv "$raw"/last.out

log() { echo "[hub] $*" >&2; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || log "cannot raise the fd limit past $(ulimit -n)"

declare -A rev bin
rev[old]=$(git -C "$root" rev-parse --short "$old_rev^{commit}")
rev[new]=$(git -C "$root" rev-parse --short "$new_rev^{commit}")
loadgen="$root/target/bench-load/release/loadgen"
for side in old new; do bin[$side]="$root/target/bench-hub/$side/release/examples/hub-bench"; done

# ---------------------------------------------------------------- build
if [[ -z ${NO_BUILD:-} ]]; then
    log "building the load generator"
    (cd "$here" && CARGO_TARGET_DIR="$root/target/bench-load" cargo build --release --quiet --bin loadgen)
    git -C "$root" worktree prune
    for side in old new; do
        tree="$root/target/bench-hub/tree-$side"
        if git -C "$tree" rev-parse --git-dir >/dev/null 2>&1; then
            git -C "$tree" checkout --quiet --force --detach "${rev[$side]}"
        else
            rm -rf "$tree"
            git -C "$root" worktree add --detach "$tree" "${rev[$side]}" >/dev/null
        fi
        cp "$here/hub/$side.rs" "$tree/adapter-smol/examples/hub-bench.rs"
        log "building the $side hub server at ${rev[$side]}"
        (cd "$tree" && CARGO_TARGET_DIR="$root/target/bench-hub/$side" \
            cargo build --release --quiet -p tidewire-smol --example hub-bench)
        git -C "$tree" rev-parse --short HEAD >"$root/target/bench-hub/$side/rev"
        [[ -n ${KEEP_TREES:-} ]] || git -C "$root" worktree remove --force "$tree"
    done
fi
for side in old new; do
    [[ -x ${bin[$side]} ]] || { log "no binary ${bin[$side]}"; exit 1; }
    # The revision the binary was built from (with NO_BUILD, HEAD may have moved since).
    rev[$side]=$(cat "$root/target/bench-hub/$side/rev" 2>/dev/null || echo "${rev[$side]}?")
done

# ---------------------------------------------------------------- servers
server_pid=""
server_addr=""
cleanup() { [[ -z $server_pid ]] || kill "$server_pid" 2>/dev/null || true; }
trap cleanup EXIT

# start SIDE LOG: the server binds port 0 and prints `listening on ADDR`.
start() {
    local side=$1 logfile=$2 i
    : >"$logfile"
    "${nice_cmd[@]}" taskset -c "$server_cpus" "${bin[$side]}" --addr 127.0.0.1:0 --threads "$threads" >"$logfile" 2>&1 &
    server_pid=$!
    for ((i = 0; i < 100; i++)); do
        server_addr=$(sed -n 's/^listening on \([^ ]*\).*/\1/p' "$logfile" | head -n1) || true
        [[ -n $server_addr ]] && return 0
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.05
    done
    log "$side did not start; its log:"
    cat "$logfile" >&2
    return 1
}

stop() {
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
}

# run_loadgen LABEL ARGS...: prints the RESULT line (without the word), fails when it fails.
run_loadgen() {
    local label=$1 status=0
    shift
    local pin=()
    [[ -z $client_cpus ]] || pin=(taskset -c "$client_cpus")
    "${nice_cmd[@]}" "${pin[@]}" "$loadgen" "$@" >"$raw/last.out" 2>&1 || status=$?
    { echo "== $label: loadgen $*"; cat "$raw/last.out"; } >>"$raw/loadgen.log"
    [[ $status -eq 0 ]] && sed -n 's/^RESULT //p' "$raw/last.out" | grep .
}

# busy_ticks: the machine's non-idle ticks so far (/proc/stat; user nice system irq softirq steal).
busy_ticks() { awk 'NR == 1 { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }

# wait_quiet: with QUIET_WAIT, waits (at most that long) until the machine is nearly idle.
wait_quiet() {
    local waited=0 a b
    ((quiet_wait > 0)) || return 0
    while ((waited < quiet_wait)); do
        a=$(busy_ticks)
        sleep 1
        b=$(busy_ticks)
        waited=$((waited + 1))
        # Ticks are 10 ms: (b - a) / 100 cores over the second.
        if awk -v d=$((b - a)) -v m="$quiet_max" 'BEGIN { exit !(d / 100 < m) }'; then return 0; fi
    done
    log "not quiet after ${quiet_wait} s: measuring anyway"
}

# ---------------------------------------------------------------- load cases
c=0
for case in $cases; do
    conns=${case%x*}
    size=${case#*x}
    for ((rep = 1; rep <= reps; rep++)); do
        # Alternate who goes first, per repetition and per case.
        if (((rep + c) % 2)); then order="old new"; else order="new old"; fi
        wait_quiet
        for side in $order; do
            start "$side" "$raw/$side.log"
            log "$side (${rev[$side]}) rep $rep: $conns conns x $size B"
            if result=$(run_loadgen "$side $case rep $rep" --hub --url "ws://$server_addr/ws" \
                --conns "$conns" --size "$size" --secs "$secs" --warmup "$warmup" \
                --server-pid "$server_pid"); then
                printf '%s\t%s\t%s\t%s\n' "$side" "$case" "$rep" "$result" >>"$raw/results.tsv"
            else
                log "loadgen failed against $side (see $raw/loadgen.log)"
                printf '%s\t%s\t%s\tfailed=1\n' "$side" "$case" "$rep" >>"$raw/results.tsv"
            fi
            stop
        done
    done
    c=$((c + 1))
done

# ---------------------------------------------------------------- report
report() {
    echo "# Hub load benchmark: single-owner Server (NEW) against HubHandle (OLD)"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), OLD = ${rev[old]}, NEW = ${rev[new]}, \
$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), kernel $(uname -r)."
    echo "Each server: a smol Executor on $threads threads, pinned to CPUs $server_cpus; the load"
    echo "generator (one thread, epoll) ${client_cpus:+pinned to CPUs $client_cpus}${client_cpus:-unpinned}${NICE:+; both at niceness $NICE}."
    echo "Hub mode: one \`pub\` in flight per connection, a round trip is its \`ack\` and its \`msg\`;"
    echo "${warmup} s warmup, ${secs} s measured, $reps repetitions per server alternating, each on a fresh"
    echo "server; medians. Server µs/msg: CPU time (user+system, all threads) per round trip."
    echo "NEW/OLD: ratio of the medians; paired: median of the ratios of the two back-to-back runs"
    echo "of each repetition (less exposed to drifting load). msgs/s higher is better, µs/msg lower"
    echo "is better. Other CPU: what the rest of the machine used meanwhile (/proc/stat, steal"
    echo "included), the largest of the repetitions."
    echo
    awk -F'\t' -v cases="$cases" '
    function val(line, key,   n, i, parts, kvp) {
        n = split(line, parts, " ")
        for (i = 1; i <= n; i++) { split(parts[i], kvp, "="); if (kvp[1] == key) return kvp[2] }
        return ""
    }
    function median(list,   n, a, i, j, t) {
        n = split(list, a, " ")
        if (n == 0) return ""
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
        return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    {
        k = $2 SUBSEP $1
        if (val($4, "failed") != "") { failed[k]++; next }
        rate[k] = rate[k] " " val($4, "rate")
        us[k] = us[k] " " val($4, "server_us_per_msg")
        r1[$2, $3, $1] = val($4, "rate"); u1[$2, $3, $1] = val($4, "server_us_per_msg")
        o1[$2, $3, $1] = val($4, "other_cpu")
        if ((($2, $3, "old") in r1) && (($2, $3, "new") in r1)) {
            pr[$2] = pr[$2] " " r1[$2, $3, "new"] / r1[$2, $3, "old"]
            pu[$2] = pu[$2] " " u1[$2, $3, "new"] / u1[$2, $3, "old"]
            if (o1[$2, $3, "old"] < 0.25 && o1[$2, $3, "new"] < 0.25) {
                qr[$2] = qr[$2] " " r1[$2, $3, "new"] / r1[$2, $3, "old"]
                qu[$2] = qu[$2] " " u1[$2, $3, "new"] / u1[$2, $3, "old"]
                qn[$2]++
            }
        }
        scpu[k] = scpu[k] " " val($4, "server_cpu_ns") / 1e9 / val($4, "secs")
        ccpu[k] = ccpu[k] " " val($4, "client_cpu")
        o = val($4, "other_cpu") + 0
        if (!(k in other) || o > other[k]) other[k] = o
    }
    END {
        nc = split(cases, C, " ")
        print "| case | OLD msgs/s | NEW msgs/s | NEW/OLD | paired | OLD µs/msg | NEW µs/msg | NEW/OLD | paired | server CPU OLD / NEW | loadgen CPU OLD / NEW | other CPU OLD / NEW | failed |"
        print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        for (c = 1; c <= nc; c++) {
            split(C[c], cs, "x")
            label = cs[1] " × " (cs[2] >= 1024 ? cs[2] / 1024 " KiB" : cs[2] " B")
            ko = C[c] SUBSEP "old"; kn = C[c] SUBSEP "new"
            ro = median(rate[ko]); rn = median(rate[kn]); uo = median(us[ko]); un = median(us[kn])
            mpr = median(pr[C[c]]); mpu = median(pu[C[c]])
            printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s / %s | %s / %s | %s / %s | %d |\n", label,
                (ro == "" ? "–" : sprintf("%.0f", ro)), (rn == "" ? "–" : sprintf("%.0f", rn)),
                (ro > 0 && rn != "" ? sprintf("**%.3f**", rn / ro) : "–"),
                (mpr == "" ? "–" : sprintf("%.3f", mpr)),
                (uo == "" ? "–" : sprintf("%.2f", uo)), (un == "" ? "–" : sprintf("%.2f", un)),
                (uo > 0 && un != "" ? sprintf("**%.3f**", un / uo) : "–"),
                (mpu == "" ? "–" : sprintf("%.3f", mpu)),
                sprintf("%.0f%%", median(scpu[ko]) * 100), sprintf("%.0f%%", median(scpu[kn]) * 100),
                sprintf("%.0f%%", median(ccpu[ko]) * 100), sprintf("%.0f%%", median(ccpu[kn]) * 100),
                sprintf("%.0f%%", other[ko] * 100), sprintf("%.0f%%", other[kn] * 100),
                failed[ko] + failed[kn]
            if (other[ko] > maxOther) maxOther = other[ko]
            if (other[kn] > maxOther) maxOther = other[kn]
        }
        print ""
        print "Quiet pairs only (other CPU under 25% in both runs of a repetition): median NEW/OLD."
        print ""
        print "| case | quiet pairs | msgs/s NEW/OLD | µs/msg NEW/OLD | each pair (msgs/s, µs/msg) |"
        print "|---|---:|---:|---:|---|"
        for (c = 1; c <= nc; c++) {
            n = split(qr[C[c]], A, " "); split(qu[C[c]], U, " "); each = ""
            for (i = 1; i <= n; i++) each = each sprintf("%s%.2f, %.2f", (i > 1 ? "; " : ""), A[i], U[i])
            printf "| %s | %d | %s | %s | %s |\n", C[c], qn[C[c]],
                (n ? sprintf("%.3f", median(qr[C[c]])) : "–"), (n ? sprintf("%.3f", median(qu[C[c]])) : "–"), each
        }
        if (maxOther > 0.1)
            printf "\n**Noisy run:** up to %.0f%% of a core went to other processes (or the hypervisor) during a measurement; rerun on a quiet machine.\n", maxOther * 100
    }' "$raw/results.tsv"
    echo
    echo "Every repetition (msgs/s, µs/msg, other CPU):"
    echo
    echo "| case | rep | OLD | NEW |"
    echo "|---|---:|---:|---:|"
    awk -F'\t' '
    function val(line, key,   n, i, parts, kvp) {
        n = split(line, parts, " ")
        for (i = 1; i <= n; i++) { split(parts[i], kvp, "="); if (kvp[1] == key) return kvp[2] }
        return ""
    }
    {
        k = $2 SUBSEP $3
        if (!(k in seen)) { seen[k] = 1; keys[++n] = k; kc[n] = $2; kr[n] = $3 }
        cell[k, $1] = (val($4, "failed") != "") ? "failed" : \
            sprintf("%.0f, %.2f, %.0f%%", val($4, "rate"), val($4, "server_us_per_msg"), val($4, "other_cpu") * 100)
    }
    END { for (i = 1; i <= n; i++) printf "| %s | %s | %s | %s |\n", kc[i], kr[i], cell[keys[i], "old"], cell[keys[i], "new"] }
    ' "$raw/results.tsv"
}
report | tee "$out/hub.md"
