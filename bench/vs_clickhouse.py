#!/usr/bin/env python3
"""The embedded store against ClickHouse (the chdb-core engine, 26.9) on the
same dataset and the same queries (issue 3).

1. The dataset (otelhouse-loadgen dataset): logs and spans over a window.
2. otelhouse: a release server on a fresh data dir; the dataset replayed over
   OTLP/gRPC; ingest time = replay time (acked = durable), then the time until
   compaction settles; bytes = the parts on disk.
3. ClickHouse: ClickStack's DDL (schema.md: partitions, ORDER BY, codecs, text
   and bloom skip indexes, materialized columns); the very rows otelhouse
   stored, inserted from its Parquet parts; ingest time = the INSERTs, then
   the time until merges settle; bytes = system.parts.
4. Queries Q1-Q6, --rounds rounds of --runs runs on each side, the sides
   taking turns; per query the median p50 per side and the median of the
   rounds' ratios.

Prints one JSON object. Usage:
  bench/vs_clickhouse.py --otelhouse BIN --loadgen BIN [--logs N --spans N --hours H]
      [--keep DIR]                     # keep both stores in DIR
  bench/vs_clickhouse.py --otelhouse BIN --loadgen BIN --queries-again DIR [--only Q1 Q4]
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import chdb  # noqa: F401  (chdb-core)
from chdb import session

from common import add_dataset_args, ensure_dataset, run

LOGS_DDL = """
CREATE TABLE otel.otel_logs (
  Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
  TimestampTime DateTime DEFAULT toDateTime(Timestamp),
  TraceId String CODEC(ZSTD(1)),
  SpanId String CODEC(ZSTD(1)),
  TraceFlags UInt8,
  SeverityText LowCardinality(String) CODEC(ZSTD(1)),
  SeverityNumber UInt8,
  ServiceName LowCardinality(String) CODEC(ZSTD(1)),
  Body String CODEC(ZSTD(1)),
  ResourceSchemaUrl LowCardinality(String) CODEC(ZSTD(1)),
  ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
  ScopeSchemaUrl LowCardinality(String) CODEC(ZSTD(1)),
  ScopeName String CODEC(ZSTD(1)),
  ScopeVersion LowCardinality(String) CODEC(ZSTD(1)),
  ScopeAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
  LogAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
  EventName String CODEC(ZSTD(1)),
  ResourceAttributeItems Array(String) ALIAS arrayMap(kv -> concat(kv.1, '=', kv.2), ResourceAttributes::Array(Tuple(String, String))),
  ScopeAttributeItems Array(String) ALIAS arrayMap(kv -> concat(kv.1, '=', kv.2), ScopeAttributes::Array(Tuple(String, String))),
  LogAttributeItems Array(String) ALIAS arrayMap(kv -> concat(kv.1, '=', kv.2), LogAttributes::Array(Tuple(String, String))),
  `__hdx_materialized_k8s.cluster.name` LowCardinality(String) MATERIALIZED ResourceAttributes['k8s.cluster.name'] CODEC(ZSTD(1)),
  `__hdx_materialized_k8s.container.name` LowCardinality(String) MATERIALIZED ResourceAttributes['k8s.container.name'] CODEC(ZSTD(1)),
  `__hdx_materialized_k8s.deployment.name` LowCardinality(String) MATERIALIZED ResourceAttributes['k8s.deployment.name'] CODEC(ZSTD(1)),
  `__hdx_materialized_k8s.namespace.name` LowCardinality(String) MATERIALIZED ResourceAttributes['k8s.namespace.name'] CODEC(ZSTD(1)),
  `__hdx_materialized_k8s.node.name` LowCardinality(String) MATERIALIZED ResourceAttributes['k8s.node.name'] CODEC(ZSTD(1)),
  `__hdx_materialized_k8s.pod.name` LowCardinality(String) MATERIALIZED ResourceAttributes['k8s.pod.name'] CODEC(ZSTD(1)),
  `__hdx_materialized_k8s.pod.uid` LowCardinality(String) MATERIALIZED ResourceAttributes['k8s.pod.uid'] CODEC(ZSTD(1)),
  `__hdx_materialized_deployment.environment.name` LowCardinality(String) MATERIALIZED ResourceAttributes['deployment.environment.name'] CODEC(ZSTD(1)),
  INDEX idx_trace_id TraceId TYPE text(tokenizer = 'array'),
  INDEX idx_body lower(Body) TYPE text(tokenizer = 'splitByNonAlpha'),
  INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE text(tokenizer = 'array'),
  INDEX idx_scope_attr_key mapKeys(ScopeAttributes) TYPE text(tokenizer = 'array'),
  INDEX idx_log_attr_key mapKeys(LogAttributes) TYPE text(tokenizer = 'array'),
  INDEX idx_res_attr_items ResourceAttributeItems TYPE text(tokenizer = 'array'),
  INDEX idx_scope_attr_items ScopeAttributeItems TYPE text(tokenizer = 'array'),
  INDEX idx_log_attr_items LogAttributeItems TYPE text(tokenizer = 'array')
) ENGINE = MergeTree
PARTITION BY toDate(Timestamp)
ORDER BY (toStartOfFiveMinutes(Timestamp), ServiceName, Timestamp)
TTL toDateTime(Timestamp) + INTERVAL 3 DAY
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1
"""

TRACES_DDL = """
CREATE TABLE otel.otel_traces (
  Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
  TraceId String CODEC(ZSTD(1)),
  SpanId String CODEC(ZSTD(1)),
  ParentSpanId String CODEC(ZSTD(1)),
  TraceState String CODEC(ZSTD(1)),
  SpanName LowCardinality(String) CODEC(ZSTD(1)),
  SpanKind LowCardinality(String) CODEC(ZSTD(1)),
  ServiceName LowCardinality(String) CODEC(ZSTD(1)),
  ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
  ScopeName String CODEC(ZSTD(1)),
  ScopeVersion String CODEC(ZSTD(1)),
  SpanAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
  Duration UInt64 CODEC(ZSTD(1)),
  StatusCode LowCardinality(String) CODEC(ZSTD(1)),
  StatusMessage String CODEC(ZSTD(1)),
  Events Nested (
    Timestamp DateTime64(9),
    Name LowCardinality(String),
    Attributes Map(LowCardinality(String), String)
  ) CODEC(ZSTD(1)),
  Links Nested (
    TraceId String,
    SpanId String,
    TraceState String,
    Attributes Map(LowCardinality(String), String)
  ) CODEC(ZSTD(1)),
  ResourceAttributeItems Array(String) ALIAS arrayMap(kv -> concat(kv.1, '=', kv.2), ResourceAttributes::Array(Tuple(String, String))),
  SpanAttributeItems Array(String) ALIAS arrayMap(kv -> concat(kv.1, '=', kv.2), SpanAttributes::Array(Tuple(String, String))),
  SampleRate UInt64 MATERIALIZED greatest(toUInt64OrZero(SpanAttributes['SampleRate']), 1),
  `__hdx_materialized_rum.sessionId` String MATERIALIZED ResourceAttributes['rum.sessionId'] CODEC(ZSTD(1)),
  INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
  INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
  INDEX idx_span_attr_key mapKeys(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
  INDEX idx_duration Duration TYPE minmax GRANULARITY 1,
  INDEX idx_lower_span_name lower(SpanName) TYPE tokenbf_v1(32768, 3, 0) GRANULARITY 8,
  INDEX idx_res_attr_items ResourceAttributeItems TYPE text(tokenizer = 'array'),
  INDEX idx_span_attr_items SpanAttributeItems TYPE text(tokenizer = 'array')
) ENGINE = MergeTree
PARTITION BY toDate(Timestamp)
ORDER BY (ServiceName, SpanName, toDateTime(Timestamp))
TTL toDate(Timestamp) + INTERVAL 3 DAY
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1
"""


def queries(d):
    """(name, DataFusion SQL, ClickHouse SQL). `d` holds the dataset's end,
    the rare token and a trace id. Each side uses its own idiom for the
    same result: Q3's `date_trunc('minute', …)` is SQL's `toStartOfMinute`
    (DataFusion's `date_bin`, used before 2026-12-03, costs ~20 ms more)."""
    end_s = d["end"] / 1e9
    h1 = f"{end_s - 3600:.3f}"
    h24 = f"{end_s - 24 * 3600:.3f}"
    ts_df = lambda s: f"to_timestamp({s})"  # noqa: E731
    ts_ch = lambda s: f"toDateTime64({s}, 9)"  # noqa: E731
    tok = d["rare_token"]
    return [
        ("Q1 rare token, last 1 h",
         f"SELECT Timestamp, ServiceName, Body FROM otel_logs WHERE Timestamp >= {ts_df(h1)} AND has_token(Body, '{tok}') ORDER BY Timestamp DESC LIMIT 100",
         f"SELECT Timestamp, ServiceName, Body FROM otel.otel_logs WHERE Timestamp >= {ts_ch(h1)} AND hasToken(lower(Body), '{tok}') ORDER BY Timestamp DESC LIMIT 100"),
        ("Q1 rare token, last 24 h",
         f"SELECT Timestamp, ServiceName, Body FROM otel_logs WHERE Timestamp >= {ts_df(h24)} AND has_token(Body, '{tok}') ORDER BY Timestamp DESC LIMIT 100",
         f"SELECT Timestamp, ServiceName, Body FROM otel.otel_logs WHERE Timestamp >= {ts_ch(h24)} AND hasToken(lower(Body), '{tok}') ORDER BY Timestamp DESC LIMIT 100"),
        ("Q2 service + severity, newest 100",
         f"SELECT * FROM otel_logs WHERE ServiceName = 'checkout' AND SeverityText = 'ERROR' AND Timestamp >= {ts_df(h24)} ORDER BY Timestamp DESC LIMIT 100",
         f"SELECT * FROM otel.otel_logs WHERE ServiceName = 'checkout' AND SeverityText = 'ERROR' AND Timestamp >= {ts_ch(h24)} ORDER BY Timestamp DESC LIMIT 100"),
        ("Q3 count per minute, 24 h",
         f"SELECT date_trunc('minute', Timestamp) AS m, count(*) AS c FROM otel_logs WHERE Timestamp >= {ts_df(h24)} GROUP BY m ORDER BY m",
         f"SELECT toStartOfMinute(Timestamp) AS m, count() AS c FROM otel.otel_logs WHERE Timestamp >= {ts_ch(h24)} GROUP BY m ORDER BY m"),
        ("Q4 top 10 http.route under a filter",
         f"SELECT LogAttributes['http.route'] AS v, count(*) AS c FROM otel_logs WHERE ServiceName = 'gateway' AND Timestamp >= {ts_df(h24)} GROUP BY v ORDER BY c DESC LIMIT 10",
         f"SELECT LogAttributes['http.route'] AS v, count() AS c FROM otel.otel_logs WHERE ServiceName = 'gateway' AND Timestamp >= {ts_ch(h24)} GROUP BY v ORDER BY c DESC LIMIT 10"),
        ("Q5 all spans of one trace",
         f"SELECT * FROM otel_traces WHERE TraceId = '{d['trace_id']}' ORDER BY Timestamp",
         f"SELECT * FROM otel.otel_traces WHERE TraceId = '{d['trace_id']}' ORDER BY Timestamp"),
        ("Q6 p95 Duration by service, 1 h",
         f"SELECT ServiceName, approx_percentile_cont(Duration, 0.95) AS p95 FROM otel_traces WHERE Timestamp >= {ts_df(h1)} GROUP BY ServiceName ORDER BY ServiceName",
         f"SELECT ServiceName, quantile(0.95)(Duration) AS p95 FROM otel.otel_traces WHERE Timestamp >= {ts_ch(h1)} GROUP BY ServiceName ORDER BY ServiceName"),
    ]



def wait_settled(read, limit_s, quiet_s=10):
    """Polls `read()` until it stops changing for quiet_s; returns seconds."""
    t0, last, since = time.time(), None, time.time()
    while time.time() - t0 < limit_s:
        v = read()
        if v != last:
            last, since = v, time.time()
        elif time.time() - since >= quiet_s:
            return since - t0
        time.sleep(1)
    return time.time() - t0


def otelhouse_side(args, dataset, work):
    data = os.path.join(work, "otelhouse-data")
    creds = json.loads(run([args.otelhouse, "init", "--json", "--data-dir", data]).stdout)
    log = open(os.path.join(work, "otelhouse.log"), "w")
    server = subprocess.Popen(
        [args.otelhouse, "serve", "--data-dir", data, "--otlp-grpc-addr", "127.0.0.1:0",
         "--otlp-http-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
         "--maintenance-interval", "1s"],
        stdout=log, stderr=log)
    try:
        for _ in range(100):
            if os.path.exists(os.path.join(data, "listen.json")):
                break
            time.sleep(0.1)
        addrs = json.load(open(os.path.join(data, "listen.json")))
        t0 = time.time()
        out = run([args.loadgen, "replay", "--dir", dataset, "--endpoint", addrs["otlp_grpc"],
                   "--key", creds["ingestion_key"], "--server-pid", str(server.pid)])
        ingest_s = time.time() - t0
        replay = [json.loads(line) for line in out.stdout.splitlines()]

        def stats():
            req = urllib.request.Request(
                f"http://{addrs['http']}/api/v1/stats",
                headers={"Authorization": f"Bearer {creds['api_token']}"})
            t = json.load(urllib.request.urlopen(req))["tables"]
            return [(x["table"], x["parts"], x["memory_rows"]) for x in t]
        settle_s = wait_settled(stats, args.settle_limit)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)
    tables = json.loads(run([args.otelhouse, "stats", "--json", "--data-dir", data]).stdout)["tables"]
    return data, {
        "ingest_seconds": round(ingest_s, 1),
        "settle_seconds": round(settle_s, 1),
        "replay": replay,
        "tables": {t["table"]: {"rows": t["rows"], "parts": t["parts"], "bytes": t["bytes"]}
                   for t in tables if t["rows"]},
    }


def clickhouse_side(args, data, work):
    s = session.Session(os.path.join(work, "chdb"))
    s.query("CREATE DATABASE otel")
    s.query(LOGS_DDL)
    s.query(TRACES_DDL)
    out = {}
    t0 = time.time()
    for table in ["otel_logs", "otel_traces"]:
        files = os.path.join(data, "parts", table, "*", "*.parquet")
        # The table's stored columns (our parts also hold attribute key
        # columns, `Map['key']`, which ClickStack's tables do not have).
        ours = s.query(f"DESCRIBE file('{files}', Parquet)", "TabSeparated").data().splitlines()
        theirs = set(s.query(
            f"SELECT name FROM system.columns WHERE database = 'otel' AND table = '{table}' "
            "AND default_kind NOT IN ('ALIAS', 'MATERIALIZED')", "TabSeparated").data().splitlines())
        cols = [c for c in (line.split("\t")[0] for line in ours) if c in theirs]
        names = ", ".join(f"`{c}`" for c in cols)
        s.query(f"INSERT INTO otel.{table} ({names}) SELECT {names} FROM file('{files}', Parquet)")
    out["ingest_seconds"] = round(time.time() - t0, 1)

    out["settle_seconds"] = round(clickhouse_settled(s, args.settle_limit), 1)
    rows = s.query(
        "SELECT table, sum(rows), count(), sum(bytes_on_disk) FROM system.parts "
        "WHERE database = 'otel' AND active GROUP BY table", "TabSeparated").data()
    out["tables"] = {}
    for line in rows.splitlines():
        t, r, p, b = line.split("\t")
        out["tables"][t] = {"rows": int(r), "parts": int(p), "bytes": int(b)}
    return s, out


def clickhouse_settled(s, limit_s):
    """Waits until ClickHouse runs no merge and its part count holds still;
    returns seconds. A merge of the day's parts runs on a whole core for
    minutes after the load, a part count alone does not show it, and every
    query timed meanwhile (on either side) shares the machine with it."""
    t0 = time.time()

    def merges():
        return int(s.query("SELECT count() FROM system.merges WHERE database = 'otel'", "CSV").data())

    def parts():
        return s.query("SELECT count() FROM system.parts WHERE database = 'otel' AND active", "CSV").data()
    while time.time() - t0 < limit_s:
        if merges() == 0:
            wait_settled(parts, max(1, limit_s - (time.time() - t0)))
            if merges() == 0:
                break
        time.sleep(1)
    return time.time() - t0


def run_queries(args, data, s, d):
    """Each query (those named in --only, if given) in --rounds rounds, the
    two sides taking turns: per round --runs runs of ours (one process,
    as `otelhouse sql --repeat`), then --runs of ClickHouse's. Per side
    the median of the rounds' p50s; the ratio is the median of the rounds'
    ratios, so a slow spell of the machine weighs on both sides alike.
    Both row counts."""
    results = []
    for name, df_sql, ch_sql in queries(d):
        if args.only and not any(name.startswith(q) for q in args.only):
            continue
        ours, theirs, ratios = [], [], []
        for _ in range(max(args.rounds, 1)):
            out = run([args.otelhouse, "sql", "--data-dir", data, "--repeat", str(args.runs), df_sql])
            our_p50 = json.loads(out.stderr.strip().splitlines()[-1])["p50_ms"]
            our_rows = len(out.stdout.splitlines())
            ch_times = []
            for _ in range(args.runs):
                t = time.time()
                res = s.query(ch_sql, "JSONEachRow")
                ch_times.append((time.time() - t) * 1e3)
            ch_rows = len(res.data().splitlines())
            ch_p50 = statistics.median(ch_times)
            ours.append(our_p50)
            theirs.append(ch_p50)
            ratios.append(our_p50 / ch_p50)
        results.append({"query": name,
                        "otelhouse_p50_ms": round(statistics.median(ours), 1),
                        "clickhouse_p50_ms": round(statistics.median(theirs), 1),
                        "ratio": round(statistics.median(ratios), 2),
                        "round_ratios": [round(r, 2) for r in ratios],
                        "rows": [our_rows, ch_rows]})
    return results


def queries_again(args):
    """--queries-again DIR: the queries only, over the stores a --keep run left."""
    with open(os.path.join(args.queries_again, "run.json")) as f:
        d = json.load(f)
    s = session.Session(os.path.join(args.queries_again, "chdb"))
    settle_s = clickhouse_settled(s, args.settle_limit)
    print(json.dumps({"clickhouse_settle_seconds": round(settle_s, 1)}), file=sys.stderr)
    data = os.path.join(args.queries_again, "otelhouse-data")
    print(json.dumps({"queries": run_queries(args, data, s, d)}, indent=1))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--otelhouse", required=True)
    p.add_argument("--loadgen", required=True)
    add_dataset_args(p)
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds of --runs per side, the sides taking turns")
    p.add_argument("--settle-limit", type=int, default=600)
    p.add_argument("--keep", metavar="DIR",
                   help="work in DIR (must not exist) and keep it: both stores, for re-running queries")
    p.add_argument("--queries-again", metavar="DIR",
                   help="only run the queries, over the stores a --keep DIR run left")
    p.add_argument("--only", nargs="*", help="only the queries whose names start so (e.g. Q1 Q4)")
    args = p.parse_args()
    if args.queries_again:
        return queries_again(args)

    if args.keep:
        os.makedirs(args.keep)
    work = args.keep or tempfile.mkdtemp(prefix="otelhouse-vs-ch-")
    try:
        dataset = args.dataset or os.path.join(work, "dataset")
        summary = ensure_dataset(args, dataset)
        data, ours = otelhouse_side(args, dataset, work)
        s, theirs = clickhouse_side(args, data, work)
        d = {"end": summary["spec"]["end"], "rare_token": "qzxrare7",
             "trace_id": summary["sample_trace_id"]}
        with open(os.path.join(work, "run.json"), "w") as f:
            json.dump(d, f)
        results = run_queries(args, data, s, d)
        records = {t: v["rows"] for t, v in ours["tables"].items()}
        bytes_per_record = {
            t: {"otelhouse": round(ours["tables"][t]["bytes"] / records[t], 1),
                "clickhouse": round(theirs["tables"][t]["bytes"] / max(theirs["tables"][t]["rows"], 1), 1)}
            for t in records if t in theirs["tables"]}
        print(json.dumps({"dataset": summary["spec"], "otelhouse": ours, "clickhouse": theirs,
                          "bytes_per_record": bytes_per_record, "queries": results}, indent=1))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
