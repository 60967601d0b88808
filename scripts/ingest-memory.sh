#!/usr/bin/env bash
# Ingest only: a release server (BIN, default the freshly built one; extra
# flags in EXTRA_SERVE_ARGS) under OTLP/gRPC logs from 4 connections for
# SECS seconds (default 60), sampling RSS every second. Prints server CPU
# seconds, peak and mean RSS, the largest write buffer seen, records
# accepted, and the memory guard's counters.
set -euo pipefail
source "$(dirname "$0")/serve-scratch.sh"
"$LOADGEN" send --signal logs --protocol grpc --endpoint "$GRPC" --key "$KEY" --batch 500 --concurrency 4 --duration "${SECS:-60}s" --json >/dev/null &
LG=$!
metric() { curl -s "http://$API/metrics" | awk -v m="$1" '$1 == m || index($1, m "{") == 1 {s += $2} END {printf "%d\n", s}'; }
PEAK=0; MAXTAIL=0; N=0; SUM=0
while kill -0 $LG 2>/dev/null; do
  R=$(awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$PID/status")
  T=$(( $(metric otelhouse_memory_tail_bytes) >> 20 ))
  [ "$R" -gt "$PEAK" ] && PEAK=$R; [ "$T" -gt "$MAXTAIL" ] && MAXTAIL=$T
  N=$((N + 1)); SUM=$((SUM + R)); sleep 1
done
wait "$LG"  # a load generator that failed fails the run
[ "$N" -gt 0 ] || { echo "the load generator ended before the first sample" >&2; exit 1; }
CPU=$(awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$PID/stat")
ACC=$(metric otelhouse_records_accepted_total)
echo "{\"server_cpu_s\": $CPU, \"records_accepted\": $ACC, \"records_per_cpu_s\": $(python3 -c "print(round($ACC / max($CPU, 0.01)))"), \"peak_rss_mib\": $PEAK, \"mean_rss_mib\": $((SUM / N)), \"max_write_buffer_mib\": $MAXTAIL, \"memory_releases\": $(metric otelhouse_memory_releases_total), \"memory_refusals\": $(metric otelhouse_memory_refusals_total)}"
