#!/usr/bin/env bash
# Ingest benchmark: starts a release server on a scratch data dir, replays
# generated OTLP batches over gRPC and HTTP with the load generator, and runs
# the decode-only baseline over the same payloads. Prints one JSON line per run.
# Usage: scripts/bench-ingest.sh [seconds per run, default 20]
# EXTRA_SERVE_ARGS passes more flags to `otelhouse serve`.
set -euo pipefail
SECS="${1:-20}"
source "$(dirname "$0")/serve-scratch.sh"

for gz in "" "--gzip"; do
  "$LOADGEN" decode --signal logs $gz --batch 500 --seconds 5 --json | tail -1
done
"$LOADGEN" decode --signal logs --stage pipeline --batch 500 --seconds 5 --json | tail -1
"$LOADGEN" send --signal logs --protocol grpc --endpoint "$GRPC" --key "$KEY" --batch 500 --concurrency 8 --duration "${SECS}s" --server-pid $PID --json | tail -1
"$LOADGEN" send --signal logs --protocol http --endpoint "$HTTP" --key "$KEY" --batch 500 --concurrency 8 --duration "${SECS}s" --server-pid $PID --json | tail -1
"$LOADGEN" send --signal logs --protocol http --gzip --endpoint "$HTTP" --key "$KEY" --batch 500 --concurrency 8 --duration "${SECS}s" --server-pid $PID --json | tail -1
"$LOADGEN" send --signal traces --protocol grpc --endpoint "$GRPC" --key "$KEY" --batch 500 --concurrency 8 --duration "${SECS}s" --server-pid $PID --json | tail -1

# Storage: stop cleanly (the tail is written to parts), then bytes per record.
RECORDS=$(curl -s "http://$API/metrics" | awk '/^otelhouse_records_accepted_total/ {n += $2} END {print n}')
kill -TERM $PID; wait $PID 2>/dev/null || true
BYTES=$(du -sb "$DATA/parts" | cut -f1)
python3 -c 'import json,sys; r,b=int(float(sys.argv[1])),int(sys.argv[2]); print(json.dumps({"stored_records": r, "part_bytes": b, "bytes_per_record": round(b/r, 1)}))' "$RECORDS" "$BYTES"
