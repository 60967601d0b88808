#!/usr/bin/env bash
# Memory soak: a release server on its defaults (or EXTRA_SERVE_ARGS) under
# sustained OTLP ingest (logs and spans) plus a loop of concurrent queries,
# sampling the server's RSS every second. Prints the budget, the samples'
# peak, the kernel's high-water mark of RSS (VmHWM: the true peak, between
# samples too) and the records stored. Usage: scripts/soak.sh [minutes, default 10]
set -euo pipefail
MINUTES="${1:-10}"
source "$(dirname "$0")/serve-scratch.sh"
SECS=$((MINUTES * 60))

"$LOADGEN" send --signal logs --protocol grpc --endpoint "$GRPC" --key "$KEY" --batch 500 --concurrency 4 --duration "${SECS}s" --json >"$DATA.logs.json" &
"$LOADGEN" send --signal traces --protocol grpc --endpoint "$GRPC" --key "$KEY" --batch 500 --concurrency 2 --duration "${SECS}s" --json >"$DATA.spans.json" &
# Queries: text search over the last hour, newest rows, a metric lookup.
(
  end=$((SECONDS + SECS)); n=0; failed=0
  while [ $SECONDS -lt $end ]; do
    for q in "signal=logs&q=timeout&limit=100" "signal=logs&limit=1000" "signal=traces&q=GET&limit=500"; do
      code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "http://$API/api/v1/search?$q" || true)
      n=$((n + 1)); [ "$code" = 200 ] || failed=$((failed + 1))
    done
    sleep 0.5
  done
  echo "{\"queries\": $n, \"failed_queries\": $failed}" >"$DATA.queries.json"
) &
QUERIES=$!
PEAK=0
for _ in $(seq "$SECS"); do
  sleep 1
  RSS=$(awk '/VmRSS/ {print $2}' "/proc/$PID/status")  # KiB
  if [ "$RSS" -gt "$PEAK" ]; then PEAK=$RSS; fi
done
wait "$QUERIES"
HWM=$(awk '/VmHWM/ {print $2}' "/proc/$PID/status")  # KiB
METRICS=$(curl -s "http://$API/metrics")
LOG=$(sed 's/\x1b\[[0-9;]*m//g' "$DATA.log")
BUDGET="$(grep -o 'write_buffer_mib=[0-9]* query_memory_mib=[0-9]*' <<<"$LOG" | head -1 || true) $(grep -o 'resident_mib=[0-9]*' <<<"$LOG" | head -1 || true)"
python3 - "$PEAK" "$DATA" "$METRICS" "$BUDGET" "$HWM" <<'PY'
import json, sys
peak, data, metrics, budget, hwm = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
budget = {k: int(v) for k, v in (kv.split("=") for kv in budget.split())}
acc = sum(float(l.split()[-1]) for l in metrics.splitlines() if l.startswith("otelhouse_records_accepted_total"))
merges = [l.split()[-1] for l in metrics.splitlines() if l.startswith("otelhouse_merges_total")]
def value(name):
    return [int(float(l.split()[-1])) for l in metrics.splitlines() if l.startswith(name)]
q = json.load(open(data + ".queries.json"))
print(json.dumps({**budget, "peak_rss_mib": round(peak / 1024), "hwm_rss_mib": round(hwm / 1024),
                  "records_accepted": int(acc), "merges": merges,
                  "memory_releases": value("otelhouse_memory_releases_total"),
                  "memory_refusals": value("otelhouse_memory_refusals_total"),
                  "merges_postponed": value("otelhouse_memory_merges_postponed_total"), **q}))
PY
