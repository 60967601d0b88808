#!/usr/bin/env bash
# The whole test suite: Rust unit + end-to-end tests, then the Python suite
# (official OpenTelemetry SDK exporters, OTLP example payloads) against the
# real binary. Idempotent: sets up the Python venv on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/otelhouse-target}"

if [ ! -x .venv/bin/pytest ] || ! cmp -s tests/python/requirements.txt .venv/.requirements; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet -r tests/python/requirements.txt
  cp tests/python/requirements.txt .venv/.requirements
fi

cargo build --bins
cargo test --workspace
OTELHOUSE_BIN="$CARGO_TARGET_DIR/debug/otelhouse" .venv/bin/pytest -q tests/python
