#!/usr/bin/env bash
# Sustained ingest: one gRPC logs sender at full load for SECS (default 300)
# against a release server on a scratch data dir, printing the part count,
# merges done, records accepted and server CPU every 30 s, then waiting
# until the server is idle (its merges done) and printing the records per
# server CPU-second all told. The 10-s runs of bench-ingest.sh end before
# the first merge; this is what a record costs once its merges are done.
# Usage: scripts/bench-sustained.sh [seconds, default 300]
set -euo pipefail
SECS="${1:-300}"
source "$(dirname "$0")/serve-scratch.sh"

cpu() { awk '{print ($14+$15)/100}' "/proc/$PID/stat"; }
metrics() { curl -s "http://$API/metrics" | awk '/^otelhouse_(parts|merges_total|merged_rows_total) / {printf "%s=%s ", $1, $2} /^otelhouse_records_accepted_total/ {n += $2} END {printf "records=%d", n}'; }

"$LOADGEN" send --signal logs --protocol grpc --endpoint "$GRPC" --key "$KEY" --batch 500 --concurrency 8 --duration "${SECS}s" --server-pid $PID --json > "$DATA.send" &
SENDER=$!
for i in $(seq $((SECS / 30))); do
  sleep 30
  echo "$((i * 30)) s: cpu=$(cpu) $(metrics)"
done
wait $SENDER
tail -1 "$DATA.send"
# Idle = under 0.5 CPU-s in 10 s: the merges the policy wants are done.
while true; do
  a=$(cpu); sleep 10; b=$(cpu)
  awk -v a="$a" -v b="$b" 'BEGIN {exit !(b - a < 0.5)}' && break
done
RECORDS=$(curl -s "http://$API/metrics" | awk '/^otelhouse_records_accepted_total/ {n += $2} END {print n}')
echo "idle: cpu=$(cpu) $(metrics)"
python3 -c 'import json,sys; r,c=int(float(sys.argv[1])),float(sys.argv[2]); print(json.dumps({"records": r, "server_cpu_seconds_all_told": c, "records_per_server_cpu_second_all_told": round(r/c)}))' "$RECORDS" "$(cpu)"
