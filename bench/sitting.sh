#!/usr/bin/env bash
# A benchmark sitting: two builds of the microbenchmark compared row by row, then Ray's.
#
#   bench/sitting.sh BEFORE AFTER OUT [RAY_RUNNER]
#
# BEFORE and AFTER are microbenchmark executables (e.g. ../tgt-before/release/examples/
# microbenchmark and target/release/examples/microbenchmark). Each row of bench/rows.txt runs in
# its own process, and a row's runs of the two binaries are made back to back, interleaved
# (B A A B B A A B embedded, B A A B B A A B B A over two nodes), so that the host's drift over
# the hour a sitting takes falls on both alike. Then the sync rows while two `yes` processes
# keep the cores busy, then Ray's microbenchmark if RAY_RUNNER is given
# (../shared/peer/ray-microbenchmark). Run nothing else meanwhile. `bench/tables.py OUT` prints
# the tables of BENCHMARKS.md from OUT.
set -u
[ $# -ge 3 ] || { sed -n 4,13p "$0"; exit 2; }
B=$1 A=$2 O=$3 RAY=${4:-}
ROWS="$(dirname "$0")/rows.txt"
mkdir -p "$O"
date -u +%H:%M > "$O/start.txt"
sweep() { # prefix order extra-args...
  local prefix=$1 order=$2; shift 2
  local i=0 row r w
  while IFS= read -r row; do
    i=$((i+1))
    for r in $order; do
      w=${r:0:1}
      "${!w}" "$@" --filter "$row" > "$O/$prefix-$w-$(printf %02d $i)-${r:1}.txt" 2>&1
    done
  done < "$ROWS"
}
sweep emb "B1 A1 A2 B2 B3 A3 A4 B4"
date -u +%H:%M > "$O/2n-start.txt"
sweep 2n "B1 A1 A2 B2 B3 A3 A4 B4 B5 A5" --two-nodes
date -u +%H:%M > "$O/load-start.txt"
yes > /dev/null & Y1=$!
yes > /dev/null & Y2=$!
"$B" --filter sync > "$O/load-B-1.txt" 2>&1; "$A" --filter sync > "$O/load-A-1.txt" 2>&1
"$A" --filter sync > "$O/load-A-2.txt" 2>&1; "$B" --filter sync > "$O/load-B-2.txt" 2>&1
kill $Y1 $Y2
if [ -n "$RAY" ]; then
  date -u +%H:%M > "$O/ray-start.txt"
  for g in "single client" "multi client" "1:1" "1:n" "n:n" "placement"; do
    TESTS_TO_RUN="$g" "$RAY" "$O/ray-$g.txt"
  done
fi
"$A" --filter "lumen: i" > "$O/extra-emb.txt" 2>&1
"$A" --two-nodes --filter "lumen: i" > "$O/extra-2n.txt" 2>&1
date -u +%H:%M > "$O/end.txt"
