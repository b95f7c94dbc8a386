#!/usr/bin/env bash
# Builds the broker and the client examples (release), starts the broker on a fresh temporary
# data directory and free loopback ports, runs every example against it (each under `timeout`),
# stops the broker with SIGTERM, and prints a summary. Exits non-zero if any example failed or
# the broker misbehaved.
#
# Usage: scripts/run-examples.sh [example ...]        (default: all of them, in order)
# Environment:
#   RINGBROKER_EXAMPLES_PORT  first listener port to try (default 17720; the two shard ports
#                             follow it)
#   EXAMPLE_TIMEOUT           seconds each example may run (default 60)
#   BUILD_TIMEOUT             seconds the build may take (default 1800)
#   CARGO_TARGET_DIR          where cargo builds (default target)
set -uo pipefail
cd "$(dirname "$0")/.."

examples=(
  shared_stream
  consumer_other_streams
  producers_other_streams
  consumers_at_runtime
  producers_at_runtime
  consumer_group
  filter_by_region
  single_active
  super_stream
  interest_retention
  work_queue
)
if [ $# -gt 0 ]; then
  examples=("$@")
fi
example_timeout=${EXAMPLE_TIMEOUT:-60}
build_timeout=${BUILD_TIMEOUT:-1800}
shards=2
target_dir=${CARGO_TARGET_DIR:-target}
start_timeout_tenths=300 # 30 s for the broker to accept connections
stop_timeout_tenths=150  # 15 s for it to exit after SIGTERM

echo "== building the broker and the examples (release)"
if ! timeout "$build_timeout" cargo build --release --bin ringbroker --examples; then
  echo "run-examples: the build failed" >&2
  exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/ringbroker-examples.XXXXXX")
broker_pid=""
cleanup() {
  if [ -n "$broker_pid" ] && kill -0 "$broker_pid" 2>/dev/null; then
    kill -KILL "$broker_pid" 2>/dev/null
    wait "$broker_pid" 2>/dev/null
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Whether something accepts connections on 127.0.0.1:$1.
accepting() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# A listener port with the shard ports after it all unused.
port=""
candidate=${RINGBROKER_EXAMPLES_PORT:-17720}
for _ in $(seq 1 20); do
  busy=0
  for offset in $(seq 0 "$shards"); do
    if accepting $((candidate + offset)); then
      busy=1
      break
    fi
  done
  if [ "$busy" -eq 0 ]; then
    port=$candidate
    break
  fi
  candidate=$((candidate + 10))
done
if [ -z "$port" ]; then
  echo "run-examples: no free loopback ports found" >&2
  exit 1
fi

echo "== starting the broker on 127.0.0.1:$port (shard ports $((port + 1))..$((port + shards)), data in $work/data)"
RUST_LOG=${RUST_LOG:-warn} "$target_dir/release/ringbroker" \
  --data-dir "$work/data" \
  --listen "127.0.0.1:$port" \
  --shard-port-base $((port + 1)) \
  --shards "$shards" \
  >"$work/broker.log" 2>&1 &
broker_pid=$!

ready=0
for _ in $(seq 1 "$start_timeout_tenths"); do
  if ! kill -0 "$broker_pid" 2>/dev/null; then
    break
  fi
  if accepting "$port"; then
    ready=1
    break
  fi
  sleep 0.1
done
if [ "$ready" -ne 1 ]; then
  echo "run-examples: the broker did not start; its log:" >&2
  cat "$work/broker.log" >&2
  exit 1
fi

export RINGBROKER_URL="ringbroker://ringbroker:ringbroker@127.0.0.1:$port"
results=()
failed=0
for example in "${examples[@]}"; do
  echo
  echo "== example $example"
  started=$(date +%s%N)
  timeout "$example_timeout" "$target_dir/release/examples/$example"
  status=$?
  elapsed_ms=$((($(date +%s%N) - started) / 1000000))
  elapsed=$(printf '%d.%03d s' $((elapsed_ms / 1000)) $((elapsed_ms % 1000)))
  if [ "$status" -eq 0 ]; then
    results+=("ok      $example ($elapsed)")
  else
    if [ "$status" -eq 124 ]; then
      reason="timed out after ${example_timeout} s"
    else
      reason="exit status $status"
    fi
    results+=("FAILED  $example ($reason, $elapsed)")
    failed=$((failed + 1))
  fi
done

echo
echo "== stopping the broker (SIGTERM)"
kill -TERM "$broker_pid"
stopped=0
for _ in $(seq 1 "$stop_timeout_tenths"); do
  if ! kill -0 "$broker_pid" 2>/dev/null; then
    stopped=1
    break
  fi
  sleep 0.1
done
if [ "$stopped" -eq 1 ]; then
  wait "$broker_pid"
  broker_status=$?
  broker_pid=""
  if [ "$broker_status" -ne 0 ]; then
    echo "run-examples: the broker exited with status $broker_status; its log:" >&2
    cat "$work/broker.log" >&2
    failed=$((failed + 1))
  fi
else
  echo "run-examples: the broker did not stop within $((stop_timeout_tenths / 10)) s; killing it" >&2
  failed=$((failed + 1))
fi

echo
echo "== summary"
printf '  %s\n' "${results[@]}"
if [ "$failed" -ne 0 ]; then
  echo "run-examples: $failed failure(s)" >&2
  if [ -s "$work/broker.log" ]; then
    echo "broker log (last 40 lines):" >&2
    tail -n 40 "$work/broker.log" >&2
  fi
  exit 1
fi
echo "all ${#examples[@]} examples passed"
