# Sourced by the benchmark scripts: builds the release binaries and starts
# a server (BIN, default the freshly built one; extra flags in
# EXTRA_SERVE_ARGS) on a scratch data directory, removed with its server
# and every background job when the script exits. Sets BIN, LOADGEN, DATA
# (the server's log is "$DATA.log"), KEY (ingestion key), TOKEN (API
# token), PID and the bound addresses GRPC, HTTP (OTLP) and API.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/otelhouse-target}"
cargo build --release --workspace --bins -q
BIN="${BIN:-$CARGO_TARGET_DIR/release/otelhouse}"
LOADGEN="$CARGO_TARGET_DIR/release/otelhouse-loadgen"
DATA="$(mktemp -d)/data"
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$(dirname "$DATA")"' EXIT
CREDS=$("$BIN" init --data-dir "$DATA" --json)
KEY=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["ingestion_key"])' "$CREDS")
TOKEN=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["api_token"])' "$CREDS")
read -r -a EXTRA <<< "${EXTRA_SERVE_ARGS:-}"
"$BIN" serve --data-dir "$DATA" --otlp-grpc-addr 127.0.0.1:0 --otlp-http-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 ${EXTRA[@]+"${EXTRA[@]}"} 2>"$DATA.log" &
PID=$!
for _ in $(seq 100); do [ -f "$DATA/listen.json" ] && break; sleep 0.1; done
addr() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$DATA/listen.json" "$1"; }
GRPC=$(addr otlp_grpc); HTTP=$(addr otlp_http); API=$(addr http)
