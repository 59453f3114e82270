#!/usr/bin/env bash
# Runs every fuzz target (fuzz/, cargo-fuzz + libFuzzer) for SECONDS each, one after another,
# one libFuzzer job at a time, and exits non-zero if any target found a crash, a timeout or an
# out-of-memory input.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     # default: 600 s each, every target
#
# Targets: decode, engine, rules, rules_structured, capture, pcapng (fuzz/src/harness.rs says what each
# does with its input). The growing corpus is fuzz/corpus/TARGET/ (not checked in; the
# checked-in seeds are fuzz/seeds/TARGET/), findings land in fuzz/artifacts/TARGET/, logs in
# fuzz/logs/. After a finding the target is started again for the rest of its time (at most
# FUZZ_RESTARTS times, default 3), so one shallow bug does not end the run.
# To turn a finding into a regression input:
#   cargo fuzz tmin TARGET fuzz/artifacts/TARGET/crash-...   (from fuzz/, with RUSTC_BOOTSTRAP=1)
#   cp the minimized input to tests/data/fuzz/TARGET-SHORT-NAME  (tests/fuzz_regressions.rs)
#
# Environment: FUZZ_SANITIZER (default none: the code under test is safe Rust; `address` also
# works), FUZZ_TIMEOUT (seconds for one input before it counts as a hang, default 10),
# FUZZ_RSS_MB (memory limit of the fuzzing process, default 2048), FUZZ_RESTARTS. Needs cargo-fuzz (installed from crates.io when missing); the stable toolchain
# is enough, as RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z flags.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

secs=${1:-600}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(decode engine rules rules_structured capture pcapng)
fi
sanitizer=${FUZZ_SANITIZER:-none}
timeout=${FUZZ_TIMEOUT:-10}
restarts=${FUZZ_RESTARTS:-3}
rss_mb=${FUZZ_RSS_MB:-2048}

export RUSTC_BOOTSTRAP=1
# The capture target writes each input to a temporary file: keep those in memory.
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then
    export TMPDIR=/dev/shm
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi
cargo fuzz build -s "$sanitizer"

count_findings() {
    find "artifacts/$1" -type f \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) | wc -l
}

mkdir -p logs
summary=()
found=0
for t in "${targets[@]}"; do
    [ -f "fuzz_targets/$t.rs" ] || { echo "fuzz.sh: no target $t" >&2; exit 2; }
    mkdir -p "corpus/$t" "artifacts/$t"
    extra=()
    case $t in
        rules) extra+=(-dict=dict/rules.dict) ;;
        engine | capture | pcapng) extra+=(-max_len=16384) ;;
    esac
    log="logs/$t.log"
    : >"$log"
    start=$(date +%s)
    initial=$(count_findings "$t")
    runs=0
    execs=0
    while :; do
        left=$((secs - ($(date +%s) - start)))
        [ "$left" -gt 0 ] || break
        runs=$((runs + 1))
        before=$(count_findings "$t")
        echo "== $t: run $runs, ${left}s" | tee -a "$log"
        rm -f fuzz-0.log
        cargo fuzz run -s "$sanitizer" "$t" "corpus/$t" "seeds/$t" -- \
            -max_total_time="$left" -jobs=1 -workers=1 -timeout="$timeout" \
            -rss_limit_mb="$rss_mb" -print_final_stats=1 "${extra[@]}" >>"$log" 2>&1 || true
        # With -jobs, libFuzzer's own output goes to fuzz-0.log.
        if [ -f fuzz-0.log ]; then
            cat fuzz-0.log >>"$log"
            n=$(sed -n 's/^stat::number_of_executed_units: *//p' fuzz-0.log | tail -1)
            execs=$((execs + ${n:-0}))
            rm -f fuzz-0.log
        fi
        if [ "$(count_findings "$t")" -eq "$before" ] || [ "$runs" -gt "$restarts" ]; then
            break
        fi
    done
    took=$(($(date +%s) - start))
    findings=$(($(count_findings "$t") - initial))
    corpus=$(find "corpus/$t" -type f | wc -l)
    cov=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1 | sed -E 's/.*(cov: [0-9]+ ft: [0-9]+).*/\1/')
    line="$t: ${took}s, $execs execs, $corpus corpus files, ${cov:-cov: ?}, $findings new findings in fuzz/artifacts/$t/"
    echo "$line" | tee -a "$log"
    if [ "$execs" -eq 0 ]; then
        line="$line; NOT RUN: no executions (see fuzz/logs/$t.log)"
        found=1
    fi
    summary+=("$line")
    [ "$findings" -eq 0 ] || found=1
done

echo
echo "fuzz.sh summary:"
printf '  %s\n' "${summary[@]}"
if [ "$found" -ne 0 ]; then
    echo "fuzz.sh: findings (see fuzz/artifacts/) or targets that did not run: minimize findings and add them to tests/data/fuzz/" >&2
    exit 1
fi
