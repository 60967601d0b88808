//! The same random searches over the same random data return the same rows,
//! in the same order, from the embedded store (DataFusion) and from
//! ClickHouse (the real engine, chdb, behind its HTTP interface).

use std::time::Duration;

use otelhouse_clickhouse::ddl::{Layout, Version, create_all};
use otelhouse_clickhouse::insert::insert;
use otelhouse_clickhouse::testing::ChdbFront;
use otelhouse_clickhouse::{ClickHouseReader, ReadLimits, Statement};
use otelhouse_otlp::{Encoding, OtlpRequest};
use otelhouse_schema::Signal;
use otelhouse_search::{Catalog, parse};
use otelhouse_storage::{
    AggFunc, AggregateQuery, EmbeddedStore, Measure, SearchQuery, Sort, Storage, StoreOptions,
    TimeRange,
};
use otelhouse_wal::Apply;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const T0: i64 = 1_790_000_000_000_000_000;
const SERVICES: &[&str] = &["api", "web", "db", "cache", "auth-svc"];
const LEVELS: &[&str] = &["INFO", "WARN", "ERROR", "DEBUG", "info"];
const WORDS: &[&str] = &[
    "timeout",
    "connection",
    "reset",
    "user",
    "login",
    "failed",
    "ok",
    "café",
    "naïve",
    "500",
    "conn-reset",
    "a.b.c",
    "GET",
    "/api/v1",
    "x_y",
    "Timeout",
    "ÜBER",
    "日本",
];
const KEYS: &[&str] = &[
    "http.status_code",
    "http.route",
    "user.id",
    "cache.hit",
    "size",
];

fn attr(key: &str, rng: &mut StdRng) -> Value {
    let v = match key {
        "http.status_code" => {
            let code = [200, 404, 500, 503].choose(rng).unwrap().to_string();
            json!({ "intValue": code })
        }
        // Now and then a value that is not a number, or NaN.
        "size" if rng.random_bool(0.1) => {
            json!({"stringValue": *["NaN", "nan", "-0", "1e3", " 7", "8\t", "inf", "12abc"].choose(rng).unwrap()})
        }
        "size" => json!({"doubleValue": rng.random_range(0.0..1000.0_f64).round() / 4.0}),
        "cache.hit" => json!({"boolValue": rng.random_bool(0.5)}),
        "http.route" => {
            let route = ["/a", "/b/c", "/login", "/api/v1/x"].choose(rng).unwrap();
            json!({ "stringValue": route })
        }
        _ => json!({"stringValue": format!("u{}", rng.random_range(0..20))}),
    };
    json!({"key": key, "value": v})
}

fn attrs(rng: &mut StdRng) -> Vec<Value> {
    let mut out = Vec::new();
    for k in KEYS {
        if rng.random_bool(0.6) {
            out.push(attr(k, rng));
        }
    }
    out
}

fn body(rng: &mut StdRng) -> String {
    (0..rng.random_range(1..7))
        .map(|_| *WORDS.choose(rng).unwrap())
        .collect::<Vec<_>>()
        .join(*[" ", " ", ", ", "-", "="].choose(rng).unwrap())
}

