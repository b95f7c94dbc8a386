#!/usr/bin/env bash
# The long crash test: SIGKILLs the real broker again and again under load (producers and a
# consumer group) on one data directory, restarting it each time and checking that every
# acknowledged message is still at its offset, byte for byte, with no gaps, no duplicates and no
# group offset ahead of the data. See docs/crash-test.md for what is checked.
#
# Usage: scripts/crash-test.sh [cycles]
# Environment:
#   CRASH_CYCLES    number of kill/restart cycles (default 200; the argument wins)
#   CRASH_SEED      seed of the schedule, decimal or 0x-hex (default: fresh, printed first;
#                   rerun with it to replay the same kill moments, batches and payloads)
#   CRASH_FSYNC     `always` (default: no acknowledged message may be lost), `interval=MS`
#                   (losses are counted and must lie within MS + 250 ms before the kill) or
#                   `never` (losses are counted and must lie within 500 ms before the kill)
#   CRASH_KILL_MS   MIN-MAX, how long after the load starts the kill comes (default 100-3000)
#   CRASH_PAUSE_MS  longest pause between two requests of a producer lane (default 10)
#   RUST_LOG        the restarted broker's log filter (default error; warn shows recovery repairs)
#   BUILD_TIMEOUT   seconds the release build may take (default 1800)
#   CRASH_TIMEOUT   seconds the whole run may take (default: 30 per cycle, at least 600)
# Exits non-zero on the first violation; the test prints the seed and keeps the data directory.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -gt 1 ]; then
  echo "usage: scripts/crash-test.sh [cycles]" >&2
  exit 2
fi
export CRASH_CYCLES=${1:-${CRASH_CYCLES:-200}}
case "$CRASH_CYCLES" in
  '' | *[!0-9]*) echo "crash-test: cycles must be a number, not '$CRASH_CYCLES'" >&2; exit 2 ;;
esac
export CRASH_FSYNC=${CRASH_FSYNC:-always}
build_timeout=${BUILD_TIMEOUT:-1800}
run_timeout=${CRASH_TIMEOUT:-$(( CRASH_CYCLES * 30 > 600 ? CRASH_CYCLES * 30 : 600 ))}

echo "== building the crash test (release)"
timeout "$build_timeout" cargo test --release --test crash --no-run

echo "== ${CRASH_CYCLES} cycles, --fsync ${CRASH_FSYNC}, seed ${CRASH_SEED:-fresh}"
timeout "$run_timeout" cargo test --release --test crash -- --ignored --nocapture crash_cycles_long
