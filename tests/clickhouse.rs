//! `otelhouse serve --clickhouse-url` against the real ClickHouse engine
//! (chdb behind ClickHouse's HTTP interface, tests/support/chdb_front.py):
//! OTLP in, rows in ClickStack's tables, the API reading them back; an
//! outage with a SIGKILL in the middle, counted exactly; retention changes
//! reaching the tables' TTL; `clickhouse provision` SQL checked by
//! ClickHouse's own parser; `clickhouse verify` naming excess grants.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use otelhouse_clickhouse::testing::ChdbFront;
use otelhouse_clickhouse::{Client, Statement};
use prost::Message;

async fn scalar(client: &Client, sql: &str) -> String {
    let st = Statement {
        sql: sql.into(),
        params: Vec::new(),
    };
    match client.query(&st, &[]).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_string(),
        Err(e) => format!("error: {e}"),
    }
}

async fn wait_for(client: &Client, sql: &str, want: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let have = scalar(client, sql).await;
        if have == want {
            return;
        }
        assert!(Instant::now() < deadline, "{sql}: {have}, want {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for `/readyz`: in ClickHouse mode, the tables are there.
async fn wait_ready(s: &Server) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let resp = client().get(s.url("/readyz")).send().await.unwrap();
        if resp.status() == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "never ready: {}", s.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// POSTs one protobuf logs request; its status and headers.
async fn post_logs(s: &Server, key: &str, bodies: &[String]) -> (u16, reqwest::header::HeaderMap) {
    let req = logs_request("checkout", bodies);
    let (status, _, headers) = post_otlp(
        s,
        "/v1/logs",
        Some(key),
        "application/x-protobuf",
        req.encode_to_vec(),
        false,
    )
    .await;
    (status, headers)
}

async fn send_logs(s: &Server, key: &str, batch: usize, n: usize) {
    let bodies: Vec<String> = (0..n)
        .map(|j| format!("ch-e2e batch{batch} rec{j}"))
        .collect();
    assert_eq!(post_logs(s, key, &bodies).await.0, 200);
}

async fn post_json(s: &Server, key: &str, path: &str, body: String) {
    let resp = client()
        .post(s.otlp_url(path))
        .header("authorization", key)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    assert_eq!(status, 200, "{path}: {}", resp.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stores_in_clickhouse_survives_an_outage_and_reads_back() {
    let ch_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut front = ChdbFront::start_on_port(ch_dir.path(), port);
    let ch = front.client("otel");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let creds = init(&data);
    let url = format!("http://127.0.0.1:{port}");
    let args = [
        "--clickhouse-url",
        url.as_str(),
        "--clickhouse-max-batch-delay",
        "200ms",
    ];
    let mut s = Server::start(&data, &args);
    wait_ready(&s).await;
    let key = creds.ingestion_key.as_str();
    let token = creds.api_token.as_str();

    // Logs (protobuf), a span and a gauge (JSON).
    for b in 0..3 {
        send_logs(&s, key, b, 100).await;
    }
    let now = now_nanos();
    let trace_id = "5b8efff798038103d269b633813fc60c";
    post_json(&s, key, "/v1/traces", format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"checkout"}}}}]}},"scopeSpans":[{{"spans":[{{"traceId":"{trace_id}","spanId":"eee19b7ec3c1b174","name":"charge card","kind":2,"startTimeUnixNano":"{now}","endTimeUnixNano":"{}","status":{{"code":2}},"events":[{{"timeUnixNano":"{now}","name":"retry","attributes":[{{"key":"attempt","value":{{"intValue":"2"}}}}]}},{{"timeUnixNano":"{now}","name":"gave up"}}],"links":[{{"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b7169203331","traceState":"k=v","attributes":[{{"key":"why","value":{{"stringValue":"caused by"}}}}]}}]}}]}}]}}]}}"#,
        now + 5_000_000
    )).await;
    post_json(&s, key, "/v1/metrics", format!(
        r#"{{"resourceMetrics":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"checkout"}}}}]}},"scopeMetrics":[{{"metrics":[{{"name":"queue.depth","gauge":{{"dataPoints":[{{"timeUnixNano":"{now}","asDouble":42.5}}]}}}}]}}]}}]}}"#
    )).await;

    // The API reads ClickHouse: visible within about a second.
    let rows = rows_eventually(
        &s,
        token,
        "/api/v1/search?signal=logs&q=batch1&limit=500",
        100,
    )
    .await;
    assert_eq!(rows.len(), 100, "{rows:?}");
    assert_eq!(rows[0]["ServiceName"], "checkout");
    let deadline = Instant::now() + Duration::from_secs(10);
    let spans = loop {
        let (status, body) = api_get(&s, token, &format!("/api/v1/traces/{trace_id}")).await;
        assert_eq!(status, 200, "{body}");
        let spans = body["spans"].as_array().cloned().unwrap_or_default();
        if !spans.is_empty() || Instant::now() > deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert_eq!(spans[0]["SpanName"], "charge card");
    assert_eq!(
        spans[0]["Events.Name"],
        serde_json::json!(["retry", "gave up"])
    );
    assert_eq!(spans[0]["Events.Attributes"][0]["attempt"], "2");
    assert_eq!(spans[0]["Events.Attributes"][1], serde_json::json!({}));
    assert_eq!(
        spans[0]["Links.TraceId"],
        serde_json::json!(["0af7651916cd43dd8448eb211c80319c"])
    );
    assert_eq!(spans[0]["Links.TraceState"], serde_json::json!(["k=v"]));
    assert_eq!(spans[0]["Links.Attributes"][0]["why"], "caused by");
    assert_eq!(spans[0]["StatusCode"], "Error");
    let (status, body) = api_get(&s, token, "/api/v1/metrics?name=queue.depth").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"][0]["Value"], 42.5, "{body}");
    assert_eq!(
        scalar(&ch, "SELECT count() FROM otel.otel_logs").await,
        "300"
    );
    let metrics = metrics_text(&s).await;
    assert!(
        metrics.contains("otelhouse_clickhouse_shipped_rows_total 302"),
        "{metrics}"
    );
    assert!(
        metrics.contains("otelhouse_clickhouse_ready 1"),
        "{metrics}"
    );

    // ClickHouse goes down. Ingestion goes on (acknowledged from the WAL),
    // the backlog shows in /metrics, and a SIGKILL loses none of it.
    front.stop();
    for b in 3..8 {
        send_logs(&s, key, b, 100).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let metrics = metrics_text(&s).await;
    assert!(
        metrics.contains("otelhouse_clickhouse_backlog_entries 5"),
        "{metrics}"
    );
    s.kill9();
    let mut s = Server::start(&data, &args);
    for b in 8..10 {
        send_logs(&s, key, b, 100).await;
    }
    // ClickHouse comes back: the backlog drains by itself, each record once.
    let _front = ChdbFront::start_on_port(ch_dir.path(), port);
    wait_for(&ch, "SELECT count() FROM otel.otel_logs", "1000", 60).await;
    assert_eq!(
        scalar(&ch, "SELECT uniqExact(Body) FROM otel.otel_logs").await,
        "1000"
    );
    let logs = s.logs();
    assert!(
        logs.contains("will retry (the WAL keeps the data)"),
        "{logs}"
    );

    // `otelhouse retention set` reaches the tables' TTL.
    ok(&otelhouse(&[
        "retention",
        "set",
        "logs",
        "7d",
        "--data-dir",
        data.to_str().unwrap(),
    ]));
    wait_for(
        &ch,
        "SELECT position(create_table_query, 'toIntervalSecond(604800)') > 0 FROM system.tables WHERE database = 'otel' AND name = 'otel_logs'",
        "1",
        20,
    )
    .await;
    s.stop();
    let logs = s.logs();
    assert!(
        !logs.contains(key) && !logs.contains(token),
        "no secret in the log"
    );
}

#[test]
fn a_public_start_refuses_plaintext_to_a_remote_clickhouse() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--otlp-grpc-addr",
            "0.0.0.0:0",
            "--allow-plaintext-behind-proxy",
            "--clickhouse-url",
            "http://clickhouse.internal:8123",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("[TLS-4, CH-2]")
            && err.contains("plaintext")
            && err.contains("--allow-insecure-clickhouse"),
        "{err}"
    );
}

