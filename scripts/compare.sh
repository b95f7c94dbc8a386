#!/usr/bin/env bash
# Side-by-side benchmark of ringbroker and Apache Iggy (server 0.8.0) on this machine.
# Optional: never run by the tests.
#
# Usage: scripts/compare.sh IGGY_SOURCE_TREE [RUNS]
#   IGGY_SOURCE_TREE  a local Apache Iggy checkout at tag server-0.8.0 (git clone
#                     https://github.com/apache/iggy && git -C iggy checkout server-0.8.0)
#   RUNS              interleaved rounds (default 3); the summary is the median per shape
#
# Builds Iggy's server and iggy-bench (`cargo build --release -p server -p iggy-bench`: selecting
# the packages keeps workspace features from pulling a V8 download) and ringbroker's broker and
# ringbench (`cargo build --release --bin ringbroker --bin ringbench`), then runs four shapes,
# the same work for both: 2 actors on 2 partitions (Iggy: 2 streams of 1 partition, its pinned
# layout; ringbroker: 1 stream of 2 partitions, one per actor), 1000 batches of 1000 messages
# per actor, no warm-up, one batch in flight per actor:
#   pinned-producer-1KB        2 producers, 1000-byte messages, no fsync
#   pinned-consumer-1KB        fill 2 partitions, then 2 consumers read them by offset (measured)
#   pinned-consumer-1KB-cache-at-once   the same; ringbroker with --cache-growth 0
#   pinned-producer-100B       2 producers, 100-byte messages (read in msg/s)
#   pinned-producer-1KB-fsync  as the first, every acknowledged batch fsynced: ringbroker
#                              `--fsync always`; Iggy IGGY_SYSTEM_PARTITION_ENFORCE_FSYNC=true with
#                              IGGY_SYSTEM_PARTITION_MESSAGES_REQUIRED_TO_SAVE=1 (each batch
#                              persisted, with fsync, before it is acknowledged)
# Each round runs every shape on both brokers (Iggy first in odd rounds, ringbroker first in even
# ones), each on a fresh server process over a fresh empty data directory, stopped afterwards.
# Both servers run with their defaults otherwise (one shard per core each; Iggy's stock
# core/server/config.toml with HTTP, QUIC and WebSocket switched off).
#
# Figures: MB/s = 10^6 payload bytes per second over the run (all actors' payload bytes / the
# time from the first actor's start to the last one's end: ringbench's own figure, and for Iggy
# computed the same way from iggy-bench's report.json; iggy-bench's own "total throughput", an
# average of its 10 ms samples, is shown next to it in the per-run lines). p99 = 99th percentile
# of the per-batch latency (produce acknowledgement or poll response) in ms: ringbench over all
# actors' batches; Iggy's the average of the per-actor p99s (what iggy-bench reports).
#
# Environment:
#   RINGBROKER_FLAGS=   extra ringbroker flags for every run, e.g. "--cache-growth 0" (take the
#                       batch cache at once, as a dedicated host would: a fresh broker otherwise
#                       grows it at 64 MiB/s, and the consumer shape's 2 GB fill mostly misses it)
#   COMPARE_DIR=${TMPDIR:-/tmp}/ringbroker-compare   data directories and logs (one
#                       subdirectory per invocation; data directories are removed after each
#                       benchmark, logs and results.tsv kept). Must be a real disk, not tmpfs
#                       (ringbroker uses O_DIRECT).
#   IGGY_TARGET_DIR=IGGY_SOURCE_TREE/target   cargo target directory of the Iggy build (reuse
#                       one across invocations: binaries built by this script from the same clean
#                       commit are not rebuilt)
#   IGGY_REBUILD=       set: rebuild Iggy even so
#   IGGY_TOOLCHAIN=     rustup toolchain for the Iggy build (default: the tree's
#                       rust-toolchain.toml pin if installed, else rustup's default, with a note)
#   RINGBROKER_BIN_DIR= directory holding already built ringbroker and ringbench binaries: skip
#                       the ringbroker build (default: build with cargo into CARGO_TARGET_DIR or
#                       target/)
#   COMPARE_BATCHES=1000  batches per actor (1000 messages each)
#   COMPARE_TIMEOUT=600   seconds one benchmark client may run before it is stopped
#   CARGO_BUILD_JOBS      honoured by both builds (cargo)
# Prerequisites: Debian packages libhwloc-dev, libudev-dev and pkg-config (Iggy's build), jq,
# timeout (coreutils), a Rust toolchain.
# Exit status: 0 if every benchmark ran, 1 if any failed, 64 on bad usage, 69 when a
# prerequisite is missing.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
root=$PWD

