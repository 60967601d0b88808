//! Support for end-to-end tests: start the real `otelhouse` binary on
//! ephemeral 127.0.0.1 ports with its own data directory.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde_json::Value as Json;

pub const BIN: &str = env!("CARGO_BIN_EXE_otelhouse");

#[derive(Debug, Clone, serde::Deserialize)]
pub struct Creds {
    pub admin_email: String,
    pub admin_password: String,
    pub ingestion_key: String,
    pub api_token: String,
}

pub fn init(dir: &Path) -> Creds {
    let out = Command::new(BIN)
        .args(["init", "--json", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("init --json prints one JSON object")
}

pub struct Server {
    pub child: Child,
    pub dir: PathBuf,
    pub grpc: String,
    pub http: String,
    pub api: String,
    pub log: PathBuf,
}

impl Server {
    /// Starts `otelhouse serve` on `dir` (already initialised or not).
    pub fn start(dir: &Path, extra: &[&str]) -> Server {
        Self::start_with_env(dir, extra, &[])
    }

    /// Like `start`, with extra environment variables for the server.
    pub fn start_with_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let _ = std::fs::remove_file(dir.join("listen.json"));
        std::fs::create_dir_all(dir).unwrap();
        let log = dir.with_extension(format!("log{}", rand::random::<u32>()));
        let child = Command::new(BIN)
            .args([
                "serve",
                "--otlp-grpc-addr",
                "127.0.0.1:0",
                "--otlp-http-addr",
                "127.0.0.1:0",
                "--http-addr",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(dir)
            .args(extra)
            .env("OTELHOUSE_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::from(
                std::fs::File::create(log.with_extension("out")).unwrap(),
            ))
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .unwrap();
        let mut s = Server {
            child,
            dir: dir.to_owned(),
            grpc: String::new(),
            http: String::new(),
            api: String::new(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(text) = std::fs::read_to_string(dir.join("listen.json")) {
                let v: Json = serde_json::from_str(&text).unwrap();
                s.grpc = v["otlp_grpc"].as_str().unwrap().to_owned();
                s.http = v["otlp_http"].as_str().unwrap().to_owned();
                s.api = v["http"].as_str().unwrap().to_owned();
                return s;
            }
            if let Some(status) = s.child.try_wait().unwrap() {
                panic!("server exited with {status}: {}", s.logs());
            }
            assert!(
                Instant::now() < deadline,
                "server did not start: {}",
                s.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.log.with_extension("out")).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "server did not stop cleanly: {}",
            self.logs()
        );
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    pub fn otlp_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The Prometheus text of a server's /metrics (loopback: no token needed).
pub async fn metrics_text(s: &Server) -> String {
    client()
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// GET an API path with the token; returns (status, JSON body).
pub async fn api_get(s: &Server, token: &str, path_and_query: &str) -> (u16, Json) {
    let resp = client()
        .get(s.url(path_and_query))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Json::Null))
}

/// Rows of a search, polling until at least `want` are there (data is
/// visible within a second of its acknowledgement; allow slack).
pub async fn rows_eventually(
    s: &Server,
    token: &str,
    path_and_query: &str,
    want: usize,
) -> Vec<Json> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = api_get(s, token, path_and_query).await;
        assert_eq!(status, 200, "{path_and_query}: {body}");
        let rows = body["rows"].as_array().cloned().unwrap_or_default();
        if rows.len() >= want || Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn kv(key: &str, v: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

pub fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A logs request for one service with the given bodies.
pub fn logs_request(service: &str, bodies: &[String]) -> ExportLogsServiceRequest {
    let now = now_nanos();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("service.name", Value::StringValue(service.into()))],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: bodies
                    .iter()
                    .enumerate()
                    .map(|(i, b)| LogRecord {
                        time_unix_nano: now + i as u64,
                        severity_number: 9,
                        severity_text: "INFO".into(),
                        body: Some(AnyValue {
                            value: Some(Value::StringValue(b.clone())),
                        }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// POSTs a protobuf OTLP body; returns the status and body bytes.
pub async fn post_otlp(
    s: &Server,
    path: &str,
    key: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
    gzip: bool,
) -> (u16, Vec<u8>, reqwest::header::HeaderMap) {
    let mut req = client()
        .post(s.otlp_url(path))
        .header("content-type", content_type);
    if let Some(k) = key {
        req = req.header("authorization", k);
    }
    if gzip {
        req = req.header("content-encoding", "gzip");
    }
    let resp = req.body(body).send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, resp.bytes().await.unwrap().to_vec(), headers)
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn otelhouse(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().unwrap()
}

pub fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub struct Pki {
    pub ca_dir: PathBuf,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// A CA, a server certificate for localhost/127.0.0.1 and a client
/// certificate, made with `otelhouse certs`.
pub fn pki(dir: &Path) -> Pki {
    let ca_dir = dir.join("ca");
    let d = ca_dir.to_str().unwrap();
    ok(&otelhouse(&[
        "certs",
        "init-ca",
        "--ca-dir",
        d,
        "--name",
        "Test Org CA",
    ]));
    ok(&otelhouse(&[
        "certs",
        "issue",
        "--ca-dir",
        d,
        "--dns",
        "localhost",
        "--ip",
        "127.0.0.1",
    ]));
    ok(&otelhouse(&[
        "certs",
        "issue",
        "--ca-dir",
        d,
        "--client",
        "--name",
        "collector-1",
    ]));
    Pki {
        ca: ca_dir.join("ca.crt"),
        cert: ca_dir.join("localhost.crt"),
        key: ca_dir.join("localhost.key"),
        client_cert: ca_dir.join("collector-1.crt"),
        client_key: ca_dir.join("collector-1.key"),
        ca_dir,
    }
}
