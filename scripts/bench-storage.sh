#!/usr/bin/env bash
# Runs the storage and batch criterion benchmarks and prints each median.
# Usage: scripts/bench-storage.sh [criterion filter]
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp)
cargo bench --bench batch --bench storage -- "$@" 2>&1 | tee "$out"
echo
echo "== medians"
awk '/^[a-z_0-9]+\/[A-Za-z_0-9]+/ { name = $1 } /time:/ { print name, "time", $4, $5 } /thrpt:/ { print name, "thrpt", $4, $5 }' "$out"
rm -f "$out"