/// Random logs and spans; timestamps collide often (ties at page ends).
fn data(rng: &mut StdRng) -> Vec<OtlpRequest> {
    let mut out = Vec::new();
    for _ in 0..6 {
        let resource_logs: Vec<Value> = SERVICES
            .iter()
            .map(|s| {
                let records: Vec<Value> = (0..rng.random_range(5..25))
                    .map(|_| {
                        json!({
                            "timeUnixNano": (T0 + rng.random_range(0..40) * 60_000_000_000).to_string(),
                            "severityText": LEVELS.choose(rng).unwrap(),
                            "severityNumber": rng.random_range(1..24),
                            "body": {"stringValue": body(rng)},
                            "traceId": if rng.random_bool(0.3) { format!("{:032x}", rng.random_range(1..10u32)) } else { String::new() },
                            "attributes": attrs(rng),
                        })
                    })
                    .collect();
                json!({
                    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": s}},
                                                {"key": "host.name", "value": {"stringValue": format!("h{}", rng.random_range(0..3))}}]},
                    "scopeLogs": [{"logRecords": records}],
                })
            })
            .collect();
        let body = json!({ "resourceLogs": resource_logs }).to_string();
        out.push(OtlpRequest::decode(Signal::Logs, Encoding::Json, body.as_bytes()).unwrap());

        let resource_spans: Vec<Value> = SERVICES
            .iter()
            .map(|s| {
                let spans: Vec<Value> = (0..rng.random_range(3..12))
                    .map(|i| {
                        let start = T0 + rng.random_range(0..40) * 60_000_000_000;
                        json!({
                            "traceId": format!("{:032x}", rng.random_range(1..10u32)),
                            "spanId": format!("{:016x}", rng.random::<u32>() as u64 + i),
                            "parentSpanId": if rng.random_bool(0.5) { String::new() } else { format!("{:016x}", 7) },
                            "name": *["GET /users", "SELECT", "login", "cache get"].choose(rng).unwrap(),
                            "kind": rng.random_range(1..6),
                            "startTimeUnixNano": start.to_string(),
                            "endTimeUnixNano": (start + rng.random_range(1..5_000) * 1_000_000).to_string(),
                            "status": {"code": rng.random_range(0..3)},
                            "attributes": attrs(rng),
                        })
                    })
                    .collect();
                json!({
                    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": s}}]},
                    "scopeSpans": [{"spans": spans}],
                })
            })
            .collect();
        let body = json!({ "resourceSpans": resource_spans }).to_string();
        out.push(OtlpRequest::decode(Signal::Traces, Encoding::Json, body.as_bytes()).unwrap());
    }
    out.push(metrics(rng));
    out
}

/// Every metric kind, a few hosts, one metric name each.
fn metrics(rng: &mut StdRng) -> OtlpRequest {
    let point = |rng: &mut StdRng, i: i64| {
        json!({
            "startTimeUnixNano": T0.to_string(),
            "timeUnixNano": (T0 + i * 60_000_000_000).to_string(),
            "attributes": [{"key": "host.name", "value": {"stringValue": format!("h{}", rng.random_range(0..3))}}],
        })
    };
    let with = |mut p: Value, extra: Value| {
        p.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        p
    };
    let mut gauge = Vec::new();
    let mut sum = Vec::new();
    let mut hist = Vec::new();
    let mut exp = Vec::new();
    let mut summary = Vec::new();
    for i in 0..20 {
        gauge.push(with(
            point(rng, i),
            json!({"asDouble": rng.random_range(0.0..100.0_f64)}),
        ));
        sum.push(with(point(rng, i), json!({"asInt": (i * 7).to_string()})));
        hist.push(with(point(rng, i), json!({"count": "6", "sum": 21.5, "bucketCounts": ["1", "2", "3"], "explicitBounds": [1.0, 5.0], "min": 0.5, "max": 9.0})));
        exp.push(with(point(rng, i), json!({"count": "3", "sum": 7.0, "scale": 1, "zeroCount": "1", "positive": {"offset": 2, "bucketCounts": ["1", "1"]}})));
        summary.push(with(point(rng, i), json!({"count": "4", "sum": 10.0, "quantileValues": [{"quantile": 0.5, "value": 2.0}, {"quantile": 0.99, "value": 4.5}]})));
    }
    let body = json!({"resourceMetrics": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "api"}}]},
        "scopeMetrics": [{"scope": {"name": "meter", "version": "1"}, "metrics": [
            {"name": "m.gauge", "unit": "%", "gauge": {"dataPoints": gauge}},
            {"name": "m.sum", "sum": {"dataPoints": sum, "aggregationTemporality": 2, "isMonotonic": true}},
            {"name": "m.hist", "histogram": {"dataPoints": hist, "aggregationTemporality": 1}},
            {"name": "m.exp", "exponentialHistogram": {"dataPoints": exp, "aggregationTemporality": 1}},
            {"name": "m.summary", "summary": {"dataPoints": summary}},
        ]}],
    }]})
    .to_string();
    OtlpRequest::decode(Signal::Metrics, Encoding::Json, body.as_bytes()).unwrap()
}

