#!/usr/bin/env bash
# One-command benchmark of ringbroker on this machine, read against this machine's ceilings.
#
# Builds release, measures the ceilings in the same run (O_DIRECT sequential write and read with
# dd, 4 KiB O_DIRECT write latency with and without O_DSYNC, loopback TCP with `ringbench
# loopback`), then runs a fixed suite: for each entry a broker on a fresh data directory and a
# free loopback port, one `ringbench --json` run, SIGTERM. The broker's RSS is sampled during each
# run, and its block-device reads and writes over the run (/proc/PID/io) are recorded (reads
# show consumers served from disk instead of the batch cache). Entries marked `du` also record the broker data directory's size after the run (du -sb),
# so that a compressed run's bytes on disk can be read against the payload it stored. Writes
# results/<UTC timestamp>.json (entries + ceilings + machine), .md (table with every throughput as
# a fraction of its ceiling) and .svg (`ringbench plot`, plotters); logs go to
# results/<timestamp>.logs/.
#
# Usage: scripts/bench.sh
# Environment:
#   BENCH_SECONDS=8          ringbench --duration per run (1..10; includes the warm-up)
#   BENCH_WARMUP=1           ringbench --warmup per run (discarded part of the duration)
#   BENCH_CONSUMER_BATCHES=1000  batches per partition the consumer entry fills and reads
#                            (1000 x 1000 x 1 KB = 1 GB per partition; count-bound, no warm-up)
#   BENCH_CATCHUP_GB=10      total GB the cold catch-up entry writes, restarts the broker over
#                            (empty cache) and reads back (0 leaves the entry out)
#   BENCH_BROKER_CORES=all   broker --cores (e.g. `0`, `2-5`); `all` = no --cores: one shard
#                            per usable core
#   BENCH_CLIENT_CORES=      ringbench --cores (unset: ringbench's default)
#   BENCH_PINNED_ACTORS=     producers/consumers (= partitions) of the pinned workloads and
#                            end-to-end; default: number of broker shards
#   BENCH_BATCH=             ringbench --batch (unset: ringbench's default)
#   BENCH_TMPDIR=target/bench  where data dirs and the dd file go (must be the disk under test,
#                            not tmpfs: O_DIRECT)
#   BENCH_SKIP_BUILD=1       use the existing target/release binaries
#   BENCH_ONLY=REGEX         run only the suite entries whose name matches (grep -E)
#   METRICS_SCRAPE=1         start every broker with --metrics-listen and scrape GET /metrics
#                            with curl every second during each entry (the metrics-on side of
#                            an A/B against a default run; the count of scrapes is recorded)
# Units: 1 KB message = 1000 bytes; MB/s = 10^6 bytes per second, as ringbench reports them.
# Exit status: 0 if every entry ran, 1 if any failed, 2 if ringbench is missing (ceilings and the
# broker start/stop are still exercised and recorded).
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
root=$PWD

seconds=${BENCH_SECONDS:-8}
warmup=${BENCH_WARMUP:-1}
consumer_batches=${BENCH_CONSUMER_BATCHES:-1000}
catchup_gb=${BENCH_CATCHUP_GB:-10}
if ! [[ $seconds =~ ^[0-9]+$ ]] || ((seconds < 1 || seconds > 10)); then
    echo "BENCH_SECONDS must be 1..10" >&2
    exit 64
fi
if ! [[ $warmup =~ ^[0-9]+$ ]] || ((warmup >= seconds)); then
    echo "BENCH_WARMUP must be a whole number below BENCH_SECONDS (it is part of the duration)" >&2
    exit 64
fi
if ! [[ $catchup_gb =~ ^[0-9]+$ ]] || ((catchup_gb > 100)); then
    echo "BENCH_CATCHUP_GB must be 0..100" >&2
    exit 64
fi
if ! [[ $consumer_batches =~ ^[0-9]+$ ]] || ((consumer_batches < 1 || consumer_batches > 4000)); then
    echo "BENCH_CONSUMER_BATCHES must be 1..4000" >&2
    exit 64
fi
ncpu=$(nproc)
broker_cores=${BENCH_BROKER_CORES:-all}
# `all`: no --cores, so the broker runs one pinned shard per core it may use (what nproc counts).
# Otherwise the number of shards is the number of cores in the list (`0,2-3` -> 3).
broker_core_args=()
shards=0
core_parts=()
if [[ $broker_cores == all ]]; then
    shards=$ncpu
else
    broker_core_args=(--cores "$broker_cores")
    IFS=, read -ra core_parts <<<"$broker_cores"
