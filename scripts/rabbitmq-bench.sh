#!/usr/bin/env bash
# RabbitMQ Streams benchmark (issue 15 targets): ringbroker's --rabbitmq-listen against RabbitMQ on
# this machine, with the same clients. Never run by the tests.
#
# Part `rstream`: the Python rstream client (scripts/lib/rstream_bench.py) publishes
# RMQ_BENCH_MESSAGES bodies of 100 bytes with send_batch, waits for every confirmation, then
# consumes them from the first offset; against Debian's RabbitMQ and ringbroker (one entry per
# --fsync policy in RMQ_BENCH_FSYNC), RMQ_BENCH_RUNS runs each, interleaved (the order rotates
# every run), every run on a freshly started server with an empty data directory. Reported per
# phase: messages/s (median and each run), and the CPU seconds of the client and of the broker
# (/proc/PID/stat utime + stime over the phase).
# Part `listener`: what the listener costs against the native protocol for the same publish
# shape: `ringbench pinned-producer` (native) and `ringbench rabbitmq-producer` (the Rust
# rabbitmq-stream-client through the listener) with the same producers, partitions, message size,
# batch and batches in flight, interleaved on fresh ringbrokers, with the same CPU split (ringbench
# from its rusage); then the native producers paced (--rate) to the listener's rate of the run, for
# broker CPU per message at equal throughput.
#
# Prints Markdown tables and writes them, the JSON lines they come from and the logs to
# results/rabbitmq-<UTC timestamp>/.
#
# Usage: scripts/rabbitmq-bench.sh
# Environment:
#   RMQ_BENCH_PARTS="rstream listener"  which parts run
#   RMQ_BENCH_RUNS=3            runs per server (medians of these)
#   RMQ_BENCH_MESSAGES=3000000  messages per rstream run (publish, then consume)
#   RMQ_BENCH_BATCH=1000        messages per send_batch / per ringbench batch
#   RMQ_BENCH_IN_FLIGHT=64      rstream: batches unconfirmed at most
#   RMQ_BENCH_FSYNC="always"    ringbroker --fsync policies of the rstream part (e.g. "always never";
#                               RabbitMQ confirms after its write, without fsync)
#   RMQ_BENCH_LISTENER_SECONDS=4  ringbench --duration (1 s warm-up inside; the native producers
#                               write ~0.85 GB/s here, so each second costs that much disk)
#   RMQ_BENCH_LISTENER_FSYNC=never  ringbroker --fsync of the listener part
#   RMQ_BENCH_LISTENER_IN_FLIGHT=1  ringbench --in-flight of both listener entries
#   RMQ_BENCH_TMPDIR=target/rabbitmq-bench  data directories (on the disk under test)
#   RMQ_BENCH_SKIP_BUILD=1      use the existing target/release binaries
#   RMQ_BENCH_WAIT_OTHER=600    seconds to wait for another RabbitMQ (beam.smp) to stop first
#   RMQ_BENCH_MIN_FREE_GB=6     a server is not started with less free space than this in
#                               RMQ_BENCH_TMPDIR (each run's data directory is removed after it)
# Exit status: 0 when every run succeeded; 1 when one failed; 3 when a prerequisite is missing.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
root=$PWD