/// A random search in the search language.
fn query(rng: &mut StdRng, signal: Signal, depth: u32) -> String {
    let leaf = |rng: &mut StdRng| -> String {
        let key = *KEYS.choose(rng).unwrap();
        match rng.random_range(0..14) {
            0 => format!("service:{}", SERVICES.choose(rng).unwrap()),
            1 => format!("service:\"{}\"", SERVICES.choose(rng).unwrap()),
            2 if signal == Signal::Logs => {
                format!("level:{}", LEVELS.choose(rng).unwrap().to_lowercase())
            }
            2 => format!(
                "status:\"{}\"",
                ["Error", "Ok", "Unset"].choose(rng).unwrap()
            ),
            3 => WORDS.choose(rng).unwrap().replace('/', "\\/"),
            4 => format!("\"{}\"", WORDS.choose(rng).unwrap()),
            5 => format!("{key}:*"),
            6 => format!("{key}:>{}", rng.random_range(0..600)),
            7 => format!(
                "{key}:[{} TO {}]",
                rng.random_range(0..200),
                rng.random_range(200..600)
            ),
            8 => "http.status_code:500".into(),
            9 => format!(
                "http.route:\"{}\"",
                ["/a", "/login", "/nope"].choose(rng).unwrap()
            ),
            10 => format!("cache.hit:{}", rng.random_bool(0.5)),
            11 if signal == Signal::Traces => {
                format!("duration:>{}", rng.random_range(0..5_000i64) * 1_000_000)
            }
            11 => format!("SeverityNumber:<{}", rng.random_range(1..24)),
            12 => format!("ResourceAttributes.host.name:h{}", rng.random_range(0..4)),
            _ => format!("user.id:u{}", rng.random_range(0..25)),
        }
    };
    if depth == 0 || rng.random_bool(0.4) {
        let l = leaf(rng);
        return if rng.random_bool(0.2) {
            format!("-{l}")
        } else {
            l
        };
    }
    let a = query(rng, signal, depth - 1);
    let b = query(rng, signal, depth - 1);
    match rng.random_range(0..4) {
        0 => format!("{a} {b}"),
        1 => format!("({a} OR {b})"),
        2 => format!("{a} AND NOT ({b})"),
        _ => format!("({a}) || {b}"),
    }
}

/// Equal up to rounding: sums and averages may add in another order.
fn close(a: &[Option<f64>], b: &[Option<f64>]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| match (x, y) {
            (Some(x), Some(y)) => (x - y).abs() <= 1e-12 * x.abs().max(y.abs()).max(1.0),
            (None, None) => true,
            _ => false,
        })
}

