#!/usr/bin/env bash
# Kafka listener benchmark (issue 16 targets): kcat (librdkafka, Debian) producing and consuming
# 1 KB messages through --kafka-listen, against ringbench's native producer and consumer with the
# same message size on the same broker build, in one run. Never run by the tests.
#
# Each run starts a fresh ringbroker (release, --fsync never, fresh data directory) and measures,
# on one partition:
#   native-produce  ringbench pinned-producer --producers 1 --partitions 1 --message-size 1000
#   kcat-produce    kcat -P -X linger.ms=5 -X batch.size=1000000 of KAFKA_BENCH_MESSAGES lines of
#                   1000 bytes (wall time from start to kcat's exit, which waits for every
#                   delivery report: all messages acknowledged)
#   kcat-consume    kcat -C -e -o beginning of that topic, output to /dev/null
#   native-consume  ringbench pinned-consumer --producers 1 --consumers 1 --partitions 1
# MB/s = 10^6 bytes of message payload per second; broker CPU from /proc/PID/stat over each phase,
# client CPU (kcat or ringbench, user + system) from /usr/bin/time.
# Runs are interleaved and repeated KAFKA_BENCH_RUNS times; medians and per-run ratios are printed
# as a Markdown table and written to results/kafka-<UTC timestamp>/.
#
# Usage: scripts/kafka-bench.sh
# Environment:
#   KAFKA_BENCH_RUNS=3            runs (each on a fresh broker)
#   KAFKA_BENCH_MESSAGES=1000000  messages kcat produces and consumes per run (1 GB at 1 KB)
#   KAFKA_BENCH_SECONDS=6         ringbench --duration of the native producer (1 s warm-up)
#   KAFKA_BENCH_CONSUMER_BATCHES=1000  ringbench pinned-consumer --batches (x 1000 messages)
#   KAFKA_BENCH_TMPDIR=target/kafka-bench  data directories (the disk under test, not tmpfs)
#   KAFKA_BENCH_SKIP_BUILD=1      use the existing target/release binaries
#   KAFKA_BENCH_METRICS=1         also start the broker with --metrics-listen and scrape it every
#                                 second with curl during every phase
# Exit status: 0 when every run succeeded; 1 when one failed; 3 when a prerequisite is missing.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
root=$PWD

runs=${KAFKA_BENCH_RUNS:-3}
messages=${KAFKA_BENCH_MESSAGES:-1000000}
seconds=${KAFKA_BENCH_SECONDS:-6}
consumer_batches=${KAFKA_BENCH_CONSUMER_BATCHES:-1000}
tmp=${KAFKA_BENCH_TMPDIR:-$root/target/kafka-bench}
metrics=${KAFKA_BENCH_METRICS:-0}
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=$root/results/kafka-$stamp
mkdir -p "$out/logs" "$tmp"

log() { echo "[kafka-bench] $*" >&2; }
for tool in kcat jq; do
    command -v "$tool" >/dev/null || { log "$tool is missing: apt-get install kcat jq"; exit 3; }
done
target_dir=$(cargo metadata --format-version 1 --no-deps 2>/dev/null | jq -r .target_directory)
if [[ ${KAFKA_BENCH_SKIP_BUILD:-0} != 1 ]]; then
    log "building release (ringbroker, ringbench)"
    timeout 1800 cargo build --release --bin ringbroker --bin ringbench --features bench >&2
fi
broker_bin=$target_dir/release/ringbroker
bench_bin=$target_dir/release/ringbench

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_seconds() { awk '{print ($14 + $15) / 100}' "/proc/$1/stat" 2>/dev/null || echo 0; }

input=$tmp/messages-1KB.txt
if [[ ! -s $input || $(wc -l <"$input") -ne $messages ]]; then
    log "writing $messages lines of 1000 bytes to $input"
    python3 - "$input" "$messages" <<'PY'
import sys
path, count = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    for i in range(count):
        head = f"m{i:09d}-"
        f.write(head + "x" * (1000 - len(head)) + "\n")
PY
fi

broker_pid=
scraper_pid=
stop_broker() {
    [[ -n $scraper_pid ]] && kill "$scraper_pid" 2>/dev/null && wait "$scraper_pid" 2>/dev/null || true
    scraper_pid=
    if [[ -n $broker_pid ]]; then
        kill -TERM "$broker_pid" 2>/dev/null || true
        wait "$broker_pid" 2>/dev/null || true
    fi
    broker_pid=
}
trap stop_broker EXIT

start_broker() { # $1 = run label
    data=$tmp/data-$1
    rm -rf "$data"
    listen_port=$(free_port)
    kafka_port=$(free_port)
    shard_base=$(free_port)
    local extra=()
    if [[ $metrics == 1 ]]; then
        metrics_port=$(free_port)
        extra+=(--metrics-listen "127.0.0.1:$metrics_port")
    fi
    "$broker_bin" --data-dir "$data" --listen "127.0.0.1:$listen_port" --fsync never \
        --kafka-listen "127.0.0.1:$kafka_port" --kafka-shard-port-base "$shard_base" \
        --shard-port-base 0 "${extra[@]}" >"$out/logs/$1.broker.log" 2>&1 &
    broker_pid=$!
    for _ in $(seq 100); do
        grep -q "^kafka on" "$out/logs/$1.broker.log" 2>/dev/null && break
        sleep 0.1
    done
    if [[ $metrics == 1 ]]; then
        (while sleep 1; do curl -s "http://127.0.0.1:$metrics_port/metrics" >/dev/null || true; done) &
        scraper_pid=$!
    fi
}