fi
for part in "${core_parts[@]}"; do
    if [[ $part =~ ^([0-9]+)-([0-9]+)$ ]]; then
        shards=$((shards + BASH_REMATCH[2] - BASH_REMATCH[1] + 1))
    elif [[ $part =~ ^[0-9]+$ ]]; then
        shards=$((shards + 1))
    else
        echo "BENCH_BROKER_CORES: bad core list '$broker_cores'" >&2
        exit 64
    fi
done
pinned_actors=${BENCH_PINNED_ACTORS:-$shards}
client_args=()
[[ -n ${BENCH_CLIENT_CORES:-} ]] && client_args+=(--cores "$BENCH_CLIENT_CORES")
[[ -n ${BENCH_BATCH:-} ]] && client_args+=(--batch "$BENCH_BATCH")
user=ringbroker
password=ringbroker
metrics_scrape=${METRICS_SCRAPE:-0}
if [[ $metrics_scrape != 0 && $metrics_scrape != 1 ]]; then
    echo "METRICS_SCRAPE must be 0 or 1" >&2
    exit 64
fi
if ((metrics_scrape)) && ! command -v curl >/dev/null 2>&1; then
    echo "METRICS_SCRAPE=1 needs curl" >&2
    exit 64
fi

stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p results
out_json=results/$stamp.json
out_md=results/$stamp.md
out_svg=results/$stamp.svg
logs=results/$stamp.logs
mkdir -p "$logs"
tmp_base=${BENCH_TMPDIR:-target/bench}
mkdir -p "$tmp_base"
tmp_base=$(cd "$tmp_base" && pwd)
work=$(mktemp -d "$tmp_base/run.XXXXXX")
entries=$work/entries.jsonl
: >"$entries"

