//! The query API end to end: data in over OTLP/HTTP, every /api/v1 query
//! endpoint and `otelhouse search` against the real binary.

mod common;

use std::process::Command;

use common::*;
use serde_json::{Value, json};

const MIN: u64 = 60_000_000_000;

fn attrs(kv: &[(&str, Value)]) -> Value {
    kv.iter()
        .map(|(k, v)| {
            let value = match v {
                Value::Number(n) if n.is_i64() => json!({"intValue": n.to_string()}),
                Value::Number(n) => json!({"doubleValue": n}),
                Value::Bool(b) => json!({"boolValue": b}),
                other => json!({"stringValue": other.as_str().unwrap()}),
            };
            json!({"key": k, "value": value})
        })
        .collect()
}

/// Hostile values stored and searched for: nothing may be spliced.
const HOSTILE: &[&str] = &[
    "it's a quote",
    "back\\slash",
    "'; DROP TABLE otel_logs; --",
    "/* comment */ OR 1=1",
    "naïve café ✓ 日本",
    "nul\u{0}byte",
    "percent % and _under_",
];

struct Fixture {
    t0: u64,
    trace: String,
}

/// 3 services × a known mix of severities and attributes, 2 minutes ago,
/// plus spans of one trace and a gauge and a counter.
async fn load(s: &Server, key: &str) -> Fixture {
    load_at(s, key, (now_nanos() - 10 * MIN) / MIN * MIN).await
}

/// The fixture with its first record at `t0`.
async fn load_at(s: &Server, key: &str, t0: u64) -> Fixture {
    let trace = "0af7651916cd43dd8448eb211c80319c".to_string();
    let mut resource_logs = Vec::new();
    for (si, service) in ["api", "web", "db"].iter().enumerate() {
        let mut records = Vec::new();
        for i in 0..10u64 {
            let error = i % (si as u64 + 2) == 0;
            records.push(json!({
                "timeUnixNano": (t0 + i * MIN / 2 + si as u64).to_string(),
                "severityText": if error { "ERROR" } else { "INFO" },
                "severityNumber": if error { 17 } else { 9 },
                "body": {"stringValue": format!("{service} request {i} took {}ms", i * 10)},
                "traceId": if i == 0 { trace.clone() } else { String::new() },
                "attributes": attrs(&[
                    ("http.status_code", json!(if error { 500 } else { 200 })),
                    ("http.route", json!(format!("/r{}", i % 3))),
                ]),
            }));
        }
        resource_logs.push(json!({
            "resource": {"attributes": attrs(&[("service.name", json!(service))])},
            "scopeLogs": [{"logRecords": records}],
        }));
    }
    let hostile: Vec<Value> = HOSTILE
        .iter()
        .enumerate()
        .map(|(i, h)| {
            json!({
                "timeUnixNano": (t0 + i as u64).to_string(),
                "body": {"stringValue": format!("hostile {h}")},
                "attributes": attrs(&[("payload", json!(h))]),
            })
        })
        .collect();
    resource_logs.push(json!({
        "resource": {"attributes": attrs(&[("service.name", json!("evil"))])},
        "scopeLogs": [{"logRecords": hostile}],
    }));
    post_json(s, "/v1/logs", key, json!({ "resourceLogs": resource_logs })).await;

    let mut spans = Vec::new();
    for (i, (service, name, ms, error, parent)) in [
        ("api", "GET /users", 10u64, false, ""),
        ("api", "GET /users", 20, false, ""),
        ("api", "GET /users", 30, true, ""),
        ("api", "GET /users", 40, false, ""),
        ("db", "SELECT users", 5, false, "00f067aa0ba902b7"),
    ]
    .into_iter()
    .enumerate()
    {
        let start = t0 + i as u64 * 1_000_000;
        spans.push((
            service,
            json!({
                "traceId": trace,
                "spanId": format!("{:016x}", i + 1),
                "parentSpanId": parent,
                "name": name,
                "kind": if parent.is_empty() { 2 } else { 3 },
                "startTimeUnixNano": start.to_string(),
                "endTimeUnixNano": (start + ms * 1_000_000).to_string(),
                "status": {"code": if error { 2 } else { 1 }},
            }),
        ));
    }
    let resource_spans: Vec<Value> = spans
        .into_iter()
        .map(|(service, span)| {
            json!({
                "resource": {"attributes": attrs(&[("service.name", json!(service))])},
                "scopeSpans": [{"spans": [span]}],
            })
        })
        .collect();
    post_json(
        s,
        "/v1/traces",
        key,
        json!({ "resourceSpans": resource_spans }),
    )
    .await;

    // A gauge (two hosts) and a monotonic cumulative counter: 0, 60, 120
    // over two minutes (1/s), then a restart at 10.
    let gauge: Vec<Value> = (0..4u64)
        .flat_map(|i| {
            ["h1", "h2"].map(|h| {
                json!({
                    "timeUnixNano": (t0 + i * MIN / 2).to_string(),
                    "asDouble": if h == "h1" { 10.0 } else { 30.0 },
                    "attributes": attrs(&[("host.name", json!(h))]),
                })
            })
        })
        .collect();
    let counter: Vec<Value> = [
        (0u64, 0, t0),
        (1, 60, t0),
        (2, 120, t0),
        (3, 10, t0 + 2 * MIN),
    ]
    .iter()
    .map(|(i, v, start)| {
        json!({
            "startTimeUnixNano": start.to_string(),
            "timeUnixNano": (t0 + i * MIN).to_string(),
            "asInt": v.to_string(),
        })
    })
    .collect();
    let metrics = json!({"resourceMetrics": [{
        "resource": {"attributes": attrs(&[("service.name", json!("api"))])},
        "scopeMetrics": [{"metrics": [
            {"name": "cpu.usage", "unit": "%", "gauge": {"dataPoints": gauge}},
            {"name": "requests", "sum": {"dataPoints": counter, "aggregationTemporality": 2, "isMonotonic": true}},
        ]}],
    }]});
    post_json(s, "/v1/metrics", key, metrics).await;
    Fixture { t0, trace }
}