#[tokio::test]
async fn random_searches_return_the_same_rows_on_both_stores() {
    let seed: u64 = std::env::var("PARITY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("PARITY_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);

    let (_front, client, ch) = clickhouse().await;

    let dir = tempfile::tempdir().unwrap();
    let embedded = EmbeddedStore::open(dir.path(), StoreOptions::default()).unwrap();
    let mut applier = embedded.applier();
    for (i, r) in data(&mut rng).iter().enumerate() {
        let batches = r.to_batches();
        for (table, batch) in &batches {
            insert(&client, *table, std::slice::from_ref(batch), None)
                .await
                .unwrap();
        }
        applier.apply(i as u64 + 1, batches);
        if i % 3 == 0 {
            embedded.flush(true).unwrap();
        }
    }

    let range = TimeRange {
        from: Some(T0 - 1),
        to: Some(T0 + 3_600_000_000_000),
    };
    let mut nonempty = 0;
    for n in 0..60 {
        let signal = if n % 3 == 2 {
            Signal::Traces
        } else {
            Signal::Logs
        };
        let text = query(&mut rng, signal, 3);
        let catalog = Catalog::new(signal, KEYS.iter().map(|k| k.to_string()));
        let filter = parse(&text, &catalog).unwrap_or_else(|e| panic!("{text}: {e}"));
        let mut q = SearchQuery::newest(signal, filter.clone(), range, 40);
        if n % 5 == 0 {
            q.sort = Sort {
                column: if signal == Signal::Traces {
                    "Duration"
                } else {
                    "SeverityNumber"
                },
                descending: n % 2 == 0,
            };
        }
        // Page through both stores: every page equal, cursors equal.
        for page in 0..3 {
            let a = embedded.search(&q).await.unwrap();
            let b = ch
                .search(&q)
                .await
                .unwrap_or_else(|e| panic!("{text}: {e}"));
            if a.rows != b.rows {
                let brief = |rows: &[otelhouse_storage::Row]| -> Vec<String> {
                    rows.iter()
                        .map(|r| {
                            format!(
                                "{} {} {}",
                                r["Timestamp"],
                                r["ServiceName"],
                                r.get("Body").or(r.get("SpanName")).unwrap()
                            )
                        })
                        .collect()
                };
                let first = a.rows.iter().zip(&b.rows).position(|(x, y)| x != y);
                panic!(
                    "seed {seed}, query {n} `{text}`, page {page}: rows differ (first at {first:?}; {} vs {} rows)\nembedded: {:#?}\nclickhouse: {:#?}\nfirst differing: {:?} vs {:?}",
                    a.rows.len(),
                    b.rows.len(),
                    brief(&a.rows),
                    brief(&b.rows),
                    first.map(|i| &a.rows[i]),
                    first.map(|i| &b.rows[i]),
                );
            }
            assert_eq!(a.next, b.next, "seed {seed}, `{text}`: cursors differ");
            nonempty += usize::from(!a.rows.is_empty());
            match a.next {
                Some(c) => q.after = Some(c),
                None => break,
            }
        }

        // The same filter as a chart: counts per 5 minutes by service,
        // exact quantiles and distinct counts.
        let measure_field = if signal == Signal::Traces {
            "Duration"
        } else {
            "SeverityNumber"
        };
        let field = catalog.resolve(measure_field).unwrap();
        let agg = AggregateQuery {
            signal,
            filter,
            range,
            measures: vec![
                Measure {
                    func: AggFunc::Count,
                    field: None,
                },
                Measure {
                    func: AggFunc::Quantile(0.95),
                    field: Some(field.clone()),
                },
                Measure {
                    func: AggFunc::Avg,
                    field: Some(field.clone()),
                },
                Measure {
                    func: AggFunc::CountDistinct,
                    field: Some(catalog.resolve("http.route").unwrap()),
                },
            ],
            bucket: (n % 2 == 0).then_some(300_000_000_000),
            group_by: vec![catalog.resolve("service").unwrap()],
            series_limit: 3,
        };
        let a = embedded.aggregate(&agg).await.unwrap();
        let b = ch
            .aggregate(&agg)
            .await
            .unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(a.len(), b.len(), "seed {seed}, `{text}`: {a:?} vs {b:?}");
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(
                (x.bucket, &x.group),
                (y.bucket, &y.group),
                "seed {seed}, `{text}`"
            );
            assert!(
                close(&x.values, &y.values),
                "seed {seed}, `{text}`: {x:?} vs {y:?}"
            );
        }
    }
    assert!(
        nonempty > 20,
        "most random queries should match something ({nonempty})"
    );

    // Metric points of every kind, under a filter, and whole traces.
    let metrics_catalog = Catalog::new(Signal::Metrics, ["host.name".to_string()]);
    for name in ["m.gauge", "m.sum", "m.hist", "m.exp", "m.summary"] {
        for text in ["", "host.name:h1", "-host.name:h2"] {
            let q = otelhouse_storage::MetricQuery {
                name: name.into(),
                filter: parse(text, &metrics_catalog).unwrap(),
                range,
                limit: 1000,
            };
            let a = embedded.metric_points(&q).await.unwrap();
            let b = ch.metric_points(&q).await.unwrap();
            assert!(!a.is_empty() || text.starts_with('-'), "{name} {text}");
            assert_eq!(a, b, "{name} `{text}`: metric points differ");
        }
    }
    for t in 1..10u32 {
        let id = format!("{t:032x}");
        assert_eq!(
            embedded.trace(&id, 1000).await.unwrap(),
            ch.trace(&id, 1000).await.unwrap(),
            "trace {id}"
        );
    }

    // Attribute keys with counts agree too.
    for signal in [Signal::Logs, Signal::Traces] {
        let a = embedded
            .attribute_keys(signal, range, 100_000)
            .await
            .unwrap();
        let b = ch.attribute_keys(signal, range, 100_000).await.unwrap();
        assert_eq!(a, b, "{signal:?} attribute keys");
    }
}

