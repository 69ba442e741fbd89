#!/usr/bin/env bash
# Fuzzes every file loader with `affinity fuzz` (a seeded mutation loop, see
# Sources/affinity/FuzzCommand.swift) for a bounded time and prints, per loader: inputs tried,
# seconds, crashes or hangs found. A crashing or hanging input is kept under OUT/crashes/ and
# replayed once more to confirm; copy confirmed ones into Tests/Fixtures/fuzz/ as regression
# fixtures (FuzzFixtureTests loads each and expects a clean rejection or acceptance).
#
#   Benchmarks/fuzz/run.sh [SECONDS_PER_LOADER] [OUT]        (defaults: 60, /tmp/affinity-fuzz)
#   AFFINITY=path/to/affinity Benchmarks/fuzz/run.sh ...      (default: builds and uses the release binary)
#
# Memory is capped (ulimit -v) so that an input asking for terabytes fails at once instead of
# swapping; each process is stopped after its time plus 30 s, so a hang is caught too.
set -uo pipefail
cd "$(dirname "$0")/../.."
SECONDS_PER=${1:-60}
OUT=${2:-/tmp/affinity-fuzz}
if [ -z "${AFFINITY:-}" ]; then
  swift build -c release --product affinity >/dev/null || exit 1
  AFFINITY="$(swift build -c release --show-bin-path)/affinity"
fi
LOADERS=${LOADERS:-"safetensors model npy fvecs ivecs interactions split index-flat index-hnsw index-ivf index-ivfpq index-lsh"}
mkdir -p "$OUT/crashes"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) (family $(grep -m1 'cpu family' /proc/cpuinfo | cut -d: -f2 | xargs), model $(grep -m1 '^model\s' /proc/cpuinfo | cut -d: -f2 | xargs))"
printf '%-14s %10s %8s %8s\n' loader inputs seconds crashes
total_crashes=0
for loader in $LOADERS; do
  work="$OUT/work-$loader"
  start=$(date +%s.%N)
  inputs=0 crashes=0 seed=1
  while :; do
    elapsed=$(echo "$(date +%s.%N) - $start" | bc)
    left=$(echo "$SECONDS_PER - $elapsed" | bc)
    if [ "$(echo "$left < 1" | bc)" = 1 ]; then break; fi
    rm -rf "$work"; mkdir -p "$work"
    ( ulimit -v 8000000; timeout -s KILL "$(echo "$left + 30" | bc)" "$AFFINITY" fuzz --loader "$loader" --seconds "$left" --seed "$seed" --work "$work" >"$work/stdout" 2>"$work/stderr" )
    rc=$?
    n=$(cat "$work/count" 2>/dev/null || echo 0)
    inputs=$((inputs + n))
    if [ $rc -ne 0 ]; then
      crashes=$((crashes + 1))
      keep="$OUT/crashes/$loader-seed$seed"
      rm -rf "$keep"; cp -r "$work/current" "$keep"
      head -40 "$work/stderr" > "$keep.log"
      echo "  crash (exit $rc) in $loader, seed $seed: kept $keep ($(grep -m1 -E "Fatal error|Crash|error:" "$work/stderr" | head -c 200))"
    fi
    seed=$((seed + 1))
  done
  elapsed=$(echo "$(date +%s.%N) - $start" | bc)
  printf '%-14s %10d %8.1f %8d\n' "$loader" "$inputs" "$elapsed" "$crashes"
  total_crashes=$((total_crashes + crashes))
done
echo "crashes: $total_crashes"