async fn post_json(s: &Server, path: &str, key: &str, body: Value) {
    let (status, body, _) = post_otlp(
        s,
        path,
        Some(key),
        "application/json",
        body.to_string().into_bytes(),
        false,
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
}

async fn get(s: &Server, token: &str, path: &str, params: &[(&str, &str)]) -> (u16, Value) {
    let resp = client()
        .get(s.url(path))
        .bearer_auth(token)
        .query(params)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn ok(s: &Server, token: &str, path: &str, params: &[(&str, &str)]) -> Value {
    let (status, body) = get(s, token, path, params).await;
    assert_eq!(status, 200, "{path} {params:?}: {body}");
    body
}

async fn search(s: &Server, token: &str, signal: &str, q: &str) -> Vec<Value> {
    let body = ok(
        s,
        token,
        "/api/v1/search",
        &[("signal", signal), ("q", q), ("limit", "1000")],
    )
    .await;
    body["rows"].as_array().unwrap().clone()
}

fn column<'a>(rows: &'a [Value], c: &str) -> Vec<&'a str> {
    rows.iter().map(|r| r[c].as_str().unwrap_or("")).collect()
}

#[tokio::test]
async fn the_query_api_answers_every_kind_of_question() {
    let dir = tempfile::tempdir().unwrap();
    let creds = init(dir.path());
    let s = Server::start(dir.path(), &["--max-query-range", "7d"]);
    let token = creds.api_token.as_str();
    let f = load(&s, &creds.ingestion_key).await;
    // Visible within a second of the acknowledgement.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    // --- search language ---
    let rows = search(&s, token, "logs", "level:error service:api").await;
    assert_eq!(rows.len(), 5, "api errors: i = 0, 2, 4, 6, 8");
    assert!(rows.iter().all(|r| r["SeverityText"] == "ERROR"));
    let rows = search(&s, token, "logs", "http.status_code:>=500 -service:api").await;
    assert_eq!(rows.len(), 4 + 3, "web: 0,3,6,9; db: 0,4,8");
    let rows = search(
        &s,
        token,
        "logs",
        "request AND (service:db OR service:web) took",
    )
    .await;
    assert_eq!(rows.len(), 20);
    let rows = search(&s, token, "logs", "\"request 3 took\"").await;
    assert_eq!(column(&rows, "ServiceName").len(), 3);
    let rows = search(&s, token, "traces", "duration:>15000000 status:error").await;
    assert_eq!(column(&rows, "SpanName"), ["GET /users"]);

    // Injection: every hostile value round-trips as a value and matches
    // exactly its own row; the table is intact afterwards.
    for h in HOSTILE {
        let escaped = h.replace('\\', "\\\\").replace('"', "\\\"");
        let rows = search(&s, token, "logs", &format!("payload:\"{escaped}\"")).await;
        assert_eq!(rows.len(), 1, "payload:{h:?}");
        assert_eq!(rows[0]["Body"], format!("hostile {h}"));
        let rows = search(&s, token, "logs", &format!("\"{escaped}\"")).await;
        assert!(
            rows.iter().any(|r| r["Body"] == format!("hostile {h}")),
            "phrase {h:?}"
        );
    }
    assert_eq!(
        search(&s, token, "logs", "service:evil").await.len(),
        HOSTILE.len()
    );
    assert_eq!(
        search(&s, token, "logs", "").await.len(),
        30 + HOSTILE.len()
    );

    // Errors point at the position and suggest.
    let (status, body) = get(
        &s,
        token,
        "/api/v1/search",
        &[("signal", "logs"), ("q", "service:api)")],
    )
    .await;
    assert_eq!(
        (status, body["position"].as_u64()),
        (400, Some(12)),
        "{body}"
    );
    assert!(body["error"].as_str().unwrap().contains("unexpected `)`"));
    let (status, body) = get(
        &s,
        token,
        "/api/v1/search",
        &[("signal", "logs"), ("q", "servce:api")],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"],
        "unknown field `servce`; did you mean `service`? at 1"
    );

    // Explain.
    let body = ok(
        &s,
        token,
        "/api/v1/explain",
        &[("q", "level:error -service:api")],
    )
    .await;
    let text = body["explanation"].as_str().unwrap();
    assert!(
        text.contains("SeverityText") && text.contains("not"),
        "{text}"
    );
    assert_eq!(body["query"]["op"], "and");

    // Columns, sort, cursor pagination = one big page.
    let all = search(&s, token, "logs", "request").await;
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut params = vec![
            ("signal", "logs"),
            ("q", "request"),
            ("limit", "7"),
            ("columns", "Timestamp,service,Body,http.route"),
        ];
        if let Some(c) = &cursor {
            params.push(("cursor", c.as_str()));
        }
        let body = ok(&s, token, "/api/v1/search", &params).await;
        let rows = body["rows"].as_array().unwrap();
        if let Some(r) = rows.first() {
            let keys: Vec<_> = r.as_object().unwrap().keys().cloned().collect();
            assert_eq!(keys.len(), 4, "{keys:?}");
            assert!(r["http.route"].as_str().unwrap().starts_with("/r"));
            assert!(
                r.get("ServiceName").is_some(),
                "aliases come back under schema names"
            );
        }
        paged.extend(rows.iter().cloned());
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(column(&paged, "Body"), column(&all, "Body"));
    let asc = ok(
        &s,
        token,
        "/api/v1/search",
        &[("signal", "traces"), ("sort", "duration"), ("order", "asc")],
    )
    .await;
    let durations: Vec<u64> = asc["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["Duration"].as_u64().unwrap())
        .collect();
    assert_eq!(durations, [5, 10, 20, 30, 40].map(|ms| ms * 1_000_000));

    // Histogram: counts per bucket add up; split by service.
    let from = f.t0.to_string();
    let h = ok(
        &s,
        token,
        "/api/v1/histogram",
        &[
            ("signal", "logs"),
            ("q", "request"),
            ("interval", "1m"),
            ("by", "service"),
            ("from", &from),
        ],
    )
    .await;
    assert_eq!(h["interval_seconds"], 60.0);
    let series = h["series"].as_array().unwrap();
    assert_eq!(series.len(), 3);
    let total: f64 = series
        .iter()
        .flat_map(|s| s["points"].as_array().unwrap())
        .map(|p| p["values"][0].as_f64().unwrap())
        .sum();
    assert_eq!(total, 30.0);
    let points = series[0]["points"].as_array().unwrap();
    assert!(
        points.len() >= 10,
        "zero-filled up to now: {}",
        points.len()
    );
    assert_eq!(points.last().unwrap()["values"][0], 0.0);
    let auto = ok(&s, token, "/api/v1/histogram", &[("signal", "logs")]).await;
    assert_eq!(auto["interval_seconds"], 1800.0, "24 h in about 60 buckets");

    // Facets.
    let body = ok(
        &s,
        token,
        "/api/v1/facets",
        &[
            ("signal", "logs"),
            ("q", "level:error"),
            ("fields", "service,http.route"),
        ],
    )
    .await;
    let services = &body["facets"][0];
    assert_eq!(services["total"], 5 + 4 + 3);
    assert_eq!(services["values"][0], json!({"value": "api", "count": 5}));

    // Aggregate: exact p95 and count by service over the whole range.
    let body = ok(
        &s,
        token,
        "/api/v1/aggregate",
        &[
            ("signal", "traces"),
            ("measures", "count,p50(duration),max(Duration)"),
            ("by", "service"),
            ("interval", "none"),
        ],
    )
    .await;
    let api = &body["series"][0];
    assert_eq!(api["group"]["service"], "api");
    assert_eq!(
        api["points"][0]["values"],
        json!([4.0, 25_000_000.0, 40_000_000.0])
    );

    // Trace: spans and the logs that carry its id.
    let body = ok(
        &s,
        token,
        &format!("/api/v1/traces/{}", f.trace.to_uppercase()),
        &[],
    )
    .await;
    assert_eq!(body["spans"].as_array().unwrap().len(), 5);
    assert_eq!(
        column(body["logs"].as_array().unwrap(), "ServiceName"),
        ["api", "web", "db"]
    );

    // Services (entry spans only: the db client span is not a request).
    let body = ok(&s, token, "/api/v1/services", &[]).await;
    let api = &body["services"][0];
    assert_eq!(
        (
            api["service"].as_str(),
            api["requests"].as_u64(),
            api["errors"].as_u64()
        ),
        (Some("api"), Some(4), Some(1))
    );
    assert_eq!(api["error_rate"], 0.25);
    assert_eq!(api["p50_ms"], 25.0);
    assert_eq!(body["services"].as_array().unwrap().len(), 1);

    // Metrics: gauge averaged per host; the counter as a rate with a restart.
    let body = ok(
        &s,
        token,
        "/api/v1/metrics/series",
        &[
            ("name", "cpu.usage"),
            ("by", "host.name"),
            ("interval", "1m"),
            ("from", &from),
        ],
    )
    .await;
    assert_eq!(body["metric_type"], "gauge");
    let hosts: Vec<_> = body["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["group"]["host.name"].clone(),
                s["points"][0]["values"][0].clone(),
            )
        })
        .collect();
    assert!(
        hosts.contains(&(json!("h1"), json!(10.0))) && hosts.contains(&(json!("h2"), json!(30.0))),
        "{hosts:?}"
    );
    let body = ok(
        &s,
        token,
        "/api/v1/metrics/series",
        &[("name", "requests"), ("interval", "1m"), ("from", &from)],
    )
    .await;
    let points = body["series"][0]["points"].as_array().unwrap();
    let increases: Vec<_> = points
        .iter()
        .take(4)
        .map(|p| p["values"][1].clone())
        .collect();
    assert_eq!(
        increases,
        [Value::Null, json!(60.0), json!(60.0), json!(10.0)],
        "{points:?}"
    );
    assert_eq!(points[1]["values"][0], 1.0, "60 per minute = 1/s");
    let body = ok(
        &s,
        token,
        "/api/v1/metrics",
        &[
            ("name", "cpu.usage"),
            ("q", "host.name:h2"),
            ("from", &from),
        ],
    )
    .await;
    assert_eq!(body["rows"].as_array().unwrap().len(), 4);

    // Fields: columns with aliases, attribute keys with counts.
    let body = ok(&s, token, "/api/v1/fields", &[("signal", "logs")]).await;
    let keys: Vec<_> = body["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["key"].as_str().unwrap(), a["count"].as_u64().unwrap()))
        .collect();
    assert!(keys.contains(&("http.route", 30)), "{keys:?}");
    assert!(
        body["columns"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "SeverityText" && c["aliases"] == json!(["level", "severity"]))
    );

    // SQL mode.
    let sql = |body: Value| {
        let s = &s;
        async move {
            let r = client()
                .post(s.url("/api/v1/sql"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = sql(json!({"sql": "SELECT ServiceName, count(*) AS n FROM otel_logs WHERE SeverityText = 'ERROR' GROUP BY ServiceName ORDER BY n DESC"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"][0], json!({"ServiceName": "api", "n": 5}));
    let (status, body) = sql(json!({"sql": "DROP TABLE otel_logs"})).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("only SELECT"));
    let (status, body) = sql(json!({"sql": "SELECT * FROM otel_logs", "limit": 3})).await;
    assert_eq!(
        (
            status,
            body["rows"].as_array().unwrap().len(),
            &body["truncated"]
        ),
        (200, 3, &json!(true))
    );

    // OpenAPI: public, and lists every route.
    let doc: Value = client()
        .get(s.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/api/v1/search",
        "/api/v1/explain",
        "/api/v1/fields",
        "/api/v1/histogram",
        "/api/v1/facets",
        "/api/v1/aggregate",
        "/api/v1/traces/{trace_id}",
        "/api/v1/services",
        "/api/v1/metrics",
        "/api/v1/metrics/series",
        "/api/v1/sql",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} undocumented");
    }
}

#[tokio::test]
async fn every_limit_has_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let creds = init(dir.path());
    let s = Server::start(dir.path(), &["--max-query-range", "1h"]);
    let token = creds.api_token.as_str();
    let long = "a ".repeat(3000);
    let deep = format!("{}a{}", "(".repeat(40), ")".repeat(40));
    let two_hours_ago = (now_nanos() - 120 * MIN).to_string();
    let many_columns = (0..60)
        .map(|i| format!("c{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let many_quantiles = (1..20)
        .map(|i| format!("0.{i:02}"))
        .collect::<Vec<_>>()
        .join(",");
    for (path, params, want) in [
        (
            "/api/v1/search",
            vec![("signal", "logs"), ("q", long.as_str())],
            "at most 4096",
        ),
        (
            "/api/v1/search",
            vec![("signal", "logs"), ("q", deep.as_str())],
            "nest",
        ),
        (
            "/api/v1/search",
            vec![("signal", "logs"), ("limit", "10001")],
            "`limit`",
        ),
        (
            "/api/v1/search",
            vec![("signal", "logs"), ("from", two_hours_ago.as_str())],
            "at most 1h",
        ),
        (
            "/api/v1/search",
            vec![("signal", "logs"), ("q", "body:/regex/")],
            "regular expressions",
        ),
        (
            "/api/v1/search",
            vec![("signal", "logs"), ("from", "-5")],
            "between 1970 and 2200",
        ),
        (
            "/api/v1/histogram",
            vec![("signal", "logs"), ("from", "9223368436854775807")],
            "between 1970 and 2200",
        ),
        (
            "/api/v1/search",
            vec![("signal", "logs"), ("columns", many_columns.as_str())],
            "at most 50",
        ),
        (
            "/api/v1/search",
            vec![("signal", "logs"), ("q", "timestamp:>5")],
            "time range",
        ),
        (
            "/api/v1/search",
            vec![("signal", "logs"), ("sort", "Body")],
            "not supported",
        ),
        (
            "/api/v1/metrics/series",
            vec![("name", "x"), ("quantiles", many_quantiles.as_str())],
            "at most 10",
        ),
        (
            "/api/v1/search",
            vec![("signal", "logs"), ("cursor", "garbage")],
            "`cursor`",
        ),
        (
            "/api/v1/search",
            vec![("signal", "logs"), ("sort", "http.route")],
            "`sort`",
        ),
        (
            "/api/v1/histogram",
            vec![
                ("signal", "logs"),
                ("interval", "1s"),
                ("from", &(now_nanos() - 50 * MIN).to_string()),
            ],
            "buckets",
        ),
        (
            "/api/v1/aggregate",
            vec![("signal", "logs"), ("measures", "p42(x)")],
            "unknown measure",
        ),
        (
            "/api/v1/aggregate",
            vec![("signal", "logs"), ("by", "a,b,c,d")],
            "at most 3",
        ),
        (
            "/api/v1/aggregate",
            vec![("signal", "logs"), ("series_limit", "1000")],
            "series_limit",
        ),
        ("/api/v1/facets", vec![("signal", "logs")], "`fields`"),
        ("/api/v1/traces/xyz", vec![], "32 hex"),
        ("/api/v1/metrics/series", vec![("quantiles", "2")], "name"),
    ] {
        let (status, body) = get(&s, token, path, &params).await;
        assert_eq!(status, 400, "{path} {params:?}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(want),
            "{path}: {body}"
        );
    }
    // The longest accepted query (thousands of terms) runs; it does not
    // exhaust the planner's stack.
    let longest = "x ".repeat(2040);
    for path in ["/api/v1/search", "/api/v1/histogram"] {
        let (status, body) = get(&s, token, path, &[("signal", "logs"), ("q", &longest)]).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
}

#[tokio::test]
async fn otelhouse_search_prints_a_table_or_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let creds = init(dir.path());
    let s = Server::start(dir.path(), &[]);
    load(&s, &creds.ingestion_key).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let url = format!("http://{}", s.api);
    let run = |args: &[&str]| {
        Command::new(BIN)
            .arg("search")
            .args(args)
            .env("OTELHOUSE_URL", &url)
            .env("OTELHOUSE_API_TOKEN", &creds.api_token)
            .output()
            .unwrap()
    };
    let out = run(&["level:error service:api", "--since", "1h", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert!(
        lines
            .iter()
            .all(|l| l["ServiceName"] == "api" && l["SeverityText"] == "ERROR")
    );

    let out = run(&[
        "request",
        "--since",
        "1h",
        "--limit",
        "25",
        "--columns",
        "service,Body",
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.lines().next().unwrap().starts_with("ServiceName"),
        "{text}"
    );
    assert_eq!(
        text.lines().count(),
        26,
        "header + 25 rows over several pages: {text}"
    );

    let out = run(&["service:(api", "--since", "1h"]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains('^') && err.contains("400"), "{err}");

    let out = Command::new(BIN)
        .args(["search", "x"])
        .env("OTELHOUSE_URL", &url)
        .env_remove("OTELHOUSE_API_TOKEN")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("OTELHOUSE_API_TOKEN"));
}

/// The same data through the API of an embedded server and of a server on
/// ClickHouse (the real engine, chdb): every query endpoint gives the same
/// answer. The stores' own parity test covers random data; this covers
/// what the API builds on top of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_alike_on_clickhouse() {
    let front = otelhouse_clickhouse::testing::ChdbFront::start();
    let dir = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (dir.path().join("embedded"), dir.path().join("clickhouse"));
    let (a_creds, b_creds) = (init(&a_dir), init(&b_dir));
    let a = Server::start(&a_dir, &["--max-query-range", "7d"]);
    let url = front.url();
    let b = Server::start(
        &b_dir,
        &["--max-query-range", "7d", "--clickhouse-url", url.as_str()],
    );
    let t0 = (now_nanos() - 10 * MIN) / MIN * MIN;
    let f = load_at(&a, &a_creds.ingestion_key, t0).await;
    load_at(&b, &b_creds.ingestion_key, t0).await;
    // Everything acknowledged is in ClickHouse (2 requests of logs, spans,
    // metrics: 37 + 5 + 12 rows).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !metrics_text(&b)
        .await
        .contains("otelhouse_clickhouse_backlog_entries 0")
        || !metrics_text(&b)
            .await
            .contains("otelhouse_clickhouse_shipped_rows_total 54")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            metrics_text(&b).await
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let from = t0.to_string();
    let trace = format!("/api/v1/traces/{}", f.trace);
    let queries: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "/api/v1/search",
            vec![("signal", "logs"), ("q", "request"), ("limit", "50")],
        ),
        (
            "/api/v1/search",
            vec![
                ("signal", "logs"),
                ("q", "level:error http.status_code:>=500"),
                ("order", "asc"),
            ],
        ),
        (
            "/api/v1/search",
            vec![
                ("signal", "logs"),
                ("q", "-service:api (took OR hostile)"),
                ("columns", "ServiceName,Body,http.route"),
            ],
        ),
        (
            "/api/v1/search",
            vec![("signal", "logs"), ("q", "payload:*"), ("limit", "3")],
        ),
        (
            "/api/v1/search",
            vec![
                ("signal", "traces"),
                ("q", "duration:>15000000"),
                ("sort", "duration"),
                ("order", "desc"),
            ],
        ),
        (
            "/api/v1/histogram",
            vec![
                ("signal", "logs"),
                ("q", "request"),
                ("interval", "1m"),
                ("by", "service"),
                ("from", &from),
            ],
        ),
        (
            "/api/v1/facets",
            vec![
                ("signal", "logs"),
                ("q", "level:error"),
                ("fields", "service,http.route"),
            ],
        ),
        (
            "/api/v1/aggregate",
            vec![
                ("signal", "traces"),
                (
                    "measures",
                    "count,p50(duration),p99(duration),max(Duration),avg(Duration)",
                ),
                ("by", "service"),
                ("interval", "none"),
            ],
        ),
        (
            "/api/v1/aggregate",
            vec![
                ("signal", "logs"),
                ("measures", "count,count_distinct(http.route)"),
                ("by", "level"),
                ("interval", "5m"),
                ("from", &from),
            ],
        ),
        (&trace, vec![]),
        ("/api/v1/services", vec![]),
        (
            "/api/v1/metrics/series",
            vec![
                ("name", "cpu.usage"),
                ("by", "host.name"),
                ("interval", "1m"),
                ("from", &from),
            ],
        ),
        (
            "/api/v1/metrics/series",
            vec![("name", "requests"), ("interval", "1m"), ("from", &from)],
        ),
        (
            "/api/v1/metrics",
            vec![
                ("name", "cpu.usage"),
                ("q", "host.name:h2"),
                ("from", &from),
            ],
        ),
        (
            "/api/v1/explain",
            vec![("signal", "logs"), ("q", "level:error -service:web")],
        ),
        ("/api/v1/fields", vec![("signal", "logs")]),
        ("/api/v1/fields", vec![("signal", "traces")]),
    ];
    // A fixed end: "now" differs between two requests.
    let to = (t0 + 20 * MIN).to_string();
    for (path, params) in &queries {
        let mut params = params.clone();
        if !path.contains("traces/") && !path.ends_with("explain") {
            params.push(("to", &to));
        }
        let params = &params;
        let from_a = ok(&a, &a_creds.api_token, path, params).await;
        let from_b = ok(&b, &b_creds.api_token, path, params).await;
        assert_eq!(from_a, from_b, "{path} {params:?}");
    }
}