/// A front with ClickStack's tables, and a reader on it.
async fn clickhouse() -> (ChdbFront, otelhouse_clickhouse::Client, ClickHouseReader) {
    let front = ChdbFront::start();
    let admin = front.client("default");
    let mut st = Statement {
        sql: "SELECT version()".into(),
        params: vec![],
    };
    let version = String::from_utf8(admin.query(&st, &[]).await.unwrap().to_vec()).unwrap();
    let layout = Layout {
        database: "otel".into(),
        version: Version::parse(&version).unwrap(),
        cluster: None,
    };
    for sql in create_all(&layout, |_| Duration::from_secs(10 * 365 * 86400)) {
        st.sql = sql;
        admin.query(&st, &[]).await.unwrap();
    }
    let client = front.client("otel");
    let reader = ClickHouseReader::new(client.clone(), ReadLimits::default());
    (front, client, reader)
}

const HOSTILE: &[&str] = &[
    "it's",
    "back\\slash \\' \\\\",
    "'; DROP TABLE otel.otel_logs; --",
    "/* c */ OR 1=1 -- x",
    "{p0:String}",
    "naïve 日本 ✓",
    "nul\u{0}byte",
    "tab\tand\nnewline",
    "%_ like wildcards",
];

#[tokio::test]
async fn hostile_values_are_bound_on_clickhouse_and_match_exactly() {
    let (_front, client, ch) = clickhouse().await;
    let records: Vec<Value> = HOSTILE
        .iter()
        .enumerate()
        .map(|(i, h)| {
            json!({
                "timeUnixNano": (T0 + i as i64).to_string(),
                "body": {"stringValue": format!("hostile {h}")},
                "attributes": [{"key": "payload", "value": {"stringValue": h}}],
            })
        })
        .collect();
    let body = json!({"resourceLogs": [{"scopeLogs": [{"logRecords": records}]}]}).to_string();
    let request = OtlpRequest::decode(Signal::Logs, Encoding::Json, body.as_bytes()).unwrap();
    for (table, batch) in request.to_batches() {
        insert(&client, table, &[batch], None).await.unwrap();
    }
    let catalog = Catalog::new(Signal::Logs, ["payload".to_string()]);
    let range = TimeRange {
        from: Some(T0 - 1),
        to: Some(T0 + 1_000),
    };
    for h in HOSTILE {
        let quoted = h.replace('\\', "\\\\").replace('"', "\\\"");
        for text in [format!("payload:\"{quoted}\""), format!("\"{quoted}\"")] {
            let q = SearchQuery::newest(Signal::Logs, parse(&text, &catalog).unwrap(), range, 100);
            let rows = ch
                .search(&q)
                .await
                .unwrap_or_else(|e| panic!("{text}: {e}"));
            assert!(
                rows.rows
                    .iter()
                    .any(|r| r["Body"] == format!("hostile {h}")),
                "{text}: {:?}",
                rows.rows
            );
            if text.starts_with("payload") {
                assert_eq!(rows.rows.len(), 1, "{text}");
            }
        }
    }
    let all = SearchQuery::newest(Signal::Logs, otelhouse_search::Query::All, range, 100);
    assert_eq!(
        ch.search(&all).await.unwrap().rows.len(),
        HOSTILE.len(),
        "the table is intact"
    );
}