phase() { # $1 = run, $2 = name, $3 = bytes (or "json"), rest = command
    local run=$1 name=$2 bytes=$3
    shift 3
    local cpu0 t0 t1 cpu1
    cpu0=$(cpu_seconds "$broker_pid")
    t0=$(date +%s.%N)
    if ! /usr/bin/time -f "%U %S" -o "$out/logs/$run.$name.time" timeout 600 "$@" \
        >"$out/logs/$run.$name.out" 2>"$out/logs/$run.$name.err"; then
        log "   $name FAILED (see $out/logs/$run.$name.err)"
        return 1
    fi
    t1=$(date +%s.%N)
    cpu1=$(cpu_seconds "$broker_pid")
    local mbps
    if [[ $bytes == json ]]; then
        mbps=$(jq -r '.total.mb_per_s // empty' "$out/logs/$run.$name.json" | awk '{ printf "%.1f", $1 }')
    else
        mbps=$(awk -v b="$bytes" -v a="$t0" -v z="$t1" 'BEGIN { printf "%.1f", b / (z - a) / 1e6 }')
    fi
    local cpu client
    cpu=$(awk -v a="$cpu0" -v z="$cpu1" 'BEGIN { printf "%.2f", z - a }')
    client=$(awk '{ printf "%.2f", $1 + $2 }' "$out/logs/$run.$name.time" 2>/dev/null || echo 0)
    log "   $name: $mbps MB/s, broker CPU $cpu s, client CPU $client s"
    jq -nc --arg run "$run" --arg phase "$name" --argjson mbps "${mbps:-0}" --argjson cpu "$cpu" \
        --argjson client "${client:-0}" \
        '{run: $run, phase: $phase, mb_per_s: $mbps, broker_cpu_s: $cpu, client_cpu_s: $client}' >>"$out/phases.jsonl"
}

failed=0
for run in $(seq "$runs"); do
    log "run $run/$runs"
    start_broker "run$run"
    phase "run$run" native-produce json "$bench_bin" --server "127.0.0.1:$listen_port" pinned-producer --json "$out/logs/run$run.native-produce.json" \
        --producers 1 --streams 1 --partitions 1 --message-size 1000 --duration "$seconds" || failed=1
    kcat -b "127.0.0.1:$kafka_port" -L -t bench >/dev/null 2>&1 || true # auto-create (1 partition)
    phase "run$run" kcat-produce $((messages * 1000)) kcat -b "127.0.0.1:$kafka_port" -t bench -p 0 -P \
        -X linger.ms=5 -X batch.size=1000000 -l "$input" || failed=1
    phase "run$run" kcat-consume $((messages * 1000)) kcat -b "127.0.0.1:$kafka_port" -t bench -p 0 -C -e \
        -o beginning -q -f '%s\n' || failed=1
    phase "run$run" native-consume json "$bench_bin" --server "127.0.0.1:$listen_port" pinned-consumer --json "$out/logs/run$run.native-consume.json" \
        --producers 1 --consumers 1 --streams 1 --partitions 1 --message-size 1000 --warmup 0 \
        --batches "$consumer_batches" || failed=1
    stop_broker
    rm -rf "$tmp/data-run$run"
done

{
    echo "| phase | MB/s (median) | runs | broker CPU s (median) | client CPU s (median) |"
    echo "| --- | --- | --- | --- | --- |"
    for p in native-produce kcat-produce kcat-consume native-consume; do
        jq -rs --arg p "$p" '[.[] | select(.phase == $p)] as $r
            | ($r | map(.mb_per_s) | sort) as $m | ($r | map(.broker_cpu_s) | sort) as $c
            | ($r | map(.client_cpu_s) | sort) as $k
            | "| \($p) | \($m[($m | length) / 2 | floor] // "-") | \($r | map(.mb_per_s) | join(", ")) | \($c[($c | length) / 2 | floor] // "-") | \($k[($k | length) / 2 | floor] // "-") |"' \
            "$out/phases.jsonl"
    done
    echo
    echo "Ratios per run (kcat / native):"
    jq -rs 'group_by(.run)[] | (map({(.phase): .mb_per_s}) | add) as $x
        | "- \(.[0].run): produce \(($x["kcat-produce"] // 0) / ($x["native-produce"] // 1) * 100 | round) %, consume \(($x["kcat-consume"] // 0) / ($x["native-consume"] // 1) * 100 | round) %"' \
        "$out/phases.jsonl"
} | tee "$out/summary.md"
exit $failed
