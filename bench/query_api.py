#!/usr/bin/env python3
"""The query suite (Q1-Q6 of issue 3) through the HTTP query API (issue 5).

1. The dataset (otelhouse-loadgen dataset), generated when missing.
2. A release server on a fresh data dir (or --data-dir of an earlier run with
   --reuse); the dataset replayed over OTLP/gRPC; wait until merges settle.
3. Each query through its API endpoint (search language, histogram, facets,
   trace, aggregate), --runs times, p50; and as the baseline in the same
   session, the equivalent hand-written SQL through SQL mode
   (POST /api/v1/sql) on the same server, --runs times, p50.

Prints one JSON object. Usage:
  bench/query_api.py --otelhouse BIN --loadgen BIN [--dataset DIR] [--runs 7]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

from common import add_dataset_args, ensure_dataset, run



def call(base, token, path, params=None, body=None):
    url = base + path + ("?" + urllib.parse.urlencode(params) if params else "")
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Authorization": f"Bearer {token}",
                                                          "Content-Type": "application/json"})
    t = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            payload = json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"{path} {params or body}: {e.code} {e.read().decode()}") from None
    return (time.perf_counter() - t) * 1e3, payload


def suite(end, trace_id):
    """(name, API path, params, result size fn, SQL-mode statement)."""
    h1, h24 = str(end - 3600 * 10**9), str(end - 24 * 3600 * 10**9)
    e = str(end)
    rows = lambda p: len(p.get("rows", []))  # noqa: E731
    return [
        ("Q1 rare token, last 1 h", "/api/v1/search",
         {"signal": "logs", "q": "qzxrare7", "from": h1, "to": e, "limit": 100}, rows,
         f"SELECT Timestamp, ServiceName, Body FROM otel_logs WHERE has_token(Body, 'qzxrare7') ORDER BY Timestamp DESC LIMIT 100", h1),
        ("Q1 rare token, last 24 h", "/api/v1/search",
         {"signal": "logs", "q": "qzxrare7", "from": h24, "to": e, "limit": 100}, rows,
         f"SELECT Timestamp, ServiceName, Body FROM otel_logs WHERE has_token(Body, 'qzxrare7') ORDER BY Timestamp DESC LIMIT 100", h24),
        ("Q2 service + severity, newest 100 (24 h)", "/api/v1/search",
         {"signal": "logs", "q": 'service:"checkout" level:"ERROR"', "from": h24, "to": e, "limit": 100}, rows,
         "SELECT * FROM otel_logs WHERE ServiceName = 'checkout' AND SeverityText = 'ERROR' ORDER BY Timestamp DESC LIMIT 100", h24),
        ("Q3 count per 1-minute bucket, 24 h", "/api/v1/histogram",
         {"signal": "logs", "from": h24, "to": e, "interval": "1m"},
         lambda p: len(p["series"][0]["points"]) if p["series"] else 0,
         "SELECT date_trunc('minute', Timestamp) AS m, count(*) AS c FROM otel_logs GROUP BY m ORDER BY m", h24),
        ("Q4 top 10 http.route under a service filter, 24 h", "/api/v1/facets",
         {"signal": "logs", "q": 'service:"gateway"', "fields": "http.route", "limit": 10, "from": h24, "to": e},
         lambda p: len(p["facets"][0]["values"]),
         "SELECT LogAttributes['http.route'] AS v, count(*) AS c FROM otel_logs WHERE ServiceName = 'gateway' GROUP BY v ORDER BY c DESC LIMIT 10", h24),
        ("Q5 all spans of one trace (+ its logs)", f"/api/v1/traces/{trace_id}", None,
         lambda p: len(p["spans"]),
         f"SELECT * FROM otel_traces WHERE TraceId = '{trace_id}' ORDER BY Timestamp", None),
        ("Q6 p95 Duration by service, 1 h", "/api/v1/aggregate",
         {"signal": "traces", "measures": "p95(Duration)", "by": "service", "interval": "none",
          "series_limit": 100, "from": h1, "to": e},
         lambda p: len(p["series"]),
         "SELECT ServiceName, approx_percentile_cont(Duration, 0.95) AS p95 FROM otel_traces GROUP BY ServiceName ORDER BY ServiceName", h1),
    ]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--otelhouse", required=True)
    p.add_argument("--loadgen", required=True)
    add_dataset_args(p)
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--settle-seconds", type=int, default=30)
    p.add_argument("--work", help="keep the server's data here; a second run reuses it (no replay)")
    args = p.parse_args()

    work = args.work or tempfile.mkdtemp(prefix="otelhouse-query-api-")
    os.makedirs(work, exist_ok=True)
    server = None
    try:
        dataset = args.dataset or os.path.join(work, "dataset")
        summary = ensure_dataset(args, dataset)
        data = os.path.join(work, "data")
        creds_file = os.path.join(work, "creds.json")
        reuse = os.path.exists(creds_file)
        if reuse:
            creds = json.load(open(creds_file))
        else:
            creds = json.loads(run([args.otelhouse, "init", "--json", "--data-dir", data]).stdout)
            json.dump(creds, open(creds_file, "w"))
        log = open(os.path.join(work, "server.log"), "w")
        server = subprocess.Popen(
            [args.otelhouse, "serve", "--data-dir", data, "--otlp-grpc-addr", "127.0.0.1:0",
             "--otlp-http-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
             "--maintenance-interval", "1s"], stdout=log, stderr=log)
        listen = os.path.join(data, "listen.json")
        if os.path.exists(listen):
            os.remove(listen)
        for _ in range(600):
            if os.path.exists(listen):
                break
            time.sleep(0.1)
        addrs = json.load(open(listen))
        ingest_s = None
        if not reuse:
            t0 = time.time()
            run([args.loadgen, "replay", "--dir", dataset, "--endpoint", addrs["otlp_grpc"],
                 "--key", creds["ingestion_key"]])
            ingest_s = round(time.time() - t0, 1)
            time.sleep(args.settle_seconds)
        base = "http://" + addrs["http"]
        token = creds["api_token"]
        end = summary["spec"]["end"]
        queries = suite(end, summary["sample_trace_id"])
        results = []
        for name, path, params, size, sql, sql_from in queries:
            api = []
            for _ in range(args.runs):
                ms, payload = call(base, token, path, params)
                api.append(ms)
            # SQL mode shows the tables cut to [from, to]: the same range.
            body = {"sql": sql, "limit": 10000, "to": int(end),
                    "from": int(sql_from) if sql_from else int(end) - 30 * 24 * 3600 * 10**9}
            base_ms = []
            for _ in range(args.runs):
                ms, sql_payload = call(base, token, "/api/v1/sql", body=body)
                base_ms.append(ms)
            a, b = statistics.median(api), statistics.median(base_ms)
            results.append({"query": name, "api_p50_ms": round(a, 1), "sql_mode_p50_ms": round(b, 1),
                            "ratio": round(a / b, 2), "api_result_size": size(payload),
                            "sql_rows": len(sql_payload["rows"])})
        print(json.dumps({"dataset": summary["spec"], "ingest_seconds": ingest_s,
                          "queries": results}, indent=1))
    finally:
        if server:
            server.terminate()
            server.wait()
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