#[tokio::test]
async fn sql_mode_on_clickhouse_is_one_select_over_the_signal_tables_in_range() {
    use otelhouse_storage::SqlQuery;
    let (_front, client, ch) = clickhouse().await;
    let records: Vec<Value> = (0..5)
        .map(|i| json!({"timeUnixNano": (T0 + i * 60_000_000_000i64).to_string(), "body": {"stringValue": format!("m{i}")}}))
        .collect();
    let body = json!({"resourceLogs": [{"scopeLogs": [{"logRecords": records}]}]}).to_string();
    let request = OtlpRequest::decode(Signal::Logs, Encoding::Json, body.as_bytes()).unwrap();
    for (table, batch) in request.to_batches() {
        insert(&client, table, &[batch], None).await.unwrap();
    }
    let sql = |text: &str, from: i64, max_rows: usize| SqlQuery {
        sql: text.into(),
        range: TimeRange {
            from: Some(from),
            to: None,
        },
        max_rows,
    };
    let r = ch
        .sql(&sql(
            "SELECT count() AS n FROM otel_logs",
            T0 + 120_000_000_000,
            10,
        ))
        .await
        .unwrap();
    assert_eq!(r.rows[0]["n"], 3, "only rows in the range are visible");
    let r = ch
        .sql(&sql("SELECT Body FROM otel.otel_logs ORDER BY Body", T0, 2))
        .await
        .unwrap();
    assert_eq!((r.rows.len(), r.truncated), (2, true));
    // The per-query time limit: ClickHouse stops the query, the error says so.
    let slow = ClickHouseReader::new(
        client.clone(),
        ReadLimits {
            max_execution_time: Duration::from_secs(1),
            ..Default::default()
        },
    );
    match slow
        .sql(&sql("SELECT sleepEachRow(0.5) FROM otel_logs", T0, 10))
        .await
    {
        Err(e @ otelhouse_storage::QueryError::Timeout(_)) => {
            assert_eq!(e.to_string(), "query timed out after 1s")
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    for (bad, why) in [
        ("DROP TABLE otel_logs", "only SELECT"),
        ("INSERT INTO otel_logs (Body) VALUES ('x')", "only SELECT"),
        ("SELECT 1; SELECT 2", "exactly one statement"),
        ("SELECT * FROM system.users", "unknown table"),
        (
            "SELECT * FROM url('http://127.0.0.1:1/x', CSV)",
            "unknown table",
        ),
        ("SELECT * FROM file('/etc/passwd')", "unknown table"),
        (
            "SELECT * FROM otel_logs SETTINGS additional_table_filters={'otel.otel_logs':'1'}, max_result_rows=0",
            "SETTINGS",
        ),
        (
            "SELECT * FROM (SELECT * FROM otel_logs SETTINGS max_execution_time=0)",
            "SETTINGS",
        ),
        ("SELECT * FROM otel_logs FORMAT JSON", "FORMAT"),
    ] {
        match ch.sql(&sql(bad, T0, 10)).await {
            Err(otelhouse_storage::QueryError::BadRequest(m)) => {
                assert!(m.contains(why), "{bad}: {m}")
            }
            other => panic!("{bad}: expected a refusal, got {other:?}"),
        }
    }
}
