#!/usr/bin/env bash
# Runs the batch and storage criterion benchmarks and prints each median (time and throughput).
# Usage: scripts/bench-storage.sh [criterion filter]
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp)
cargo bench --bench batch --bench storage -- "$@" 2>&1 | tee "$out"
echo
echo "== medians (name, time, throughput)"
awk '
  /^[A-Za-z_0-9]+\/[^ ]+/ { name = $1 }
  /^ *([^ ]+ +)?time:/ && !/change/ { match($0, /\[[^]]*\]/); split(substr($0, RSTART + 1, RLENGTH - 2), t, " "); time = t[3] " " t[4]; if (name != "") pending = name }
  /thrpt:/ && !/%/ { match($0, /\[[^]]*\]/); split(substr($0, RSTART + 1, RLENGTH - 2), r, " "); if (pending != "") { print pending, time, r[3] " " r[4]; pending = "" } }
  /^ *([^ ]+ +)?time:/ && !/%/ && name ~ /index/ { print name, time; pending = "" }
' "$out"
rm -f "$out"
