//! End-to-end: the real binary, real sockets, real files.

mod common;

use std::time::{Duration, Instant};

use common::*;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, any_value::Value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use prost::Message;
use tonic::Code;

fn bodies(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix} message {i}")).collect()
}

async fn grpc_client(s: &Server) -> LogsServiceClient<tonic::transport::Channel> {
    LogsServiceClient::connect(format!("http://{}", s.grpc))
        .await
        .unwrap()
}

fn with_key<T>(msg: T, key: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", key.parse().unwrap());
    r
}

#[tokio::test]
async fn logs_round_trip_over_http_and_grpc_with_both_key_forms() {
    let dir = tempfile::tempdir().unwrap();
    let creds = init(dir.path());
    let s = Server::start(dir.path(), &[]);

    let req = logs_request("http-svc", &bodies("Hello HTTP", 3));
    let (status, _, _) = post_otlp(
        &s,
        "/v1/logs",
        Some(&creds.ingestion_key),
        "application/x-protobuf",
        req.encode_to_vec(),
        false,
    )
    .await;
    assert_eq!(status, 200);
    // Visible at once: rows reach the store before the acknowledgement.
    let (_, body) = api_get(
        &s,
        &creds.api_token,
        "/api/v1/search?signal=logs&q=hello%20http",
    )
    .await;
    assert_eq!(body["rows"].as_array().unwrap().len(), 3, "{body}");
    let req = logs_request("gz-svc", &bodies("hello gzip", 2));
    let bearer = format!("Bearer {}", creds.ingestion_key);
    let (status, _, _) = post_otlp(
        &s,
        "/v1/logs",
        Some(&bearer),
        "application/x-protobuf",
        gzip(&req.encode_to_vec()),
        true,
    )
    .await;
    assert_eq!(status, 200);
    let mut grpc = grpc_client(&s)
        .await
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    grpc.export(with_key(
        logs_request("grpc-svc", &bodies("hello gRPC", 4)),
        &creds.ingestion_key,
    ))
    .await
    .unwrap();

    let rows = rows_eventually(
        &s,
        &creds.api_token,
        "/api/v1/search?signal=logs&q=HELLO&limit=100",
        9,
    )
    .await;
    assert_eq!(rows.len(), 9);
    // Newest first, case-insensitive substring, schema columns.
    let services: std::collections::BTreeSet<_> = rows
        .iter()
        .map(|r| r["ServiceName"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        services.into_iter().collect::<Vec<_>>(),
        ["grpc-svc", "gz-svc", "http-svc"]
    );
    let times: Vec<&str> = rows
        .iter()
        .map(|r| r["Timestamp"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    assert_eq!(rows[0]["SeverityText"], "INFO");
    assert_eq!(rows[0]["SeverityNumber"], 9);
    assert!(rows[0]["Timestamp"].as_str().unwrap().ends_with('Z'));

    let rows = rows_eventually(
        &s,
        &creds.api_token,
        "/api/v1/search?signal=logs&q=grpc&limit=2",
        2,
    )
    .await;
    assert_eq!(rows.len(), 2, "limit is honoured");
}

#[tokio::test]
async fn missing_or_wrong_keys_are_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let creds = init(dir.path());
    let s = Server::start(dir.path(), &[]);
    let body = logs_request("intruder", &bodies("should not be stored", 1)).encode_to_vec();
    for key in [
        None,
        Some("wrong"),
        Some("Bearer wrong"),
        Some(creds.api_token.as_str()),
    ] {
        let (status, _, headers) = post_otlp(
            &s,
            "/v1/logs",
            key,
            "application/x-protobuf",
            body.clone(),
            false,
        )
        .await;
        assert_eq!(status, 401, "key {key:?}");
        assert_eq!(headers["www-authenticate"], "Bearer");
    }
    let mut grpc = grpc_client(&s).await;
    let err = grpc
        .export(tonic::Request::new(logs_request(
            "intruder",
            &bodies("x", 1),
        )))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = grpc
        .export(with_key(logs_request("intruder", &bodies("x", 1)), "nope"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    // The API needs a token too, and an ingestion key is not one.
    let (status, _) = api_get(&s, "wrong", "/api/v1/search?signal=logs").await;
    assert_eq!(status, 401);
    let (status, _) = api_get(&s, &creds.ingestion_key, "/api/v1/search?signal=logs").await;
    assert_eq!(status, 401);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, body) = api_get(&s, &creds.api_token, "/api/v1/search?signal=logs").await;
    assert_eq!(body["rows"].as_array().unwrap().len(), 0);
    let metrics = metrics_text(&s).await;
    assert!(
        metrics.contains(
            "otelhouse_records_rejected_total{signal=\"logs\",reason=\"unauthenticated\"}"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn keys_and_tokens_are_managed_from_the_cli_while_the_server_runs() {
    let dir = tempfile::tempdir().unwrap();
    let creds = init(dir.path());
    let s = Server::start(dir.path(), &[]);
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(BIN)
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let created = cli(&["keys", "create", "--name", "ci"]);
    let id = created.split_whitespace().nth(3).unwrap().to_owned();
    let key = created.lines().last().unwrap().trim().to_owned();
    assert!(key.starts_with("ohk_"));
    let listed = cli(&["keys", "list"]);
    assert!(
        listed.contains(&id) && listed.contains("ci") && !listed.contains(&key),
        "{listed}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let body = logs_request("cli", &bodies("with new key", 1)).encode_to_vec();
    let (status, _, _) = post_otlp(
        &s,
        "/v1/logs",
        Some(&key),
        "application/x-protobuf",
        body.clone(),
        false,
    )
    .await;
    assert_eq!(status, 200);
    cli(&["keys", "revoke", &id]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, _, _) = post_otlp(
        &s,
        "/v1/logs",
        Some(&key),
        "application/x-protobuf",
        body.clone(),
        false,
    )
    .await;
    assert_eq!(status, 401, "revoked key works no more, without a restart");
    let (status, _, _) = post_otlp(
        &s,
        "/v1/logs",
        Some(&creds.ingestion_key),
        "application/x-protobuf",
        body,
        false,
    )
    .await;
    assert_eq!(status, 200, "other keys unaffected");
    let token_out = cli(&["tokens", "create", "--name", "grafana"]);
    let token = token_out.lines().last().unwrap().trim().to_owned();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        api_get(&s, &token, "/api/v1/search?signal=logs").await.0,
        200
    );
    // init refuses an initialised directory.
    let out = std::process::Command::new(BIN)
        .args(["init", "--json", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already initialised"));
}

#[tokio::test]
async fn first_start_prints_credentials_once_and_they_work() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("fresh");
    let mut s = Server::start(&data, &[]);
    let out = s.stdout();
    assert!(out.contains("shown ONLY ONCE"), "{out}");
    let key = out
        .lines()
        .find_map(|l| l.split("ingestion key").nth(1))
        .unwrap()
        .trim()
        .trim_end_matches('║')
        .trim()
        .to_owned();
    let body = logs_request("boxed", &bodies("first start", 1)).encode_to_vec();
    assert_eq!(
        post_otlp(
            &s,
            "/v1/logs",
            Some(&key),
            "application/x-protobuf",
            body,
            false
        )
        .await
        .0,
        200
    );
    // Not in the log, and not printed again on the next start.
    assert!(!s.logs().contains(&key));
    s.stop();
    let s2 = Server::start(&data, &[]);
    assert!(!s2.stdout().contains("ONLY ONCE"));
    let db = std::fs::read(data.join("otelhouse.db")).unwrap();
    assert!(
        !String::from_utf8_lossy(&db).contains(&key[4..]),
        "keys are stored hashed"
    );
}

#[tokio::test]
async fn each_limit_is_enforced_with_a_clear_error_and_the_server_survives() {
    let dir = tempfile::tempdir().unwrap();
    let creds = init(dir.path());
    let s = Server::start(
        dir.path(),
        &[
            "--max-request-bytes",
            "300000",
            "--max-decompressed-bytes",
            "600000",
        ],
    );
    let key = Some(creds.ingestion_key.as_str());
    let pb = "application/x-protobuf";
    // Request too large as received.
    let big = logs_request("big", &["x".repeat(400_000)]).encode_to_vec();
    let (status, body, _) = post_otlp(&s, "/v1/logs", key, pb, big, false).await;
    assert_eq!(status, 413);
    let st = otelhouse_status(&body);
    assert!(st.contains("max_request_bytes"), "{st}");
    // Gzip bomb: tiny on the wire, huge inflated.
    let bomb = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&vec![b'a'; 50 << 20]).unwrap();
        e.finish().unwrap()
    };
    assert!(bomb.len() < 300_000);
    let (status, body, _) = post_otlp(&s, "/v1/logs", key, pb, bomb, true).await;
    assert_eq!(status, 413);
    assert!(otelhouse_status(&body).contains("max_decompressed_bytes"));
    // Per-record limits.
    let mut deep = AnyValue {
        value: Some(Value::IntValue(1)),
    };
    for _ in 0..40 {
        deep = AnyValue {
            value: Some(Value::ArrayValue(ArrayValue { values: vec![deep] })),
        };
    }
    let cases: Vec<(LogRecord, &str)> = vec![
        (
            LogRecord {
                body: Some(deep),
                ..Default::default()
            },
            "max_value_depth",
        ),
        (
            LogRecord {
                attributes: (0..300)
                    .map(|i| kv(&format!("k{i}"), Value::IntValue(i)))
                    .collect(),
                ..Default::default()
            },
            "max_attributes",
        ),
        (
            LogRecord {
                attributes: vec![kv(&"k".repeat(300), Value::IntValue(1))],
                ..Default::default()
            },
            "max_key_bytes",
        ),
        (
            LogRecord {
                attributes: vec![kv("k", Value::StringValue("v".repeat(70_000)))],
                ..Default::default()
            },
            "max_value_bytes",
        ),
        (
            LogRecord {
                trace_id: vec![1; 5],
                ..Default::default()
            },
            "traceId",
        ),
    ];
    for (record, needle) in cases {
        let mut req = logs_request("limits", &[]);
        req.resource_logs[0].scope_logs[0].log_records = vec![record];
        let (status, body, _) =
            post_otlp(&s, "/v1/logs", key, pb, req.encode_to_vec(), false).await;
        assert_eq!(status, 400, "{needle}");
        let msg = otelhouse_status(&body);
        assert!(
            msg.contains(needle) && msg.contains("logRecords[0]"),
            "{needle}: {msg}"
        );
    }
    let mut req = logs_request("limits", &[]);
    req.resource_logs[0].scope_logs[0].log_records = vec![LogRecord::default(); 100_001];
    let (status, body, _) = post_otlp(&s, "/v1/logs", key, pb, req.encode_to_vec(), false).await;
    assert_eq!(status, 400);
    assert!(otelhouse_status(&body).contains("max_records"));
    // Garbage and wrong media types.
    assert_eq!(
        post_otlp(&s, "/v1/logs", key, pb, b"\xff\xff\xff".to_vec(), false)
            .await
            .0,
        400
    );
    assert_eq!(
        post_otlp(&s, "/v1/logs", key, "text/plain", b"hi".to_vec(), false)
            .await
            .0,
        415
    );
    // gRPC: a message over the decoded limit.
    let mut grpc = grpc_client(&s).await.max_encoding_message_size(64 << 20);
    let err = grpc
        .export(with_key(
            logs_request("big", &["y".repeat(700_000)]),
            &creds.ingestion_key,
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(err.code(), Code::ResourceExhausted | Code::OutOfRange),
        "{err:?}"
    );
    // gRPC: within the decoded limit but over the request-bytes limit.
    let err = grpc
        .export(with_key(
            logs_request("big", &["y".repeat(400_000)]),
            &creds.ingestion_key,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("max_request_bytes"), "{err:?}");
    // Still serving, nothing stored from the refused requests.
    let ok = logs_request("after", &bodies("still alive", 1)).encode_to_vec();
    assert_eq!(post_otlp(&s, "/v1/logs", key, pb, ok, false).await.0, 200);
    let rows = rows_eventually(
        &s,
        &creds.api_token,
        "/api/v1/search?signal=logs&limit=1000",
        1,
    )
    .await;
    assert_eq!(rows.len(), 1);
    // API inputs have limits too.
    for bad in [
        "/api/v1/search?signal=logs&limit=0",
        "/api/v1/search?signal=logs&limit=99999",
        "/api/v1/search?signal=nope",
        "/api/v1/search?signal=logs&from=yesterday",
        "/api/v1/traces/xyz",
        "/api/v1/metrics",
    ] {
        let (status, body) = api_get(&s, &creds.api_token, bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
}

/// The message of an OTLP/HTTP protobuf error body (google.rpc.Status).
fn otelhouse_status(body: &[u8]) -> String {
    #[derive(Clone, PartialEq, prost::Message)]
    struct Status {
        #[prost(int32, tag = "1")]
        code: i32,
        #[prost(string, tag = "2")]
        message: String,
    }
    Status::decode(body)
        .map(|s| s.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned())
}

#[tokio::test]
async fn old_records_are_reported_as_partial_success() {
    let dir = tempfile::tempdir().unwrap();
    let creds = init(dir.path());
    let s = Server::start(dir.path(), &["--retention-logs", "1h"]);
    let mut req = logs_request("partial", &bodies("partial", 3));
    req.resource_logs[0].scope_logs[0].log_records[0].time_unix_nano =
        now_nanos() - 2 * 3600 * 1_000_000_000;
    let (status, body, _) = post_otlp(
        &s,
        "/v1/logs",
        Some(&creds.ingestion_key),
        "application/x-protobuf",
        req.encode_to_vec(),
        false,
    )
    .await;
    assert_eq!(status, 200);
    let resp = ExportLogsServiceResponse::decode(&body[..]).unwrap();
    let partial = resp.partial_success.unwrap();
    assert_eq!(partial.rejected_log_records, 1);
    assert!(
        partial.error_message.contains("retention"),
        "{}",
        partial.error_message
    );
    let rows = rows_eventually(
        &s,
        &creds.api_token,
        "/api/v1/search?signal=logs&q=partial",
        2,
    )
    .await;
    assert_eq!(rows.len(), 2);
}

#[tokio::test]
async fn overload_answers_503_with_retry_after_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let creds = init(dir.path());
    // A tiny write buffer and no flush for a minute: the buffer fills fast.
    let s = Server::start(
        dir.path(),
        &["--max-memory-bytes", "2000000", "--flush-interval", "60s"],
    );
    let body = logs_request("load", &bodies(&"z".repeat(200), 500)).encode_to_vec();
    let mut refused = None;
    for _ in 0..200 {
        let (status, _, headers) = post_logs(&s, &creds.ingestion_key, &body).await;
        if status == 503 {
            refused = Some(headers);
            break;
        }
        assert_eq!(status, 200);
    }
    let headers = refused.expect("the server must push back once its buffer is full");
    assert_eq!(headers["retry-after"], "1");
    assert_grpc_logs_refused_as_unavailable(&s, &creds.ingestion_key).await;
    let metrics = metrics_text(&s).await;
    assert!(metrics.contains("reason=\"overloaded\""), "{metrics}");
    let tail = metric(&metrics, "otelhouse_memory_tail_bytes");
    assert!(
        tail < 4_000_000.0,
        "memory tail {tail} stays near its 2 MB budget"
    );
}

/// An OTLP/HTTP protobuf logs request with the ingestion key.
async fn post_logs(
    s: &Server,
    key: &str,
    body: &[u8],
) -> (u16, Vec<u8>, reqwest::header::HeaderMap) {
    post_otlp(
        s,
        "/v1/logs",
        Some(key),
        "application/x-protobuf",
        body.to_vec(),
        false,
    )
    .await
}

/// An OTLP/gRPC logs export is refused with `UNAVAILABLE` (retry later).
async fn assert_grpc_logs_refused_as_unavailable(s: &Server, key: &str) {
    let err = grpc_client(s)
        .await
        .export(with_key(logs_request("load", &bodies("x", 10)), key))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
}

/// The value of an unlabelled metric in Prometheus text.
fn metric(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} in {metrics}"))
        .trim()
        .parse()
        .unwrap()
}

/// A server already over its resident-memory budget (set far below what
/// any process needs) refuses ingestion with retry-later, says why, counts
/// it, and keeps answering the API.
#[tokio::test]
async fn over_its_resident_memory_budget_ingestion_answers_503() {
    let dir = tempfile::tempdir().unwrap();
    let creds = init(dir.path());
    let s = Server::start(dir.path(), &["--max-resident-memory", "1MiB"]);
    let body = logs_request("rss", &bodies("x", 10)).encode_to_vec();
    let mut answer = None;
    // The guard looks every 100 ms; its first look is at start.
    for _ in 0..50 {
        let (status, body, headers) = post_logs(&s, &creds.ingestion_key, &body).await;
        if status == 503 {
            answer = Some((body, headers));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (body, headers) = answer.expect("over its budget the server must refuse");
    assert_eq!(headers["retry-after"], "1");
    let message = String::from_utf8_lossy(&body);
    assert!(
        message.contains("resident memory") && message.contains("at its budget (1 MiB"),
        "{message}"
    );
    assert_grpc_logs_refused_as_unavailable(&s, &creds.ingestion_key).await;
    let metrics = metrics_text(&s).await;
    assert!(metrics.contains("reason=\"memory\""), "{metrics}");
    assert!(metric(&metrics, "otelhouse_memory_refusals_total") >= 2.0);
    assert_eq!(metric(&metrics, "otelhouse_memory_budget_bytes"), 1048576.0);
    assert!(metric(&metrics, "otelhouse_process_resident_memory_bytes") > 1048576.0);
    // Nothing was stored; the API still answers.
    let (status, json) = api_get(&s, &creds.api_token, "/api/v1/search?signal=logs").await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["rows"].as_array().unwrap().len(), 0, "{json}");
    assert!(s.logs().contains("resident memory near its budget"));
}

#[tokio::test]
async fn a_taken_port_names_the_port_and_the_flag() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .args([
            "serve",
            "--otlp-grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .arg("--otlp-http-addr")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("port {port}")) && err.contains("--otlp-http-addr"),
        "{err}"
    );
    // Two of our own listeners on one port.
    let out = std::process::Command::new(BIN)
        .args([
            "serve",
            "--otlp-grpc-addr",
            "127.0.0.1:4999",
            "--otlp-http-addr",
            "127.0.0.1:4999",
            "--http-addr",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("--otlp-grpc-addr and --otlp-http-addr both use port 4999"),
        "{err}"
    );
}

#[tokio::test]
async fn health_ready_and_metrics_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let creds = init(dir.path());
    let s = Server::start(dir.path(), &[]);
    for p in ["/healthz", "/readyz"] {
        assert_eq!(client().get(s.url(p)).send().await.unwrap().status(), 200);
    }
    let body = logs_request("m", &bodies("count me", 7)).encode_to_vec();
    assert_eq!(
        post_otlp(
            &s,
            "/v1/logs",
            Some(&creds.ingestion_key),
            "application/x-protobuf",
            body,
            false
        )
        .await
        .0,
        200
    );
    let metrics = metrics_text(&s).await;
    for needle in [
        "otelhouse_records_accepted_total{signal=\"logs\"} 7",
        "otelhouse_wal_bytes",
        "otelhouse_wal_fsync_seconds_count",
        "otelhouse_wal_queue_depth",
    ] {
        assert!(metrics.contains(needle), "{needle} in {metrics}");
    }
}

#[tokio::test]
async fn settings_come_from_a_config_file_and_the_environment_with_flags_winning() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let creds = init(&data);
    let config = dir.path().join("otelhouse.toml");
    std::fs::write(&config, "[limits]\nmax_records = 2\nmax_attributes = 1\n").unwrap();
    // The environment sets max_records via the file path; a flag overrides the file's retention.
    let log = dir.path().join("serve.log");
    let mut child = std::process::Command::new(BIN)
        .args([
            "serve",
            "--otlp-grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--retention-logs",
            "1h",
        ])
        .env("OTELHOUSE_CONFIG", &config)
        .env("OTELHOUSE_DATA_DIR", &data)
        .env("OTELHOUSE_OTLP_HTTP_ADDR", "127.0.0.1:0")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let listen = loop {
        if let Ok(t) = std::fs::read_to_string(data.join("listen.json")) {
            break serde_json::from_str::<serde_json::Value>(&t).unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let url = format!("http://{}/v1/logs", listen["otlp_http"].as_str().unwrap());
    let send = |n: usize| {
        let body = logs_request("cfg", &bodies("cfg", n)).encode_to_vec();
        client()
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .header("authorization", &creds.ingestion_key)
            .body(body)
            .send()
    };
    assert_eq!(send(2).await.unwrap().status(), 200);
    let resp = send(3).await.unwrap();
    assert_eq!(resp.status(), 400, "max_records = 2 from the config file");
    let mut old = logs_request("cfg", &bodies("old", 1));
    old.resource_logs[0].scope_logs[0].log_records[0].time_unix_nano =
        now_nanos() - 2 * 3_600_000_000_000;
    let resp = client()
        .post(&url)
        .header("content-type", "application/x-protobuf")
        .header("authorization", &creds.ingestion_key)
        .body(old.encode_to_vec())
        .send()
        .await
        .unwrap();
    let partial = ExportLogsServiceResponse::decode(resp.bytes().await.unwrap())
        .unwrap()
        .partial_success
        .unwrap();
    assert_eq!(
        partial.rejected_log_records, 1,
        "--retention-logs 1h from the flag"
    );
    let _ = child.kill();
    let _ = child.wait();
    // A config error names the setting.
    std::fs::write(&config, "[limits]\nmax_recods = 2\n").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_recods"));
}

/// Sends raw bytes as the gRPC message, to test what the server does with
/// input no well-behaved client would produce.
async fn grpc_raw(
    s: &Server,
    path: &'static str,
    key: &str,
    message: Vec<u8>,
) -> Result<Vec<u8>, tonic::Status> {
    use bytes::{Buf, BufMut};
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
    #[derive(Default)]
    struct Raw;
    impl Codec for Raw {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = Raw;
        type Decoder = Raw;
        fn encoder(&mut self) -> Raw {
            Raw
        }
        fn decoder(&mut self) -> Raw {
            Raw
        }
    }
    impl Encoder for Raw {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }
    impl Decoder for Raw {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
            Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
        }
    }
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", s.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    grpc.unary(
        with_key(message, key),
        http::uri::PathAndQuery::from_static(path),
        Raw,
    )
    .await
    .map(|r| r.into_inner())
}

#[tokio::test]
async fn grpc_refuses_garbage_and_unknown_methods_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let creds = init(dir.path());
    let s = Server::start(dir.path(), &[]);
    let logs = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
    let err = grpc_raw(&s, logs, &creds.ingestion_key, vec![0xff, 0xff, 0xff])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("protobuf"), "{err:?}");
    // A record with a trace id of the wrong length: the path is named.
    let mut req = logs_request("grpc-bad", &bodies("bad id", 1));
    req.resource_logs[0].scope_logs[0].log_records[0].trace_id = vec![7; 3];
    let err = grpc_raw(&s, logs, &creds.ingestion_key, req.encode_to_vec())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("logRecords[0].traceId"), "{err:?}");
    let err = grpc_raw(
        &s,
        "/opentelemetry.proto.collector.logs.v1.LogsService/Nope",
        &creds.ingestion_key,
        vec![],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    // A valid message through the same raw path is acknowledged and stored.
    let ok = logs_request("grpc-raw", &bodies("raw ok", 2)).encode_to_vec();
    let resp = grpc_raw(&s, logs, &creds.ingestion_key, ok).await.unwrap();
    assert!(
        ExportLogsServiceResponse::decode(&resp[..])
            .unwrap()
            .partial_success
            .is_none()
    );
    let rows = rows_eventually(
        &s,
        &creds.api_token,
        "/api/v1/search?signal=logs&limit=100",
        2,
    )
    .await;
    assert_eq!(rows.len(), 2, "only the valid request was stored");
}

#[tokio::test]
async fn retention_set_from_the_cli_drops_old_hours_and_stats_show_the_parts() {
    let dir = tempfile::tempdir().unwrap();
    let creds = init(dir.path());
    let s = Server::start(dir.path(), &["--flush-interval", "1s"]);
    let cli = |args: &[&str]| {
        std::process::Command::new(BIN)
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .unwrap()
    };
    // Three records of five hours ago, two of now: two hour partitions.
    let hour = 3_600_000_000_000u64;
    let mut old = logs_request("old", &["o1".into(), "o2".into(), "o3".into()]);
    for r in &mut old.resource_logs[0].scope_logs[0].log_records {
        r.time_unix_nano -= 5 * hour;
    }
    let new = logs_request("new", &["n1".into(), "n2".into()]);
    for req in [old, new] {
        let (status, _, _) = post_otlp(
            &s,
            "/v1/logs",
            Some(&creds.ingestion_key),
            "application/x-protobuf",
            req.encode_to_vec(),
            false,
        )
        .await;
        assert_eq!(status, 200);
    }

    // Flushed within a couple of seconds: the API and the CLI both see the parts.
    let deadline = Instant::now() + Duration::from_secs(10);
    let logs = loop {
        let (status, body) = api_get(&s, &creds.api_token, "/api/v1/stats").await;
        assert_eq!(status, 200, "{body}");
        let logs = body["tables"][0].clone();
        if logs["part_rows"] == 5 || Instant::now() > deadline {
            break logs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(logs["table"], "otel_logs");
    assert_eq!(logs["part_rows"], 5, "{logs}");
    assert_eq!(logs["partitions"].as_array().unwrap().len(), 2, "{logs}");
    assert!(logs["compression_ratio"].as_f64().unwrap() > 0.0, "{logs}");
    let out = cli(&["stats", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let on_disk: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(on_disk["tables"][0]["part_rows"], 5, "{on_disk}");
    let table = cli(&["stats", "--partitions"]);
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(
        table.contains("otel_logs") && table.lines().count() >= 4,
        "{table}"
    );

    // Bad settings are refused with the reason.
    let out = cli(&["retention", "set", "logs", "10m"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("1h minimum"));
    let out = cli(&["retention", "set", "lgs", "1d"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown signal `lgs`"));

    // Two hours: the old hour goes within seconds, the new one stays.
    let out = cli(&["retention", "set", "logs", "2h"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8(cli(&["retention", "show"]).stdout).unwrap();
    assert!(shown.contains("logs     2h"), "{shown}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = api_get(&s, &creds.api_token, "/api/v1/search?signal=logs&limit=100").await;
        let rows = body["rows"].as_array().unwrap().len();
        if rows == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "old rows still there: {rows}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = metrics_text(&s).await;
    assert!(
        metrics.contains("otelhouse_expired_partitions_total 1"),
        "{metrics}"
    );
    // Records older than the new retention are now refused at ingestion too.
    let mut late = logs_request("late", &["l1".into()]);
    late.resource_logs[0].scope_logs[0].log_records[0].time_unix_nano -= 3 * hour;
    let (status, body, _) = post_otlp(
        &s,
        "/v1/logs",
        Some(&creds.ingestion_key),
        "application/x-protobuf",
        late.encode_to_vec(),
        false,
    )
    .await;
    assert_eq!(status, 200);
    let response = ExportLogsServiceResponse::decode(&body[..]).unwrap();
    assert_eq!(response.partial_success.unwrap().rejected_log_records, 1);
    assert!(s.logs().contains("otelhouse retention set"), "{}", s.logs());
}
