#!/usr/bin/env bash
# A short run of every fuzz target (fuzz/fuzz_targets/): builds them all, then runs each for
# FUZZ_SECONDS (default 30) with a scratch corpus under target/fuzz-corpus/<target>, seeded
# from the committed fuzz/corpus/<target> (which the run leaves alone). Prints one line per
# target with its executions; fails if any target crashed, hung or broke an invariant (the
# input is saved under fuzz/artifacts/<target>/, the log in target/fuzz-corpus/<target>.log).
#
#   FUZZ_SECONDS=60 scripts/fuzz-smoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
seconds=${FUZZ_SECONDS:-30}
# cargo-fuzz needs nightly flags; this lets a stable toolchain accept them.
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

cd fuzz
cargo fuzz build
mapfile -t targets < <(cargo fuzz list)

failed=()
for t in "${targets[@]}"; do
  scratch="$root/target/fuzz-corpus/$t"
  log="$root/target/fuzz-corpus/$t.log"
  mkdir -p "$scratch"
  seeds=()
  [ -d "corpus/$t" ] && seeds=("corpus/$t")
  status=ok
  if ! cargo fuzz run "$t" "$scratch" "${seeds[@]}" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 >"$log" 2>&1; then
    status=FAILED
    failed+=("$t")
  fi
  # libFuzzer's last words: "Done 123456 runs in 30 second(s)".
  done_line=$(grep -E '^Done [0-9]+ runs in [0-9]+ second' "$log" | tail -n 1 || true)
  if [ -n "$done_line" ]; then
    read -r _ runs _ _ secs _ <<<"$done_line"
    printf '%-16s %-6s %12s execs in %4s s (%s/s)\n' "$t" "$status" "$runs" "$secs" \
      "$((runs / (secs > 0 ? secs : 1)))"
  else
    artifact=$(grep -oE 'Test unit written to [^ ]+' "$log" | tail -n 1 || true)
    printf '%-16s %-6s no final stats; %s (log: %s)\n' "$t" "$status" "${artifact:-see log}" "$log"
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz-smoke: failed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz-smoke: ${#targets[@]} targets, ${seconds} s each, no crash"