broker_pid=
sampler_pid=
scraper_pid=
bench_pid=
cleanup() {
    local status=$?
    if [[ -n $bench_pid ]]; then kill -TERM "$bench_pid" 2>/dev/null || true; fi
    if [[ -n $sampler_pid ]]; then kill "$sampler_pid" 2>/dev/null || true; fi
    if [[ -n $scraper_pid ]]; then kill "$scraper_pid" 2>/dev/null || true; fi
    if [[ -n $broker_pid ]] && kill -0 "$broker_pid" 2>/dev/null; then
        kill -TERM "$broker_pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$broker_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$broker_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# ---------------------------------------------------------------------------------------- build
have_ringbench=1
if [[ -z ${BENCH_SKIP_BUILD:-} ]]; then
    if [[ -f src/bin/ringbench.rs || -f src/bin/ringbench/main.rs ]]; then
        log "building release (ringbroker, ringbench)"
        if ! timeout 900 cargo build --release --bin ringbroker --bin ringbench; then
            log "WARNING: ringbench did not build: building ringbroker only (no stale ringbench is used)"
            timeout 900 cargo build --release --bin ringbroker
            have_ringbench=0
        fi
    else
        have_ringbench=0
        log "src/bin/ringbench missing: building ringbroker only"
        timeout 900 cargo build --release --bin ringbroker
    fi
fi
broker_bin=$root/target/release/ringbroker
bench_bin=$root/target/release/ringbench
[[ -x $broker_bin ]] || { echo "no $broker_bin" >&2; exit 1; }
if ((have_ringbench)) && [[ ! -x $bench_bin ]]; then
    have_ringbench=0
fi
((have_ringbench)) || log "WARNING: no usable $bench_bin: measuring ceilings and broker start/stop only"

# ------------------------------------------------------------------------------------- ceilings
# dd's summary line: "<bytes> bytes (...) copied, <seconds> s, <rate>"; we compute the rate.
dd_seconds() { awk '/bytes .* copied/ { for (i = 1; i <= NF; i++) if ($i == "s," || $i == "s") { print $(i - 1); exit } }' "$1"; }
dd_bytes() { awk '/bytes .* copied/ { print $1; exit }' "$1"; }

ddfile=$work/ddtest
log "ceiling: O_DIRECT sequential write, 1 GiB in 1 MiB blocks"
timeout 120 dd if=/dev/zero of="$ddfile" bs=1M count=1024 oflag=direct 2>"$work/dd-write.txt"
write_mbps=$(awk -v b="$(dd_bytes "$work/dd-write.txt")" -v s="$(dd_seconds "$work/dd-write.txt")" 'BEGIN { printf "%.1f", b / s / 1e6 }')
log "ceiling: O_DIRECT sequential read, 1 GiB in 1 MiB blocks"
timeout 120 dd if="$ddfile" of=/dev/null bs=1M iflag=direct 2>"$work/dd-read.txt"
read_mbps=$(awk -v b="$(dd_bytes "$work/dd-read.txt")" -v s="$(dd_seconds "$work/dd-read.txt")" 'BEGIN { printf "%.1f", b / s / 1e6 }')
rm -f "$ddfile"
log "ceiling: 4 KiB O_DIRECT write latency (5000 writes)"
timeout 120 dd if=/dev/zero of="$ddfile" bs=4k count=5000 oflag=direct 2>"$work/dd-4k.txt"
lat4k_us=$(awk -v s="$(dd_seconds "$work/dd-4k.txt")" 'BEGIN { printf "%.1f", s / 5000 * 1e6 }')
rm -f "$ddfile"
log "ceiling: 4 KiB O_DIRECT|O_DSYNC write latency (2000 writes; what --fsync always pays)"
timeout 120 dd if=/dev/zero of="$ddfile" bs=4k count=2000 oflag=direct,dsync 2>"$work/dd-4k-dsync.txt"
lat4k_dsync_us=$(awk -v s="$(dd_seconds "$work/dd-4k-dsync.txt")" 'BEGIN { printf "%.1f", s / 2000 * 1e6 }')
rm -f "$ddfile"
cp "$work"/dd-*.txt "$logs/"

loopback_mbps=null
if ((have_ringbench)); then
    log "ceiling: loopback TCP (ringbench loopback, ${seconds}s)"
    if timeout --kill-after=5 $((seconds + 30)) "$bench_bin" loopback --duration "$seconds" \
        --warmup "$warmup" --json "$work/loopback.json" >"$logs/loopback.out" 2>&1; then
        loopback_mbps=$(jq '.total.mb_per_s // null | if . == null then null else (. * 10 | round) / 10 end' "$work/loopback.json")
        cp "$work/loopback.json" "$logs/"
    else
        log "WARNING: ringbench loopback failed (see $logs/loopback.out)"
    fi
fi
log "ceilings: write ${write_mbps} MB/s, read ${read_mbps} MB/s, 4k write ${lat4k_us} us, 4k dsync ${lat4k_dsync_us} us, loopback ${loopback_mbps} MB/s"

# --------------------------------------------------------------------------------------- broker
# Free ports and waiting for the broker to accept (shared with scripts/compare.sh).
# shellcheck source=scripts/lib/servers.sh
source "$root/scripts/lib/servers.sh"

broker_port=
broker_data=
reuse_data= # set: the next start_broker opens this data directory instead of a fresh one
keep_data= # set: the next stop_broker leaves the data directory
rabbitmq_port= # the RabbitMQ Streams listener's port an entry may name as @rabbitmq_port@
metrics_port= # the metrics endpoint's port (METRICS_SCRAPE=1)
start_broker() { # $1 = name, $2 = fsync policy, rest = extra broker flags
    # The native listener and its shard ports, then room for a RabbitMQ listener and its shards,
    # then (METRICS_SCRAPE=1) the metrics endpoint.
    broker_port=$(free_port_block "$((2 * shards + 1 + metrics_scrape))") || { log "no free ports"; return 1; }
    rabbitmq_port=$((broker_port + shards + 1))
    local extra=("${@:3}")
    extra=("${extra[@]//@rabbitmq_port@/$rabbitmq_port}")
    if ((metrics_scrape)); then
        metrics_port=$((broker_port + 2 * shards + 1))
        extra+=(--metrics-listen "127.0.0.1:$metrics_port")
    fi
    if [[ -n $reuse_data ]]; then
        broker_data=$reuse_data
        reuse_data=
    else
        broker_data=$(mktemp -d "$work/data-$1.XXXXXX")
    fi
    "$broker_bin" --data-dir "$broker_data" --listen "127.0.0.1:$broker_port" "${broker_core_args[@]}" \
        --fsync "$2" "${extra[@]}" >"$logs/$1.broker.log" 2>&1 &
    broker_pid=$!
    if ! wait_accepting_on "$broker_pid" "$broker_port" "broker for $1" "$logs/$1.broker.log" 15; then
        kill -0 "$broker_pid" 2>/dev/null || broker_pid=
        return 1
    fi
}

stopped=
stop_broker() { # sets $stopped to "clean", "killed" or "...-rcN"
    local how=clean
    kill -TERM "$broker_pid" 2>/dev/null || true
    for _ in $(seq 150); do kill -0 "$broker_pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$broker_pid" 2>/dev/null; then
        kill -KILL "$broker_pid" 2>/dev/null || true
        how=killed
    fi
    wait "$broker_pid" 2>/dev/null || how=${how}-rc$?
    broker_pid=
    if [[ -z $keep_data ]]; then rm -rf "$broker_data"; fi
    keep_data=
    stopped=$how
}

start_sampler() { # max RSS (KiB) of the broker into $1, every 200 ms
    local file=$1 pid=$broker_pid
    echo 0 >"$file"
    (
        max=0
        while kill -0 "$pid" 2>/dev/null; do
            rss=$(ps -o rss= -p "$pid" 2>/dev/null | tr -d ' ') || true
            if [[ -n $rss ]] && ((rss > max)); then max=$rss; echo "$max" >"$file"; fi
            sleep 0.2
        done
    ) &
    sampler_pid=$!
}
proc_io() { # "<read_bytes> <write_bytes>" of process $1 (empty if unreadable)
    awk '/^read_bytes/ { r = $2 } /^write_bytes/ { w = $2 } END { if (r != "" && w != "") print r, w }' "/proc/$1/io" 2>/dev/null || true
}
stop_sampler() { kill "$sampler_pid" 2>/dev/null || true; wait "$sampler_pid" 2>/dev/null || true; sampler_pid=; }

start_scraper() { # METRICS_SCRAPE=1: GET /metrics every second; "<ok> <failed>" into $1
    local file=$1 pid=$broker_pid url="http://127.0.0.1:$metrics_port/metrics"
    echo "0 0" >"$file"
    ((metrics_scrape)) || return 0
    (
        ok=0 failed=0
        while kill -0 "$pid" 2>/dev/null; do
            if curl -fsS -m 2 -o /dev/null "$url" 2>/dev/null; then ok=$((ok + 1)); else failed=$((failed + 1)); fi
            echo "$ok $failed" >"$file"
            sleep 1
        done
    ) &
    scraper_pid=$!
}
stop_scraper() {
    [[ -n $scraper_pid ]] || return 0
    kill "$scraper_pid" 2>/dev/null || true
    wait "$scraper_pid" 2>/dev/null || true
    scraper_pid=
}

run_ringbench() { # $1 = json file, $2 = log file, rest = workload and its flags
    local json=$1 logfile=$2
    shift 2
    # --duration includes the warm-up; fills and set-up need more.
    local limit=${bench_limit:-$((seconds + 60))}
    echo "+ ringbench --server 127.0.0.1:$broker_port $*" >"$logfile"
    # In the background so that a signal to this script runs the trap at once (bash defers traps
    # while a foreground child runs); the trap stops it.
    # Credentials through the environment, so they do not show in `ps`.
    RINGBROKER_USER=$user RINGBROKER_PASSWORD=$password timeout --kill-after=5 "$limit" "$bench_bin" \
        --server "127.0.0.1:$broker_port" "$@" --json "$json" >>"$logfile" 2>&1 &
    bench_pid=$!
    local rc=0
    wait "$bench_pid" || rc=$?
    bench_pid=
    return "$rc"
}

# ---------------------------------------------------------------------------------------- suite
# Pinned: actor i owns partition i of one stream's topic (partitions spread over the shards).
# name | fsync | ceiling kind (producer/consumer/both) | bound (duration/fill) | workload and flags
#   [| du: record the data directory's bytes on disk after the run [| extra broker flags]]
# Producers keep ringbench's default of one batch in flight (on 2 shared cores more pipelining
# only queues: lower throughput, higher latency), except the single fsync-always producer, which
# needs a second batch in flight to overlap its network transfer with the previous fdatasync.
# The 1 KB producer and end-to-end run twice: unpaced (throughput; at saturation an
# acknowledgement waits behind the write-behind queue, and end-to-end latency is mostly the queue
# the producers build ahead of the consumers) and paced (latency below saturation: producers at
# 1400 MB/s, about 80% of this machine's disk; end-to-end at 800 MB/s, both in total).
# The named entry is the 1 KB producer as a named, deduplicated producer (ids, epochs, sequences
# checked per batch); the json entries send compressible JSON-like records, plain and zstd, and
# record the data directory's size (MB/s counts the uncompressed payload in both).
# The filtered entry fills batches tagged with 10 filter values in turn (homogeneous batches) and
# reads one of them: MB/s counts the wanted messages, and the report adds the share of the
# stream's bytes the consumers were sent (target: at most 12%).
# The cache-at-once consumer entry starts its broker with `--cache-growth 0`, so the fill stays in
# the batch cache (a fresh broker otherwise grows its cache at 64 MiB/s and the consumers read
# most of the fill from disk); the catch-up entry writes BENCH_CATCHUP_GB, restarts the broker
# (an empty cache) and reads it all back from disk, against the O_DIRECT read ceiling.
# The -subscribe entries are their long-poll neighbours with consumers reading by push
# subscription (`--subscribe 10`: 10 batches of initial credit, each delivery's batches granted
# back on arrival); each runs right after its long-poll entry so the pair meets the same machine.
# Their latency is the same (per message for end-to-end; for the consumer entry, the wait per
# delivery instead of the poll round trip).
# The ack-consumer entries read a filled topic through a durable consumer, one Ack request per
# fetch naming every fetched offset (explicit) or one AckAll; latency is the fetch + ack round
# trip. The workqueue entries produce and fetch+ack at once (MB/s counts the producers): on a
# limits topic (no removal: the baseline), a work-queue topic and an interest topic, with 64 MiB
# segments so that removal can delete whole segments; `du` shows what stayed on disk.
# The rabbitmq-producer entry is pinned-producer-100B's shape through the RabbitMQ Streams listener
# (`--rabbitmq-listen`) with the Rust rabbitmq-stream-client: producer i publishes batches to member
# i of a super stream and waits for every confirmation (scripts/rabbitmq-bench.sh runs the pair
# interleaved, 3 times each, with the CPU split). `@rabbitmq_port@` is the listener's port.
n=$pinned_actors
suite=(
    "pinned-producer-1KB|never|producer|duration|pinned-producer --producers $n --streams 1 --partitions $n --message-size 1000"
    "pinned-producer-1KB-paced-1400MBps|never|producer|duration|pinned-producer --producers $n --streams 1 --partitions $n --message-size 1000 --rate $((1400 / n))"
    "pinned-producer-1KB-named|never|producer|duration|pinned-producer --producers $n --streams 1 --partitions $n --message-size 1000 --producer-name bench"
    "pinned-producer-1KB-json|never|producer|duration|pinned-producer --producers $n --streams 1 --partitions $n --message-size 1000 --payload json|du"
    "pinned-producer-1KB-json-zstd|never|producer|duration|pinned-producer --producers $n --streams 1 --partitions $n --message-size 1000 --payload json --compression zstd|du"
    "pinned-consumer-1KB|never|consumer|fill|pinned-consumer --producers $n --consumers $n --streams 1 --partitions $n --message-size 1000"
    "pinned-consumer-1KB-cache-at-once|never|consumer|fill|pinned-consumer --producers $n --consumers $n --streams 1 --partitions $n --message-size 1000|-|--cache-growth 0"
    "catchup-consumer-1KB-cold|never|consumer|catchup|pinned-consumer --producers $n --consumers $n --streams 1 --partitions $n --message-size 1000"
    "pinned-consumer-1KB-filter-1-of-10|never|consumer|fill|pinned-consumer --producers $n --consumers $n --streams 1 --partitions $n --message-size 1000 --filter-values 10 --consume-filter v3"
    "pinned-consumer-1KB-subscribe|never|consumer|fill|pinned-consumer --producers $n --consumers $n --streams 1 --partitions $n --message-size 1000 --subscribe 10"
    "end-to-end-1KB|never|both|duration|end-to-end --producers $n --consumers $n --streams 1 --partitions $n --message-size 1000"
    "end-to-end-1KB-subscribe|never|both|duration|end-to-end --producers $n --consumers $n --streams 1 --partitions $n --message-size 1000 --subscribe 10"
    "end-to-end-1KB-paced-800MBps|never|both|duration|end-to-end --producers $n --consumers $n --streams 1 --partitions $n --message-size 1000 --rate $((800 / n))"
    "end-to-end-1KB-paced-800MBps-subscribe|never|both|duration|end-to-end --producers $n --consumers $n --streams 1 --partitions $n --message-size 1000 --rate $((800 / n)) --subscribe 10"
    "pinned-producer-100B|never|producer|duration|pinned-producer --producers $n --streams 1 --partitions $n --message-size 100"
    "rabbitmq-producer-100B|never|producer|duration|rabbitmq-producer --rabbitmq-server 127.0.0.1:@rabbitmq_port@ --producers $n --streams 1 --partitions $n --message-size 100|-|--rabbitmq-listen 127.0.0.1:@rabbitmq_port@"
    "balanced-producer-8x8-1KB|never|producer|duration|balanced-producer --producers 8 --streams 1 --partitions 8 --message-size 1000"
    "pinned-producer-1KB-fsync-always-1p|always|producer|duration|pinned-producer --producers 1 --streams 1 --partitions 1 --message-size 1000 --in-flight 2"
    "balanced-producer-4x4-1KB-fsync-always|always|producer|duration|balanced-producer --producers 4 --streams 1 --partitions 4 --message-size 1000"
    "ack-consumer-1KB|never|consumer|fill|ack-consumer --producers $n --consumers $n --streams 1 --partitions $n --message-size 1000"
    "ack-consumer-1KB-ack-all|never|consumer|fill|ack-consumer --producers $n --consumers $n --streams 1 --partitions $n --message-size 1000 --ack all"
    "workqueue-1KB-limits|never|producer|duration|workqueue --producers $n --consumers $n --streams 1 --partitions $n --message-size 1000 --retention limits|du|--segment-bytes 67108864"
    "workqueue-1KB|never|producer|duration|workqueue --producers $n --consumers $n --streams 1 --partitions $n --message-size 1000|du|--segment-bytes 67108864"
    "workqueue-1KB-interest|never|producer|duration|workqueue --producers $n --consumers $n --streams 1 --partitions $n --message-size 1000 --retention interest|du|--segment-bytes 67108864"
)
if ((catchup_gb == 0)); then
    selected=()
    for spec in "${suite[@]}"; do [[ ${spec%%|*} == catchup-* ]] || selected+=("$spec"); done
    suite=("${selected[@]}")
fi
if [[ -n ${BENCH_ONLY:-} ]]; then
    selected=()
    for spec in "${suite[@]}"; do
        if grep -qE -- "$BENCH_ONLY" <<<"${spec%%|*}"; then selected+=("$spec"); fi
    done
    suite=("${selected[@]}")
fi

failures=0
for spec in "${suite[@]}"; do
    IFS='|' read -r name fsync kind bound flags measure broker_flags <<<"$spec"
    read -ra args <<<"$flags"
    read -ra broker_extra <<<"${broker_flags:-}"
    log "== $name (--fsync $fsync${broker_flags:+ $broker_flags}): ${args[*]}"
    status=ok
    note=""
    result=$work/$name.json
    rss_file=$work/$name.rss
    started=$(date +%s)
    if ! start_broker "$name" "$fsync" "${broker_extra[@]}"; then
        status=broker-start-failed
        if [[ -n $broker_pid ]]; then stop_broker; fi
        failures=$((failures + 1))
        jq -nc --arg name "$name" --arg status "$status" --arg fsync "$fsync" \
            '{name: $name, status: $status, fsync: $fsync}' >>"$entries"
        continue
    fi
    if [[ $bound == catchup ]] && ((have_ringbench)); then
        # Write the data, restart the broker over it (an empty cache: every byte comes from the
        # disk), then measure the read alone.
        catchup_batches=$((catchup_gb * 1000 / n))
        log "   filling ${catchup_gb} GB ($catchup_batches batches per partition), then restarting the broker"
        if ! bench_limit=$((catchup_gb * 30 + 60)) run_ringbench "$work/$name.fill.json" "$logs/$name.fill.out" \
            "${args[@]}" --phase fill --batches "$catchup_batches" "${client_args[@]}"; then
            log "   fill failed (see $logs/$name.fill.out)"
        fi
        keep_data=1
        stop_broker
        reuse_data=$broker_data
        if ! start_broker "$name" "$fsync" "${broker_extra[@]}"; then
            status=broker-restart-failed
            if [[ -n $broker_pid ]]; then stop_broker; fi
            rm -rf "$broker_data"
            failures=$((failures + 1))
            jq -nc --arg name "$name" --arg status "$status" --arg fsync "$fsync" \
                '{name: $name, status: $status, fsync: $fsync}' >>"$entries"
            continue
        fi
    fi
    args=("${args[@]//@rabbitmq_port@/$rabbitmq_port}")
    start_sampler "$rss_file"
    start_scraper "$work/$name.scrapes"
    io_before=$(proc_io "$broker_pid")
    if ((!have_ringbench)); then
        sleep 1
        status=skipped
        note="ringbench not built; broker start/stop only"
    else
        if [[ $bound == catchup ]]; then
            args+=(--phase consume --batches "$catchup_batches" --warmup 0)
            note="read $catchup_gb GB written before a broker restart (cold cache), no warm-up"
        elif [[ $bound == fill ]]; then
            # Consumer workloads fill the partitions themselves (ringbench recreates the streams
            # first), then read them back; count-bound, and without warm-up because reading the
            # fill can take less than a warm-up second. The timeout still bounds the run.
            args+=(--batches "$consumer_batches" --warmup 0)
            note="fill then read $consumer_batches batches per partition, no warm-up"
        else
            args+=(--duration "$seconds" --warmup "$warmup")
        fi
        limit=
        [[ $bound == catchup ]] && limit=$((catchup_gb * 30 + 60))
        if bench_limit=$limit run_ringbench "$result" "$logs/$name.out" "${args[@]}" "${client_args[@]}" --fsync-hint "fsync=$fsync"; then
            cp "$result" "$logs/"
        else
            rc=$?
            status=ringbench-failed-rc$rc
            ((rc == 124)) && status=timeout
        fi
    fi
    stop_sampler
    stop_scraper
    scrapes=null
    if ((metrics_scrape)); then
        read -r scrapes_ok scrapes_failed <"$work/$name.scrapes"
        scrapes="{\"ok\": ${scrapes_ok:-0}, \"failed\": ${scrapes_failed:-0}}"
        log "   metrics: ${scrapes_ok:-0} scrapes answered, ${scrapes_failed:-0} failed"
    fi
    # The broker's block-device traffic during the entry (/proc/PID/io; O_DIRECT counts): reads
    # show consumers served from disk rather than from the batch cache.
    read -r r0 w0 <<<"$io_before"
    read -r r1 w1 <<<"$(proc_io "$broker_pid")"
    disk_read=null disk_written=null
    if [[ $r0$r1$w0$w1 =~ ^[0-9]+$ ]]; then
        disk_read=$((r1 - r0)) disk_written=$((w1 - w0))
        log "   broker disk: read $((disk_read / 1000000)) MB, written $((disk_written / 1000000)) MB"
    fi
    data_bytes=null
    if [[ ${measure:-} == du ]]; then
        # After the run, before the broker stops (stop_broker removes the directory).
        data_bytes=$(du -sb "$broker_data" 2>/dev/null | cut -f1) || data_bytes=null
        [[ $data_bytes =~ ^[0-9]+$ ]] || data_bytes=null
    fi
    stop_broker
    [[ $status == ok || $status == skipped ]] || failures=$((failures + 1))
    max_rss=$(cat "$rss_file")
    # The cache the broker sized for itself (its start-up line), for the RSS rule.
    cache_bytes=$(grep -o 'cache_bytes=[0-9]*' "$logs/$name.broker.log" | head -1 | cut -d= -f2)
    [[ $cache_bytes =~ ^[0-9]+$ ]] || cache_bytes=null
    elapsed=$(($(date +%s) - started))
    log "   $status; broker stop: $stopped; max RSS ${max_rss} KiB; ${elapsed}s"
    [[ $data_bytes == null ]] || log "   data directory: $data_bytes bytes on disk (du -sb)"
    res='null'
    [[ -s $result ]] && res=$(jq -c . "$result" 2>/dev/null || echo null)
    jq -nc --arg name "$name" --arg status "$status" --arg fsync "$fsync" --arg kind "$kind" \
        --arg note "$note" --arg stop "$stopped" --argjson rss "${max_rss:-0}" --argjson cache "$cache_bytes" \
        --arg cores "$broker_cores" --argjson shards "$shards" --argjson wall "$elapsed" \
        --arg bflags "${broker_flags:-}" --argjson scrapes "$scrapes" \
        --argjson data "$data_bytes" --argjson dread "$disk_read" --argjson dwritten "$disk_written" \
        --arg cmd "ringbench ${args[*]} ${client_args[*]} --fsync-hint fsync=$fsync" --argjson result "$res" \
        '{name: $name, status: $status, fsync: $fsync, ceiling: $kind, note: $note,
          broker: {cores: $cores, shards: $shards, flags: $bflags, stop: $stop, max_rss_kib: $rss, cache_bytes: $cache, data_bytes: $data,
                   disk_read_bytes: $dread, disk_written_bytes: $dwritten, metrics_scrapes: $scrapes},
          command: $cmd, wall_s: $wall, result: $result}' >>"$entries"
