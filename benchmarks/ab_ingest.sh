#!/bin/bash
# A/B of `trips ingest` for two commits on one file, same server: A B B A, ROUNDS times, each run
# into a fresh database (migrated by its own commit), so that a slow stretch of a shared machine
# hits both sides alike. Compare the medians, and the adjacent pairs.
#   benchmarks/ab_ingest.sh REV_A REV_B FILE [ROUNDS]   (REV_B may be "WORKTREE")
# The trees of older commits are git worktrees under $TRIPS_BENCH_DATA; every command is pointed
# at this checkout's server with DATABASE_URL (a worktree's own `trips` would start a cluster of
# its own). Appends to benchmarks/results/ab-ingest-<date>.log
set -euo pipefail
A=$1; B=$2; FILE=$3; ROUNDS=${4:-2}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=$ROOT/.venv/bin/python
SERVER=$(cd "$ROOT" && $ROOT/.venv/bin/trips db url | sed 's|/[^/]*$||')
DATA=${TRIPS_BENCH_DATA:-/var/tmp/trips-bench}
OUT=$ROOT/benchmarks/results/ab-ingest-$(date -u +%Y-%m-%d).log
tree() {
  if [ "$1" = WORKTREE ]; then echo "$ROOT"; return; fi
  local dir=$DATA/ab-$1
  [ -d "$dir" ] || git -C "$ROOT" worktree add -f --detach "$dir" "$1" >/dev/null
  echo "$dir"
}
TA=$(tree "$A"); TB=$(tree "$B")
echo "A=$A B=$B file=$FILE rounds=$ROUNDS $(date -u +%FT%TZ)" | tee -a "$OUT"
for _ in $(seq "$ROUNDS"); do
  for v in a b b a; do
    dir=$TA; [ $v = b ] && dir=$TB
    psql -q "$SERVER/postgres" -c "DROP DATABASE IF EXISTS ab_ingest_$v" \
         -c "CREATE DATABASE ab_ingest_$v" 2>/dev/null
    (cd "$dir" && DATABASE_URL=$SERVER/ab_ingest_$v $PY -m service.cli db migrate >/dev/null)
    s=$(date +%s.%N)
    (cd "$dir" && DATABASE_URL=$SERVER/ab_ingest_$v $PY -m service.cli ingest "$FILE" >/dev/null 2>&1)
    echo "$v $(echo "$(date +%s.%N) - $s" | bc) s" | tee -a "$OUT"
  done
done
for v in a b; do psql -q "$SERVER/postgres" -c "DROP DATABASE IF EXISTS ab_ingest_$v"; done
