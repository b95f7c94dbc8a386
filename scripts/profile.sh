#!/usr/bin/env bash
# Where does the broker's time go under one ringbench workload? Starts a release broker on a
# fresh data directory, runs the workload for PROFILE_SECONDS while `perf record` samples the
# broker (software cpu-clock, so it also works in VMs without hardware counters), and prints the
# top symbols by self time and the top call paths. perf.data stays in target/profile/ for
# `perf report -i target/profile/perf.data`.
#
# Usage: scripts/profile.sh [ringbench workload and flags...]
#   default: pinned-producer --producers 2 --partitions 2 --message-size 1000
# Environment: PROFILE_SECONDS (default 6), PROFILE_FSYNC (default never), PROFILE_SKIP_BUILD=1,
#   PROFILE_BROKER_FLAGS (extra broker flags, e.g. "--cache-bytes 1073741824").
# Without perf (Debian: linux-perf), falls back to `valgrind --tool=callgrind` instruction counts
# on the broker (much slower; the workload runs with --batches 200).
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
seconds=${PROFILE_SECONDS:-6}
fsync=${PROFILE_FSYNC:-never}
workload=("$@")
((${#workload[@]})) || workload=(pinned-producer --producers 2 --partitions 2 --message-size 1000)

[[ -n ${PROFILE_SKIP_BUILD:-} ]] || cargo build --release --bin ringbroker --bin ringbench
out=target/profile
rm -rf "$out"
mkdir -p "$out"
port=$((20000 + RANDOM % 30000))
broker_pid=
cleanup() {
    [[ -n $broker_pid ]] && kill -TERM "$broker_pid" 2>/dev/null || true
    wait 2>/dev/null || true
}
trap cleanup EXIT

use_perf=0
if command -v perf >/dev/null && perf record -e cpu-clock -o /dev/null true >/dev/null 2>&1; then use_perf=1; fi

if ((use_perf)); then
    target/release/ringbroker --data-dir "$out/data" --listen "127.0.0.1:$port" --fsync "$fsync" ${PROFILE_BROKER_FLAGS:-} \
        >"$out/broker.log" 2>&1 &
    broker_pid=$!
else
    valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out" \
        target/release/ringbroker --data-dir "$out/data" --listen "127.0.0.1:$port" --fsync "$fsync" ${PROFILE_BROKER_FLAGS:-} \
        >"$out/broker.log" 2>&1 &
    broker_pid=$!
fi
for _ in $(seq 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done

bound=(--duration "$seconds" --warmup 1)
((use_perf)) || bound=(--batches 200 --warmup 0)
if ((use_perf)); then
    # Start sampling once the workload's set-up (stream creation) is done.
    (sleep 1 && timeout --signal=INT "$((seconds - 1))" perf record -e cpu-clock -F 2000 -g \
        -p "$broker_pid" -o "$out/perf.data" >"$out/perf.log" 2>&1) &
    perf_pid=$!
fi
timeout $((seconds + 60)) target/release/ringbench --server "127.0.0.1:$port" "${workload[@]}" "${bound[@]}" \
    | tee "$out/ringbench.txt"
if ((use_perf)); then
    wait "$perf_pid" || true
    kill -TERM "$broker_pid"
    wait "$broker_pid" || true
    broker_pid=
    echo "== top symbols by self time (perf, cpu-clock)"
    perf report -i "$out/perf.data" --no-children --sort symbol --stdio 2>/dev/null \
        | grep -v '^#' | grep -v '^$' | grep '%' | head -40
    echo "== top by children (inclusive)"
    perf report -i "$out/perf.data" --children --sort symbol --stdio -g none 2>/dev/null \
        | grep -v '^#' | grep -v '^$' | grep '%' | head -30
else
    kill -TERM "$broker_pid"
    wait "$broker_pid" || true
    broker_pid=
    callgrind_annotate "$out"/callgrind.out* 2>/dev/null | head -60
fi
