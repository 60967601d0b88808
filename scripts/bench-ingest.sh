#!/usr/bin/env bash
# Ingest benchmark: starts a release server on a scratch data dir, replays
# generated OTLP batches over gRPC and HTTP with the load generator, and runs
# the decode-only baseline over the same payloads. Prints one JSON line per run.
# Usage: scripts/bench-ingest.sh [seconds per run, default 20]
# EXTRA_SERVE_ARGS passes more flags to `otelhouse serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/otelhouse-target}"
SECS="${1:-20}"
cargo build --release --workspace --bins -q
BIN="$CARGO_TARGET_DIR/release/otelhouse"
LOADGEN="$CARGO_TARGET_DIR/release/otelhouse-loadgen"
DATA="$(mktemp -d)/data"
KEY=$("$BIN" init --data-dir "$DATA" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["ingestion_key"])')
read -r -a EXTRA <<< "${EXTRA_SERVE_ARGS:-}"
"$BIN" serve --data-dir "$DATA" --otlp-grpc-addr 127.0.0.1:0 --otlp-http-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 "${EXTRA[@]}" 2>"$DATA.log" &
PID=$!
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -rf "$(dirname "$DATA")"' EXIT

for _ in $(seq 100); do [ -f "$DATA/listen.json" ] && break; sleep 0.1; done
GRPC=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["otlp_grpc"])' "$DATA/listen.json")
HTTP=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["otlp_http"])' "$DATA/listen.json")
API=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["http"])' "$DATA/listen.json")

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