parts=${RMQ_BENCH_PARTS:-rstream listener}
runs=${RMQ_BENCH_RUNS:-3}
messages=${RMQ_BENCH_MESSAGES:-3000000}
batch=${RMQ_BENCH_BATCH:-1000}
in_flight=${RMQ_BENCH_IN_FLIGHT:-64}
fsyncs=${RMQ_BENCH_FSYNC:-always}
listener_seconds=${RMQ_BENCH_LISTENER_SECONDS:-4}
listener_fsync=${RMQ_BENCH_LISTENER_FSYNC:-never}
listener_in_flight=${RMQ_BENCH_LISTENER_IN_FLIGHT:-1}
wait_other=${RMQ_BENCH_WAIT_OTHER:-600}
min_free_gb=${RMQ_BENCH_MIN_FREE_GB:-6}
for pair in "runs:$runs" "messages:$messages" "batch:$batch" "in_flight:$in_flight" \
    "listener_seconds:$listener_seconds" "listener_in_flight:$listener_in_flight" "wait_other:$wait_other" "min_free_gb:$min_free_gb"; do
    [[ ${pair#*:} =~ ^[0-9]+$ ]] || { echo "RMQ_BENCH_${pair%%:*}: not a whole number" >&2; exit 64; }
done
((runs >= 1 && runs <= 20 && listener_seconds >= 2)) || { echo "RMQ_BENCH_RUNS 1..20, RMQ_BENCH_LISTENER_SECONDS >= 2" >&2; exit 64; }

log() { printf '[rabbitmq-bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# ---------------------------------------------------------------------------------- prerequisites
rabbitmq_bin=/usr/lib/rabbitmq/bin/rabbitmq-server
missing=()
command -v python3 >/dev/null || missing+=("python3: apt-get install python3 python3-pip")
if ! python3 -c 'import importlib.metadata as m, sys; sys.exit(m.version("rstream") != "1.1.1")' 2>/dev/null; then
    missing+=("rstream 1.1.1: pip install rstream==1.1.1 (Debian's python3: add --break-system-packages)")
fi
if [[ $parts == *rstream* ]]; then
    [[ -x $rabbitmq_bin ]] || missing+=("RabbitMQ: apt-get install rabbitmq-server")
    if ! compgen -G "/usr/lib/rabbitmq/lib/rabbitmq_server-*/plugins/rabbitmq_stream-*" >/dev/null; then
        missing+=("the stream plugin: rabbitmq-plugins enable rabbitmq_stream (this script enables it for its own node)")
    fi
    id rabbitmq >/dev/null 2>&1 || missing+=("the rabbitmq user (made by apt-get install rabbitmq-server)")
    [[ $(id -u) == 0 ]] || missing+=("root: the script starts RabbitMQ as the rabbitmq user with su")
fi
for tool in jq ss; do command -v "$tool" >/dev/null || missing+=("$tool: apt-get install ${tool/ss/iproute2}"); done
if ((${#missing[@]})); then
    echo "rabbitmq-bench: missing prerequisites:" >&2
    printf '  - %s\n' "${missing[@]}" >&2
    exit 3
fi

# Another RabbitMQ would share the cores: wait for it to stop (it is not ours to stop).
waited=0
while pgrep -f beam.smp >/dev/null; do
    if ((waited >= wait_other)); then
        echo "rabbitmq-bench: another RabbitMQ (beam.smp) still runs after ${wait_other}s; stop it first" >&2
        exit 3
    fi
    ((waited % 60 == 0)) && log "another RabbitMQ (beam.smp) runs; waiting up to ${wait_other}s for it to stop"
    sleep 5
    waited=$((waited + 5))
done

if [[ -z ${RMQ_BENCH_SKIP_BUILD:-} ]]; then
    log "building release (ringbroker, ringbench)"
    timeout 1800 cargo build --release --bin ringbroker --bin ringbench
fi
target_dir=${CARGO_TARGET_DIR:-$root/target}
broker_bin=$target_dir/release/ringbroker
bench_bin=$target_dir/release/ringbench
[[ -x $broker_bin && -x $bench_bin ]] || { echo "rabbitmq-bench: no $broker_bin or $bench_bin" >&2; exit 3; }

stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=$root/results/rabbitmq-$stamp
mkdir -p "$out/logs"
tmp_base=${RMQ_BENCH_TMPDIR:-target/rabbitmq-bench}
mkdir -p "$tmp_base"
work=$(mktemp -d "$(cd "$tmp_base" && pwd)/run.XXXXXX")
chmod 755 "$work"
bench_py=$root/scripts/lib/rstream_bench.py
# shellcheck source=scripts/lib/servers.sh
source "$root/scripts/lib/servers.sh"
# shellcheck source=scripts/lib/rabbitmq-servers.sh
source "$root/scripts/lib/rabbitmq-servers.sh"

epmd_was_running=0
pgrep -x epmd >/dev/null && epmd_was_running=1
cleanup() {
    local status=$?
    stop_rabbitmq
    stop_ringbroker
    if ((!epmd_was_running)) && ! pgrep -f beam.smp >/dev/null; then epmd -kill >/dev/null 2>&1 || true; fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

failures=0

# True when the data directories' disk has RMQ_BENCH_MIN_FREE_GB free (the disk is shared).
disk_room() {
    local free_kib
    free_kib=$(df -Pk "$work" | awk 'NR == 2 { print $4 }')
    if ((free_kib < min_free_gb * 1024 * 1024)); then
        log "   only $((free_kib / 1024 / 1024)) GB free under $work (RMQ_BENCH_MIN_FREE_GB=$min_free_gb): run skipped"
        return 1
    fi
}

# ----------------------------------------------------------------------------------- rstream part
rstream_run() { # $1 = server name, $2 = run, $3 = port, $4 = user, $5 = password, $6 = broker pid
    local lines=$work/$1-$2.jsonl
    log "   rstream: $messages messages, batches of $batch, $in_flight in flight"
    if RSTREAM_BENCH_PASSWORD=$5 timeout 600 python3 "$bench_py" run --port "$3" --user "$4" \
        --messages "$messages" --batch "$batch" --in-flight "$in_flight" --broker-pid "$6" \
        --server-name "$1" --run "$2" >"$lines" 2>"$out/logs/$1-$2.rstream.err"; then
        cat "$lines" >>"$out/rstream.jsonl"
        jq -r '"   \(.phase): \(.msgs_per_s / 1e6 * 1000 | round / 1000) M msg/s, client CPU \(.client_cpu_s * 100 | round / 100) s, broker CPU \(.broker_cpu_s // 0 | . * 100 | round / 100) s"' "$lines" >&2
    else
        log "   FAILED (see $out/logs/$1-$2.rstream.err)"
        failures=$((failures + 1))
    fi
}

if [[ $parts == *rstream* ]]; then
    servers=(rabbitmq)
    for policy in $fsyncs; do servers+=("ringbroker-fsync-$policy"); done
    : >"$out/rstream.jsonl"
    for ((run = 1; run <= runs; run++)); do
        count=${#servers[@]}
        for ((i = 0; i < count; i++)); do
            server=${servers[$(((i + run - 1) % count))]}
            log "== run $run: $server"
            if ! disk_room; then
                failures=$((failures + 1))
            elif [[ $server == rabbitmq ]]; then
                if start_rabbitmq "$server-$run"; then
                    rstream_run "$server" "$run" "$rabbitmq_port" guest guest "$rabbitmq_pid"
                else
                    failures=$((failures + 1))
                fi
                stop_rabbitmq
            else
                if start_ringbroker "$server-$run" "${server#ringbroker-fsync-}"; then
                    rstream_run "$server" "$run" "$ringbroker_rabbitmq_port" ringbroker ringbroker "$ringbroker_pid"
                else
                    failures=$((failures + 1))
                fi
                stop_ringbroker
            fi
        done
    done
    {
        echo "## rstream: $messages messages of 100 bytes, send_batch of $batch, $in_flight batches in flight; consume from first"
        echo
        python3 "$bench_py" table --baseline rabbitmq "$out/rstream.jsonl"
        echo
    } >"$out/rstream.md"
    cat "$out/rstream.md"
fi

# ---------------------------------------------------------------------------------- listener part
listener_run() { # $1 = entry name (native | rabbitmq-listener | native-paced), $2 = run
    local json=$work/$1-$2.json measured=$work/$1-$2.measure shards
    shards=$(nproc)
    local workload=(pinned-producer)
    case $1 in
    rabbitmq-listener) workload=(rabbitmq-producer --rabbitmq-server "127.0.0.1:$ringbroker_rabbitmq_port") ;;
    native-paced)
        # Each producer at its share of this run's listener rate (MB/s of 100-byte messages).
        local rate
        rate=$(jq -r --argjson run "$2" --argjson shards "$shards" \
            'select(.server == "rabbitmq-listener" and .run == $run) | .msgs_per_s * 100 / 1e6 / $shards' \
            "$out/listener.jsonl" | tail -n 1)
        [[ -n $rate ]] || { log "   no listener figure in run $2 to pace by: skipped"; return 0; }
        workload=(pinned-producer --rate "$rate")
        ;;
    esac
    local args=("${workload[@]}" --producers "$shards" --streams 1 --partitions "$shards" --message-size 100
        --batch "$batch" --in-flight "$listener_in_flight" --duration "$listener_seconds" --warmup 1 --json "$json")
    echo "+ ringbench --server 127.0.0.1:$ringbroker_port ${args[*]}" >"$out/logs/$1-$2.ringbench.out"
    if RINGBROKER_USER=ringbroker RINGBROKER_PASSWORD=ringbroker timeout $((listener_seconds + 60)) \
        python3 "$bench_py" measure --broker-pid "$ringbroker_pid" -- \
        "$bench_bin" --server "127.0.0.1:$ringbroker_port" "${args[@]}" \
        >"$measured" 2>>"$out/logs/$1-$2.ringbench.out" && [[ -s $json ]]; then
        # The measure line is the last line; ringbench's table goes before it.
        tail -n 1 "$measured" | jq -c --arg server "$1" --argjson run "$2" --slurpfile r "$json" \
            '{server: $server, run: $run, phase: "publish", msgs_per_s: $r[0].total.msgs_per_s,
              messages: ($r[0].total.producer_bytes_all / 100), seconds: .seconds,
              client_cpu_s: .client_cpu_s, broker_cpu_s: .broker_cpu_s}' >>"$out/listener.jsonl"
        head -n -1 "$measured" >>"$out/logs/$1-$2.ringbench.out"
        tail -n 1 "$out/listener.jsonl" | jq -r '"   \(.msgs_per_s / 1e6 * 1000 | round / 1000) M msg/s, ringbench CPU \(.client_cpu_s * 100 | round / 100) s, broker CPU \(.broker_cpu_s // 0 | . * 100 | round / 100) s"' >&2
    else
        cat "$measured" >>"$out/logs/$1-$2.ringbench.out" 2>/dev/null || true
        log "   FAILED (see $out/logs/$1-$2.ringbench.out)"
        failures=$((failures + 1))
    fi
}

if [[ $parts == *listener* ]]; then
    : >"$out/listener.jsonl"
    entries=(native rabbitmq-listener)
    for ((run = 1; run <= runs; run++)); do
        for ((i = 0; i < 3; i++)); do
            # native and the listener alternate first; native-paced follows at the listener's rate.
            entry=native-paced
            ((i < 2)) && entry=${entries[$(((i + run - 1) % 2))]}
            log "== listener run $run: $entry"
            if ! disk_room; then
                failures=$((failures + 1))
            elif start_ringbroker "$entry-$run" "$listener_fsync"; then
                listener_run "$entry" "$run"
            else
                failures=$((failures + 1))
            fi
            stop_ringbroker
        done
    done
    {
        echo "## Listener against native: $(nproc) producers on $(nproc) partitions, 100-byte messages, batches of $batch, $listener_in_flight in flight, --fsync $listener_fsync, ${listener_seconds} s runs (1 s warm-up)"
        echo
        echo "msg/s over the measured phase; CPU over the whole ringbench process (set-up and warm-up included), µs/msg over every message it published. native-paced: the native producers held (--rate) to the listener's rate of the same run, so that broker CPU per message compares at equal throughput (an idle-more broker pays its wake-ups and smaller disk writes over fewer messages)."
        echo
        python3 "$bench_py" table --baseline native "$out/listener.jsonl"
        echo
    } >"$out/listener.md"
    cat "$out/listener.md"
fi

cat "$out"/*.md >"$out/summary.md" 2>/dev/null || true
log "wrote $out"
((failures == 0)) || exit 1