done

# -------------------------------------------------------------------------------------- reports
cpu_model=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
[[ -n $cpu_model ]] || cpu_model=$(lscpu 2>/dev/null | awk -F': *' '/Model name/ { print $2; exit }')
mem_kib=$(awk '/^MemTotal/ { print $2 }' /proc/meminfo)
fs_type=$(df -PT "$tmp_base" | awk 'NR == 2 { print $2 }')
jq -n --slurpfile entries "$entries" --arg stamp "$stamp" \
    --argjson write "$write_mbps" --argjson read "$read_mbps" --argjson loop "$loopback_mbps" \
    --argjson lat "$lat4k_us" --argjson latd "$lat4k_dsync_us" \
    --argjson nproc "$ncpu" --argjson mem "$mem_kib" --arg kernel "$(uname -r)" --arg cpu "$cpu_model" \
    --arg fs "$fs_type" --arg commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    --argjson seconds "$seconds" --argjson warmup "$warmup" --argjson scrape "$metrics_scrape" \
    '{timestamp: $stamp, commit: $commit, seconds: $seconds, warmup_s: $warmup, metrics_scrape: ($scrape == 1),
      machine: {nproc: $nproc, memory_kib: $mem, kernel: $kernel, cpu_model: $cpu, data_fs: $fs},
      ceilings: {o_direct_write_mb_per_s: $write, o_direct_read_mb_per_s: $read,
                 write_4k_o_direct_us: $lat, write_4k_o_dsync_us: $latd, loopback_tcp_mb_per_s: $loop},
      entries: $entries}' >"$out_json"