usage() {
    sed -n '4,9p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 64
}
(($# >= 1 && $# <= 2)) || usage
[[ -d $1 ]] || { echo "compare.sh: IGGY_SOURCE_TREE '$1' is not a directory" >&2; exit 64; }
iggy_tree=$(cd "$1" && pwd)
runs=${2:-3}
if ! [[ $runs =~ ^[0-9]+$ ]] || ((runs < 1 || runs > 100)); then
    echo "compare.sh: RUNS must be 1..100" >&2
    exit 64
fi
batches=${COMPARE_BATCHES:-1000}
if ! [[ $batches =~ ^[0-9]+$ ]] || ((batches < 1 || batches > 100000)); then
    echo "compare.sh: COMPARE_BATCHES must be 1..100000" >&2
    exit 64
fi
client_timeout=${COMPARE_TIMEOUT:-600}
if ! [[ $client_timeout =~ ^[0-9]+$ ]] || ((client_timeout < 10)); then
    echo "compare.sh: COMPARE_TIMEOUT must be a whole number of seconds, at least 10" >&2
    exit 64
fi
actors=2
batch=1000

log() { printf '[compare %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit "${2:-1}"; }

# -------------------------------------------------------------------------------- prerequisites
for tool in jq timeout cargo awk; do
    command -v "$tool" >/dev/null || die "'$tool' is required (not found on PATH)" 69
done
if command -v dpkg-query >/dev/null; then
    missing=()
    for pkg in libhwloc-dev libudev-dev pkg-config; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        log "Iggy's build needs these Debian packages, not installed: ${missing[*]}"
        log "install them with:  sudo apt-get install -y ${missing[*]}"
        exit 69
    fi
else
    log "WARNING: no dpkg-query: not a Debian system? Iggy's build needs hwloc and udev development files and pkg-config"
fi
[[ -f $iggy_tree/Cargo.toml && -f $iggy_tree/core/server/Cargo.toml && -d $iggy_tree/core/bench ]] ||
    die "$iggy_tree does not look like an Apache Iggy source tree (no core/server, core/bench)" 64

# The tag: a git tree must be at server-0.8.0 (several tags share that commit, so `git describe`
# alone may name another one); otherwise only the server package version can be checked.
iggy_version=$(awk -F'"' '/^version *=/ { print $2; exit }' "$iggy_tree/core/server/Cargo.toml")
iggy_ref="server $iggy_version"
if git -C "$iggy_tree" rev-parse --git-dir >/dev/null 2>&1; then
    iggy_commit=$(git -C "$iggy_tree" rev-parse HEAD)
    if git -C "$iggy_tree" tag --points-at HEAD | grep -qx 'server-0.8.0'; then
        iggy_ref="server-0.8.0 ($iggy_commit)"
    else
        described=$(git -C "$iggy_tree" describe --tags 2>/dev/null || echo "no tag")
        log "WARNING: $iggy_tree is not checked out at tag server-0.8.0 (HEAD $iggy_commit, git describe: $described)"
        log "WARNING: the figures are for that commit, not Iggy 0.8.0 (git -C $iggy_tree checkout server-0.8.0)"
        iggy_ref="$described ($iggy_commit)"
    fi
    if [[ -n $(git -C "$iggy_tree" status --porcelain --untracked-files=no 2>/dev/null) ]]; then
        log "WARNING: $iggy_tree has local changes"
    fi
else
    log "WARNING: $iggy_tree is not a git tree: cannot check the tag server-0.8.0 (core/server/Cargo.toml says version $iggy_version)"
fi
[[ $iggy_version == 0.8.0 ]] || log "WARNING: core/server/Cargo.toml says version $iggy_version, not 0.8.0"

compare_dir=${COMPARE_DIR:-${TMPDIR:-/tmp}/ringbroker-compare}
mkdir -p "$compare_dir"
compare_dir=$(cd "$compare_dir" && pwd)
fs_type=$(df -PT "$compare_dir" | awk 'NR == 2 { print $2 }')
[[ $fs_type != tmpfs && $fs_type != ramfs ]] ||
    die "COMPARE_DIR $compare_dir is on $fs_type: ringbroker needs O_DIRECT; point COMPARE_DIR at a disk" 64
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=$(mktemp -d "$compare_dir/$stamp.XXXX")
results=$out/results.tsv
printf 'run\tshape\tsystem\tstatus\tmb_per_s\tmsgs_per_s\tp99_ms\tiggy_bench_mb_per_s\n' >"$results"

server_pid=
client_pid=
server_data=
cleanup() {
    local status=$?
    if [[ -n $client_pid ]]; then kill -TERM "$client_pid" 2>/dev/null || true; fi
    if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$server_pid" 2>/dev/null || true
    fi
    if [[ -n $server_data ]]; then rm -rf "$server_data"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ----------------------------------------------------------------------------------------- build
# In the background, so that a signal runs the trap at once.
run_bg() { # $1 = time limit (s), rest = command; its exit status
    timeout --kill-after=10 "$1" "${@:2}" &
    client_pid=$!
    local rc=0
    wait "$client_pid" || rc=$?
    client_pid=
    return "$rc"
}

iggy_target=${IGGY_TARGET_DIR:-$iggy_tree/target}
iggy_toolchain=${IGGY_TOOLCHAIN:-}
if [[ -z $iggy_toolchain ]] && command -v rustup >/dev/null && [[ -f $iggy_tree/rust-toolchain.toml ]]; then
    pinned=$(awk -F'"' '/^channel *=/ { print $2; exit }' "$iggy_tree/rust-toolchain.toml")
    if [[ -n $pinned ]] && ! rustup toolchain list | grep -q "^$pinned"; then
        iggy_toolchain=$(rustup default | awk '{ print $1 }')
        log "NOTE: Iggy pins Rust $pinned (not installed): building it with $iggy_toolchain instead"
        log "NOTE: (rustup toolchain install $pinned, or IGGY_TOOLCHAIN=..., to choose)"
    fi
fi
iggy_server=$iggy_target/release/iggy-server
iggy_bench=$iggy_target/release/iggy-bench
# Iggy's server build script watches web/build/static (the web UI, a default feature), which a
# source checkout lacks: cargo then recompiles the server crate on every build (minutes). So a
# stamp next to the binaries records what they were built from, and a build from the same clean
# commit is not redone (IGGY_REBUILD=1 forces it).
stamp_file=$iggy_target/release/.compare-iggy-build
built_from="$iggy_ref toolchain=${iggy_toolchain:-default}"
if [[ -z ${IGGY_REBUILD:-} && -x $iggy_server && -x $iggy_bench && $iggy_ref == *'('*')' &&
    -z $(git -C "$iggy_tree" status --porcelain --untracked-files=no 2>/dev/null) &&
    $(cat "$stamp_file" 2>/dev/null) == "$built_from" ]]; then
    log "Iggy binaries in $iggy_target/release were built from $iggy_ref: not rebuilding (IGGY_REBUILD=1 forces it)"
else
    log "building Iggy ($iggy_ref) into $iggy_target (log: $out/iggy-build.log)"
    rm -f "$stamp_file"
    build_env=(CARGO_TARGET_DIR="$iggy_target")
    [[ -z $iggy_toolchain ]] || build_env+=(RUSTUP_TOOLCHAIN="$iggy_toolchain")
    if ! run_bg 7200 env -C "$iggy_tree" "${build_env[@]}" cargo build --release -p server -p iggy-bench \
        >"$out/iggy-build.log" 2>&1; then
        tail -n 20 "$out/iggy-build.log" >&2
        die "the Iggy build failed (see $out/iggy-build.log)"
    fi
    echo "$built_from" >"$stamp_file"
fi
[[ -x $iggy_server && -x $iggy_bench ]] || die "no $iggy_server or $iggy_bench after the build"

if [[ -n ${RINGBROKER_BIN_DIR:-} ]]; then
    rb_bin_dir=$(cd "$RINGBROKER_BIN_DIR" && pwd)
    log "using the ringbroker binaries in $rb_bin_dir (RINGBROKER_BIN_DIR; no build)"
else
    log "building ringbroker (log: $out/ringbroker-build.log)"
    if ! run_bg 3600 cargo build --release --bin ringbroker --bin ringbench >"$out/ringbroker-build.log" 2>&1; then
        tail -n 20 "$out/ringbroker-build.log" >&2
        die "the ringbroker build failed (see $out/ringbroker-build.log)"
    fi
    rb_bin_dir=${CARGO_TARGET_DIR:-$root/target}/release
fi
read -ra rb_flags <<<"${RINGBROKER_FLAGS:-}"
rb_server=$rb_bin_dir/ringbroker
rb_bench=$rb_bin_dir/ringbench
[[ -x $rb_server && -x $rb_bench ]] || die "no $rb_server or $rb_bench"

# ---------------------------------------------------------------------------------------- servers
# Free ports and waiting for a server to accept (shared with scripts/bench.sh).
# shellcheck source=scripts/lib/servers.sh
source "$root/scripts/lib/servers.sh"
ncpu=$(nproc)
port=

wait_accepting() { # $1 = what (for the log), $2 = server log; 0 once the port accepts
    if wait_accepting_on "$server_pid" "$port" "$1" "$2" 30; then return 0; fi
    kill -0 "$server_pid" 2>/dev/null || server_pid=
    return 1
}

start_iggy() { # $1 = label, $2 = fsync (0/1); a fresh data directory
    port=$(free_port_block 0) || { log "no free port"; return 1; }
    server_data=$(mktemp -d "$out/data-$1.XXXX")
    local env_fsync=(IGGY_SYSTEM_PARTITION_ENFORCE_FSYNC=false)
    if (($2)); then
        env_fsync=(IGGY_SYSTEM_PARTITION_ENFORCE_FSYNC=true IGGY_SYSTEM_PARTITION_MESSAGES_REQUIRED_TO_SAVE=1)
    fi
    # Run from the data directory, so that nothing lands anywhere else.
    (cd "$server_data" && exec env IGGY_CONFIG_PATH="$iggy_tree/core/server/config.toml" \
        IGGY_SYSTEM_PATH="$server_data/iggy" IGGY_TCP_ADDRESS="127.0.0.1:$port" \
        IGGY_HTTP_ENABLED=false IGGY_QUIC_ENABLED=false IGGY_WEBSOCKET_ENABLED=false \
        IGGY_ROOT_USERNAME=iggy IGGY_ROOT_PASSWORD=iggy "${env_fsync[@]}" \
        "$iggy_server" --with-default-root-credentials) >"$out/$1.server.log" 2>&1 &
    server_pid=$!
    wait_accepting "iggy-server" "$out/$1.server.log"
}

start_ringbroker() { # $1 = label, $2 = fsync (0/1), rest = extra flags; a fresh data directory
    port=$(free_port_block "$ncpu") || { log "no free ports"; return 1; }
    server_data=$(mktemp -d "$out/data-$1.XXXX")
    local fsync=never
    (($2)) && fsync=always
    env RINGBROKER_ROOT_USER=ringbroker RINGBROKER_ROOT_PASSWORD=ringbroker \
        "$rb_server" --data-dir "$server_data/ringbroker" --listen "127.0.0.1:$port" --fsync "$fsync" \
        "${rb_flags[@]}" "${@:3}" >"$out/$1.server.log" 2>&1 &
    server_pid=$!
    wait_accepting "ringbroker" "$out/$1.server.log"
}

stop_server() { # SIGTERM, up to 15 s, then SIGKILL; removes the data directory
    if [[ -n $server_pid ]]; then
        kill -TERM "$server_pid" 2>/dev/null || true
        for _ in $(seq 150); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$server_pid" 2>/dev/null; then
            log "   server did not stop within 15 s: killed"
            kill -KILL "$server_pid" 2>/dev/null || true
        fi
        wait "$server_pid" 2>/dev/null || true
        server_pid=
    fi
    if [[ -n $server_data ]]; then rm -rf "$server_data"; fi
    server_data=
}

# ---------------------------------------------------------------------------------------- clients
# Each sets: mbps msgps p99 own (iggy-bench's own MB/s; "-" for ringbench); returns nonzero on
# failure.
iggy_bench_run() { # $1 = label, $2 = pinned-producer|pinned-consumer, $3 = message size
    local label=$1 kind=$2 size=$3 dir actor_flag
    dir=$out/$label.iggy-bench
    actor_flag=--producers
    [[ $kind == pinned-consumer ]] && actor_flag=--consumers
    local cmd=("$iggy_bench" --message-size "$size" --messages-per-batch "$batch" --message-batches "$batches"
        --warmup-time 0s --username iggy --password iggy
        "$kind" "$actor_flag" "$actors" --streams "$actors"
        tcp --server-address "127.0.0.1:$port" --nodelay output --output-dir "$dir")
    echo "+ ${cmd[*]}" >>"$out/$label.client.log"
    run_bg "$client_timeout" "${cmd[@]}" >>"$out/$label.client.log" 2>&1 || return $?
    local report
    report=$(find "$dir" -name report.json -print -quit 2>/dev/null)
    [[ -n $report ]] || { log "   no report.json under $dir"; return 1; }
    # The same definition as ringbench: all payload bytes over the longest actor's time.
    read -r mbps msgps p99 own < <(jq -r '
        [.individual_metrics[].summary] as $a
        | ($a | map(.total_time_secs) | max) as $t
        | .group_metrics[0].summary as $g
        | [ (($a | map(.total_user_data_bytes) | add) / $t / 1e6),
            (($a | map(.total_messages) | add) / $t),
            $g.average_p99_latency_ms,
            $g.total_throughput_megabytes_per_second ]
        | map(. * 100 | round / 100) | @tsv' "$report") || return 1
    [[ -n $mbps ]]
}

ringbench_run() { # $1 = label, $2 = pinned-producer|pinned-consumer, $3 = message size
    local label=$1 kind=$2 size=$3 json
    json=$out/$label.ringbench.json
    local cmd=("$rb_bench" --server "127.0.0.1:$port" "$kind" --producers "$actors" --streams 1
        --partitions "$actors" --message-size "$size" --batch "$batch" --batches "$batches" --warmup 0
        --json "$json")
    [[ $kind == pinned-consumer ]] && cmd+=(--consumers "$actors")
    echo "+ ${cmd[*]}" >>"$out/$label.client.log"
    RINGBROKER_USER=ringbroker RINGBROKER_PASSWORD=ringbroker run_bg "$client_timeout" "${cmd[@]}" \
        >>"$out/$label.client.log" 2>&1 || return $?
    read -r mbps msgps p99 < <(jq -r '[.total.mb_per_s, .total.msgs_per_s, .latency_us.p99 / 1000]
        | map(. * 100 | round / 100) | @tsv' "$json") || return 1
    own=-
    [[ -n $mbps ]]
}

# ----------------------------------------------------------------------------------------- shapes
# name | message size | fsync | consumer (fill first, measure the read) | extra ringbroker flags
# The cache-at-once shape is the consumer shape with ringbroker's batch cache taken whole at
# start-up (`--cache-growth 0`, tuning/throughput.flags): a fresh ringbroker otherwise grows its
# cache at 64 MiB/s, so most of the 2 GB fill is read back from disk. Iggy runs it unchanged.
shapes=(
    "pinned-producer-1KB|1000|0|0"
    "pinned-consumer-1KB|1000|0|1"
    "pinned-consumer-1KB-cache-at-once|1000|0|1|--cache-growth 0"
    "pinned-producer-100B|100|0|0"
    "pinned-producer-1KB-fsync|1000|1|0"
)

failures=0
run_one() { # $1 = run, $2 = system (iggy|ringbroker), $3 = shape spec
    local r=$1 sys=$2 name size fsync consumer extra label status=ok
    IFS='|' read -r name size fsync consumer extra <<<"$3"
    local extra_flags=()
    read -ra extra_flags <<<"${extra:-}"
    label=r$r-$name-$sys
    mbps=- msgps=- p99=- own=-
    log "run $r/$runs  $name  $sys"
    if [[ $sys == iggy ]]; then
        if ! start_iggy "$label" "$fsync"; then
            status=server-start-failed
        elif ((consumer)) && ! iggy_bench_run "$label-fill" pinned-producer "$size"; then
            status=fill-failed
        elif ! iggy_bench_run "$label" "$([[ $consumer == 1 ]] && echo pinned-consumer || echo pinned-producer)" "$size"; then
            status=bench-failed
        fi
    else
        if ! start_ringbroker "$label" "$fsync" "${extra_flags[@]}"; then
            status=server-start-failed
        elif ! ringbench_run "$label" "$([[ $consumer == 1 ]] && echo pinned-consumer || echo pinned-producer)" "$size"; then
            status=bench-failed
        fi
    fi
    stop_server
    if [[ $status != ok ]]; then
        failures=$((failures + 1))
        mbps=- msgps=- p99=- own=-
        log "   FAILED: $status (logs: $out/$label.*)"
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$name" "$sys" "$status" "$mbps" "$msgps" "$p99" "$own" >>"$results"
    printf '[run %d/%d] %-34s %-10s %10s MB/s %12s msg/s  p99 %8s ms%s\n' "$r" "$runs" "$name" "$sys" \
        "$mbps" "$msgps" "$p99" "$([[ $own != - ]] && echo "  (iggy-bench's own figure: $own MB/s)")"
}

if [[ -n ${RINGBROKER_BIN_DIR:-} ]]; then
    # Prebuilt: the checkout's commit says nothing about what they were built from.
    rb_ref="prebuilt in $rb_bin_dir ($("$rb_server" --version 2>/dev/null || echo "version unknown"))"
else
    rb_ref=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
    [[ -z $(git -C "$root" status --porcelain --untracked-files=no 2>/dev/null) ]] || rb_ref="$rb_ref with local changes"
fi
log "Iggy: $iggy_ref; ringbroker: $rb_ref"
log "$runs round(s), $actors actors x $batches batches x $batch messages; $ncpu cores; data and logs in $out"
for ((r = 1; r <= runs; r++)); do
    for spec in "${shapes[@]}"; do
        if ((r % 2)); then order=(iggy ringbroker); else order=(ringbroker iggy); fi
        for sys in "${order[@]}"; do run_one "$r" "$sys" "$spec"; done
    done
done

# ---------------------------------------------------------------------------------------- summary
# Medians per shape and system over the runs that succeeded; ratios ringbroker / Iggy (throughput
# above 1: ringbroker faster; p99 below 1: ringbroker lower).
median() { # numbers on stdin -> median, or "-"
    sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
column_median() { # $1 = shape, $2 = system, $3 = column number
    awk -F'\t' -v s="$1" -v y="$2" -v c="$3" 'NR > 1 && $2 == s && $3 == y && $4 == "ok" { print $c }' "$results" | median
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f\n", a / b }'; }

echo
echo "Medians over $runs run(s) ($actors actors x $batches batches x $batch messages; Iggy $iggy_ref; ringbroker $rb_ref):"
printf '%-34s %-6s %12s %12s %8s | %9s %9s %8s\n' shape unit Iggy ringbroker "rb/Iggy" "p99 Iggy" "p99 rb" "rb/Iggy"
for spec in "${shapes[@]}"; do
    name=${spec%%|*}
    unit=MB/s col=5
    if [[ $name == *100B* ]]; then unit=msg/s col=6; fi
    ti=$(column_median "$name" iggy "$col")
    tr=$(column_median "$name" ringbroker "$col")
    li=$(column_median "$name" iggy 7)
    lr=$(column_median "$name" ringbroker 7)
    printf '%-34s %-6s %12s %12s %8s | %9s %9s %8s\n' "$name" "$unit" "$ti" "$tr" "$(ratio "$tr" "$ti")" \
        "$li" "$lr" "$(ratio "$lr" "$li")"
done
echo "(p99 in ms; per-run figures in $results, logs in $out)"
((failures == 0)) || { log "$failures benchmark(s) failed"; exit 1; }