/// Statements of `provision --print-sql` (separated by a blank line).
fn printed_statements(stdout: &str) -> Vec<String> {
    stdout
        .split(";\n\n")
        .map(str::trim)
        .filter(|s| s.starts_with("CREATE") || s.starts_with("GRANT") || s.starts_with("ALTER"))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_sql_parses_in_clickhouse_and_verify_names_excess_grants() {
    let front = ChdbFront::start();
    let ch = front.client("default");
    let secrets = tempfile::tempdir().unwrap();
    for cluster in [None, Some("otel_cluster")] {
        let mut cmd = Command::new(BIN);
        cmd.args(["clickhouse", "provision", "--print-sql", "--admin-url"])
            .arg(front.url())
            .arg("--secrets-dir")
            .arg(secrets.path())
            .args(["--allow-from", "10.0.0.0/8", "--allow-from", "127.0.0.1"]);
        if let Some(c) = cluster {
            cmd.args(["--cluster", c]);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let statements = printed_statements(&stdout);
        assert!(statements.len() >= 15, "{stdout}");
        for st in &statements {
            let mut q = Statement::default();
            let p = q.bind("String", st);
            q.sql = format!("SELECT formatQuery({p})");
            let formatted = ch.query(&q, &[]).await;
            assert!(
                formatted.is_ok(),
                "ClickHouse cannot parse:\n{st}\n{formatted:?}"
            );
        }
        let all = statements.join("\n");
        assert!(all.contains("readonly = 1") && all.contains("CHANGEABLE_IN_READONLY"));
        assert!(all.contains(" SELECT, INSERT, CREATE TABLE, CREATE VIEW ON `otel`.* TO `otelhouse_ingest` WITH REPLACE OPTION"), "{all}");
        assert!(all.contains("HOST IP '10.0.0.0/8', '127.0.0.1'"), "{all}");
        if cluster.is_some() {
            assert!(all.contains("ReplicatedMergeTree") && all.contains("Distributed("));
            assert!(all.contains("ON CLUSTER `otel_cluster`"), "{all}");
        }
        // Passwords: generated once into 0600 files, never printed.
        for name in ["ingest.password", "query.password"] {
            let path = secrets.path().join(name);
            let password = std::fs::read_to_string(&path).unwrap();
            assert!(password.trim().len() >= 32);
            assert!(!stdout.contains(password.trim()), "{name} printed");
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }

    // Before the tables exist, verify says what to do.
    let (passed, stdout) = verify(&front.url(), &[]);
    assert!(!passed, "{stdout}");
    assert!(
        stdout.contains("run `otelhouse clickhouse provision`"),
        "{stdout}"
    );

    // Provisioning for real: chdb creates the database and tables, then
    // refuses the access statements (it has no access storage).
    let out = Command::new(BIN)
        .args(["clickhouse", "provision", "--admin-url"])
        .arg(front.url())
        .arg("--secrets-dir")
        .arg(secrets.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("provision on chdb: {stderr}");
    let tables: u32 = scalar(
        &ch,
        "SELECT count() FROM system.tables WHERE database = 'otel' AND name LIKE 'otel_%'",
    )
    .await
    .parse()
    .unwrap();
    assert!(tables >= 7, "{tables} tables");

    // chdb has no access control: every user may do everything, and verify
    // says so, naming the checks that fail.
    let (passed, stdout) = verify(&front.url(), &[]);
    assert!(!passed, "{stdout}");
    assert!(
        stdout.contains("FAIL") && stdout.contains("cannot write"),
        "{stdout}"
    );
    assert!(stdout.contains("excess grant"), "{stdout}");
}

/// `clickhouse verify`: whether it passed, and what it printed (stdout
/// then stderr). Its first check reads, so over TLS its line says whether
/// (and why not) the connection worked.
fn verify(url: &str, extra: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["clickhouse", "verify", "--clickhouse-url", url])
        .args(extra)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn verify_over_tls(url: &str, extra: &[&str]) -> String {
    verify(url, extra).1
}

/// The tables, created over TLS (verify reads `otel.otel_logs`).
fn create_tables(
    url: &str,
    ca: &std::path::Path,
    client_cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
) {
    let client = Client::new(otelhouse_clickhouse::Connection {
        url: url.into(),
        user: "default".into(),
        password: String::new(),
        database: "otel".into(),
        ca_file: Some(ca.to_path_buf()),
        client_cert,
        insecure_skip_verify: false,
        timeout: Duration::from_secs(60),
    })
    .unwrap();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(otelhouse_clickhouse::setup::ensure_tables(
            &client,
            None,
            |_| Duration::from_secs(86_400),
        ))
        .unwrap();
}

#[test]
fn tls_to_clickhouse_verifies_the_server_and_names_each_failure() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let (ca, client_cert, client_key) = (s(&pki.ca), s(&pki.client_cert), s(&pki.client_key));
    let front = ChdbFront::start_tls(&pki.cert, &pki.key, None);
    let url = front.url();
    assert!(url.starts_with("https://"));
    create_tables(&url, &pki.ca, None);

    let verified = verify_over_tls(&url, &["--clickhouse-ca", &ca]);
    assert!(
        verified.contains("ok   otelhouse_query    reads with the app's settings"),
        "{verified}"
    );
    // The system roots do not know our CA.
    let unknown = verify_over_tls(&url, &[]);
    assert!(unknown.contains("TLS: unknown CA"), "{unknown}");
    // A certificate for another name.
    ok(&otelhouse(&[
        "certs",
        "issue",
        "--ca-dir",
        &s(&pki.ca_dir),
        "--dns",
        "db.example",
    ]));
    let other = ChdbFront::start_tls(
        &pki.ca_dir.join("db.example.crt"),
        &pki.ca_dir.join("db.example.key"),
        None,
    );
    let mismatch = verify_over_tls(&other.url(), &["--clickhouse-ca", &ca]);
    assert!(mismatch.contains("TLS: name mismatch"), "{mismatch}");
    // An expired certificate (issued 10 days ago for 2 days).
    let (old_crt, old_key) = (pki.ca_dir.join("old.crt"), pki.ca_dir.join("old.key"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    otelhouse_tls::ca::Ca::load(&pki.ca_dir, None)
        .unwrap()
        .issue(
            &otelhouse_tls::ca::IssueRequest {
                ips: vec!["127.0.0.1".parse().unwrap()],
                days: 2,
                not_before: Some(now - 10 * 86_400),
                ..Default::default()
            },
            &old_crt,
            &old_key,
        )
        .unwrap();
    let expired_front = ChdbFront::start_tls(&old_crt, &old_key, None);
    let expired = verify_over_tls(&expired_front.url(), &["--clickhouse-ca", &ca]);
    assert!(
        expired.contains("TLS: ClickHouse's certificate has expired"),
        "{expired}"
    );

    // Skipping verification works, and is loud.
    let skipped = verify_over_tls(&url, &["--clickhouse-insecure-skip-verify"]);
    assert!(
        skipped.contains("reads with the app's settings"),
        "{skipped}"
    );
    assert!(skipped.contains("NOT verified"), "{skipped}");

    // mTLS: ClickHouse wants a client certificate.
    let front = ChdbFront::start_tls(&pki.cert, &pki.key, Some(&pki.ca));
    let url = front.url();
    create_tables(
        &url,
        &pki.ca,
        Some((pki.client_cert.clone(), pki.client_key.clone())),
    );
    let with = verify_over_tls(
        &url,
        &[
            "--clickhouse-ca",
            &ca,
            "--clickhouse-client-cert",
            &client_cert,
            "--clickhouse-client-key",
            &client_key,
        ],
    );
    assert!(
        with.contains("ok   otelhouse_query    reads with the app's settings"),
        "{with}"
    );
    let without = verify_over_tls(&url, &["--clickhouse-ca", &ca]);
    assert!(
        without.contains("FAIL otelhouse_query    connects")
            // TLS 1.3: the server refuses after the client's half of the
            // handshake, so the alert can lose the race with the closed
            // connection; the reason is named whenever the alert arrives.
            && (without.contains("TLS: ClickHouse requires a client certificate")
                || without.contains("cannot reach ClickHouse")),
        "{without}"
    );
    let half = verify_over_tls(
        &url,
        &[
            "--clickhouse-ca",
            &ca,
            "--clickhouse-client-cert",
            &client_cert,
        ],
    );
    assert!(half.contains("go together"), "{half}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_wal_answers_503_until_clickhouse_drains_it() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let creds = init(&data);
    let url = format!("http://127.0.0.1:{port}");
    // ClickHouse is not there yet; the WAL may hold 300 kB.
    let s = Server::start(
        &data,
        &[
            "--clickhouse-url",
            url.as_str(),
            "--max-wal-bytes",
            "300000",
        ],
    );
    let key = creds.ingestion_key.as_str();
    let mut accepted = 0;
    let refused = loop {
        let bodies: Vec<String> = (0..200)
            .map(|j| format!("wal-cap {accepted} {j} {}", "x".repeat(100)))
            .collect();
        let (status, headers) = post_logs(&s, key, &bodies).await;
        if status == 200 {
            accepted += 1;
            assert!(accepted < 1000, "the WAL cap never applied");
            continue;
        }
        break (status, headers);
    };
    assert_eq!(refused.0, 503);
    assert!(refused.1.contains_key("retry-after"), "{:?}", refused.1);
    assert!(accepted > 0);
    let metrics = metrics_text(&s).await;
    assert!(
        metrics.contains("otelhouse_records_rejected_total{signal=\"logs\",reason=\"disk_full\"}"),
        "{metrics}"
    );

    // ClickHouse arrives: the backlog drains, the WAL empties, ingestion
    // is accepted again, and every acknowledged record is there once.
    let ch_dir = tempfile::tempdir().unwrap();
    let front = ChdbFront::start_on_port(ch_dir.path(), port);
    let ch = front.client("otel");
    let want = (accepted * 200).to_string();
    wait_for(&ch, "SELECT count() FROM otel.otel_logs", &want, 60).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = post_logs(&s, key, &["after the drain".to_string()]).await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still refused after the drain: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let want = (accepted * 200 + 1).to_string();
    wait_for(&ch, "SELECT count() FROM otel.otel_logs", &want, 30).await;
    assert_eq!(
        scalar(&ch, "SELECT uniqExact(Body) FROM otel.otel_logs").await,
        want
    );
}