# Markdown: every throughput also as a fraction of its ceilings (producers against loopback and
# O_DIRECT write, consumers against loopback and O_DIRECT read).
jq -r '
  def pct(x; c): if x == null or c == null or c == 0 then "–" else "\((x / c * 100) | floor)%" end;
  def num(x; d): if x == null then "–" else ((x * d | round) / d | tostring) end;
  .ceilings as $c |
  "# ringbroker benchmark \(.timestamp) (commit \(.commit))",
  "",
  "\(.machine.nproc) cores, \(.machine.memory_kib / 1048576 | floor) GiB, kernel \(.machine.kernel), \(.machine.cpu_model), data on \(.machine.data_fs); \(.seconds) s per run after \(.warmup_s) s warm-up. MB/s = 10^6 B/s.\(if .metrics_scrape then " Metrics on: every broker ran with --metrics-listen and was scraped every second (METRICS_SCRAPE=1)." else "" end)",
  "",
  "Ceilings: O_DIRECT write \(num($c.o_direct_write_mb_per_s; 1)) MB/s, O_DIRECT read \(num($c.o_direct_read_mb_per_s; 1)) MB/s, loopback TCP \(num($c.loopback_tcp_mb_per_s; 1)) MB/s, 4 KiB O_DIRECT write \(num($c.write_4k_o_direct_us; 1)) µs (with O_DSYNC \(num($c.write_4k_o_dsync_us; 1)) µs). The disk ceilings are dd at queue depth 1 (1 MiB blocks), a lower bound of what the device does with deeper queues.",
  "Producers and end-to-end are read against O_DIRECT write, consumers against O_DIRECT read; all against loopback TCP (ringbench loopback, one sender/receiver pair).",
  "",
  "Data MB: the broker data directory after the run (du -sb, entries that measure it); payload/data: the payload the producers had acknowledged over the whole run (warm-up included) per byte on disk, the compression ratio as stored.",
  "",
  "RSS rule: the broker'"'"'s max RSS stays at or below its batch cache (`--cache-bytes`, as it reported at start-up) + 64 MiB; the column shows max RSS − cache bound (≤ 0: met).",
  "",
  "| entry | fsync | status | MB/s | msgs/s | vs loopback | vs disk | p50 µs | p99 µs | p99.9 µs | max RSS MiB | RSS − (cache + 64 MiB) | data MB | payload/data |",
  "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
  (.entries[] |
    (.result.total.mb_per_s // null) as $mb |
    (if .ceiling == "consumer" then $c.o_direct_read_mb_per_s else $c.o_direct_write_mb_per_s end) as $disk |
    (if .ceiling == "consumer" then "read" else "write" end) as $dk |
    (.broker.data_bytes // null) as $data |
    (.result.total.producer_bytes_all // null) as $payload |
    "| \(.name) | \(.fsync) | \(.status) | \(num($mb; 10)) | \(num(.result.total.msgs_per_s // null; 1)) | \(pct($mb; $c.loopback_tcp_mb_per_s)) | \(pct($mb; $disk)) \($dk) | \(num(.result.latency_us.p50 // null; 1)) | \(num(.result.latency_us.p99 // null; 1)) | \(num(.result.latency_us.p999 // null; 1)) | \(num((.broker.max_rss_kib // null) | if . == null then null else . / 1024 end; 10)) | \(if .broker.cache_bytes == null or .broker.max_rss_kib == null then "–" else num((.broker.max_rss_kib * 1024 - .broker.cache_bytes) / 1048576 - 64; 1) end) | \(num($data | if . == null then null else . / 1e6 end; 10)) | \(if $data == null or $payload == null or $data == 0 then "–" else num($payload / $data; 100) end) |"),
  "",
  (.entries[] | select(.result.filter != null) |
    "Filtering, \(.name): the consumers were sent \(num(.result.filter.received_share * 100; 10))% of the stream'"'"'s bytes (\(.result.filter.received_bytes) bytes sent, \(.result.filter.skipped_bytes) skipped by the broker; target at most 12%).")
' "$out_json" >"$out_md"

if ((have_ringbench)) && "$bench_bin" plot "$out_json" "$out_svg"; then
    log "wrote $out_json, $out_md, $out_svg (logs in $logs)"
else
    log "WARNING: plot failed; wrote $out_json, $out_md (logs in $logs)"
fi
cat "$out_md"

((have_ringbench)) || exit 2
((failures == 0)) || exit 1
