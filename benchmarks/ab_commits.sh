#!/bin/bash
# A/B of two commits on the same file, same server, same run: ingest time, then the query
# latencies (benchmarks/queries.py) alternately A, B, A, B.
#   benchmarks/ab_commits.sh REV_A REV_B ROWS   (REV_B may be "WORKTREE" for uncommitted code)
# Needs the local cluster (or DATABASE_URL's server); writes benchmarks/results/ab-<rows>-<date>.log
set -euo pipefail
A=$1; B=$2; ROWS=${3:-10000000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=$ROOT/.venv/bin/python
SERVER=$($ROOT/.venv/bin/trips db url | sed 's|/[^/]*$||')
DATA=${TRIPS_BENCH_DATA:-/var/tmp/trips-bench}
FILE=$DATA/ab-$ROWS.csv
OUT=$ROOT/benchmarks/results/ab-$ROWS-$(date -u +%Y-%m-%d).log
mkdir -p "$DATA"
test -f "$FILE" || $PY -m service.cli generate --rows "$ROWS" --out "$FILE" --seed 42
tree() {  # the source tree of a revision
  if [ "$1" = WORKTREE ]; then echo "$ROOT"; return; fi
  local dir=$DATA/ab-$1; rm -rf "$dir"; git -C "$ROOT" worktree add -f --detach "$dir" "$1" >/dev/null
  echo "$dir"
}
TA=$(tree "$A"); TB=$(tree "$B")
echo "A=$A B=$B rows=$ROWS file=$FILE $(date -u +%FT%TZ)" | tee "$OUT"
for v in a b; do
  dir=$TA; [ $v = b ] && dir=$TB
  psql -q "$SERVER/postgres" -c "DROP DATABASE IF EXISTS ab_$v" -c "CREATE DATABASE ab_$v"
  s=$(date +%s.%N)
  (cd "$dir" && DATABASE_URL=$SERVER/ab_$v $PY -m service.cli ingest "$FILE" >/dev/null)
  echo "ingest $v $(echo "$(date +%s.%N) - $s" | bc) s" | tee -a "$OUT"
done
for v in a b a b; do
  (cd "$ROOT" && $PY -m benchmarks.queries --database-url "$SERVER/ab_$v" \
      --out "$DATA/ab-q-$v.json" >/dev/null)
  $PY -c "import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[2], {k: (v['p50_ms'], v['p95_ms']) for k, v in d.items() if isinstance(v, dict) and 'p95_ms' in v})" \
      "$DATA/ab-q-$v.json" "$v" | tee -a "$OUT"
done
