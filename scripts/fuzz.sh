#!/usr/bin/env bash
# Runs the cargo-fuzz targets of ringbroker (fuzz/, docs/fuzzing.md) for a bounded time each and
# prints how many inputs each one executed. Exits non-zero when a target crashes (a panic, an
# overflow, an ASan report, a timeout or an out-of-memory), leaving the input in
# fuzz/artifacts/<target>/.
#
# Usage: scripts/fuzz.sh [target...]      (default: every target)
#   FUZZ_SECONDS=60      seconds per target
#   FUZZ_SANITIZER=address  cargo fuzz --sanitizer (address, none, ...); `none` runs ~2x faster
#   FUZZ_TIMEOUT=20      seconds one input may take before libFuzzer reports a hang as a crash
#   FUZZ_ARGS="..."      extra libFuzzer flags, e.g. "-max_len=65536 -rss_limit_mb=4096"
#
# Needs a nightly toolchain (cargo-fuzz builds with -Zsanitizer and coverage flags). Without one:
#   rustup toolchain install nightly --profile minimal
# cargo-fuzz itself is installed here if missing (cargo install cargo-fuzz --locked).
#
# Corpora: the checked-in seeds in fuzz/corpus/<target>/ are read but never written; what
# libFuzzer learns goes to fuzz/corpus-work/<target>/ (ignored by git), so a later run starts
# from it. One job per target, in process (the machines have few cores).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-60}"
sanitizer="${FUZZ_SANITIZER:-address}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(frame_decode batch_validate metadata_replay segment_recovery rabbitmq_frame rabbitmq_chunk kafka_request)
fi

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz.sh: no nightly toolchain; install one with: rustup toolchain install nightly --profile minimal" >&2
    exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

# The storage targets write their files here (tmpfs when /dev/shm exists: fsync costs nothing).
scratch_parent=/tmp
[ -d /dev/shm ] && scratch_parent=/dev/shm
export RINGBROKER_FUZZ_TMPDIR="$(mktemp -d "$scratch_parent/ringbroker-fuzz-run.XXXXXX")"
trap 'rm -rf "$RINGBROKER_FUZZ_TMPDIR"' EXIT

mkdir -p fuzz/logs
failed=()
printf '%-18s %10s %14s %8s\n' target seconds executions exec/s
for target in "${targets[@]}"; do
    mkdir -p "fuzz/corpus-work/$target" "fuzz/corpus/$target"
    log="fuzz/logs/$target.log"
    status=0
    # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
    cargo +nightly fuzz run --sanitizer "$sanitizer" "$target" \
        "fuzz/corpus-work/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -timeout="${FUZZ_TIMEOUT:-20}" -print_final_stats=1 ${FUZZ_ARGS:-} >"$log" 2>&1 || status=$?
    executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    printf '%-18s %10s %14s %8s\n' "$target" "$seconds" "${executions:-?}" "${rate:-?}"
    if [ "$status" -ne 0 ]; then
        failed+=("$target")
        echo "fuzz.sh: $target failed (exit $status); last lines of $log:" >&2
        tail -n 40 "$log" >&2
        ls -1 "fuzz/artifacts/$target" 2>/dev/null | sed 's/^/  artifact: /' >&2 || true
    fi
done

if [ ${#failed[@]} -ne 0 ]; then
    echo "fuzz.sh: crashes in: ${failed[*]} (reproduce: cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>)" >&2
    exit 1
fi
