//! Going to production, end to end through the binary: our CA and
//! certificates, TLS and mTLS on the listeners, certificate reload without a
//! restart, the startup gate and its overrides, and secrets kept out of logs.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use prost::Message;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

impl Pki {
    /// `serve` flags for TLS with this server certificate.
    fn tls_flags(&self) -> [&str; 4] {
        [
            "--tls-cert",
            self.cert.to_str().unwrap(),
            "--tls-key",
            self.key.to_str().unwrap(),
        ]
    }
}

fn https_client(ca: &Path) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// GET `https://localhost:{port}{path}` with the API token; the body.
async fn get_text(client: &reqwest::Client, port: &str, path: &str, token: &str) -> String {
    client
        .get(format!("https://localhost:{port}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn grpc_tls(
    addr: &str,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<LogsServiceClient<Channel>, tonic::transport::Error> {
    let port = addr.rsplit(':').next().unwrap();
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()))
        .domain_name("localhost");
    if let Some((c, k)) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(c).unwrap(),
            std::fs::read(k).unwrap(),
        ));
    }
    let channel = Channel::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(LogsServiceClient::new(channel))
}

async fn export(
    client: &mut LogsServiceClient<Channel>,
    key: &str,
    body: &str,
) -> Result<(), tonic::Status> {
    let mut req = tonic::Request::new(logs_request("tls-svc", &[body.to_string()]));
    req.metadata_mut()
        .insert("authorization", key.parse().unwrap());
    client.export(req).await.map(|_| ())
}

fn show(target: &str, extra: &[&str]) -> (bool, String) {
    let mut args = vec!["certs", "show", target];
    args.extend(extra);
    let out = otelhouse(&args);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn tls_on_every_listener_with_our_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = pki(tmp.path());
    let data = tmp.path().join("data");
    let creds = init(&data);
    let s = Server::start(&data, &pki.tls_flags());
    let ca = pki.ca.to_str().unwrap();

    // OTLP/gRPC over TLS, verified against our CA.
    let mut grpc = grpc_tls(&s.grpc, &pki.ca, None).await.unwrap();
    export(&mut grpc, &creds.ingestion_key, "over grpc tls")
        .await
        .unwrap();
    // OTLP/HTTP and the API over TLS.
    let client = https_client(&pki.ca);
    let port = s.http.rsplit(':').next().unwrap();
    let body = logs_request("tls-svc", &["over http tls".into()]).encode_to_vec();
    let resp = client
        .post(format!("https://localhost:{port}/v1/logs"))
        .header("content-type", "application/x-protobuf")
        .header("authorization", &creds.ingestion_key)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let api_port = s.api.rsplit(':').next().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v: serde_json::Value = serde_json::from_str(
            &get_text(
                &client,
                api_port,
                "/api/v1/search?signal=logs&q=tls&limit=10",
                &creds.api_token,
            )
            .await,
        )
        .unwrap();
        if v["rows"].as_array().map_or(0, |r| r.len()) == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Plaintext to a TLS port gets nowhere.
    assert!(
        reqwest::get(format!("http://{}/healthz", s.api))
            .await
            .is_err(),
        "plaintext answered on a TLS listener"
    );

    // `certs show HOST:PORT` verifies what the server presents, with reasons.
    let (good, text) = show(&s.api, &["--ca", ca, "--host", "localhost"]);
    assert!(good && text.contains("verification: OK"), "{text}");
    assert!(
        text.contains("localhost, 127.0.0.1") && text.contains("status    valid, "),
        "{text}"
    );
    let other = tmp.path().join("other");
    ok(&otelhouse(&[
        "certs",
        "init-ca",
        "--ca-dir",
        other.to_str().unwrap(),
        "--name",
        "Other CA",
    ]));
    let (good, text) = show(&s.api, &["--ca", other.join("ca.crt").to_str().unwrap()]);
    assert!(!good && text.contains("unknown CA"), "{text}");
    let (good, text) = show(&s.api, &["--ca", ca, "--host", "api.example.com"]);
    assert!(
        !good && text.contains("name mismatch") && text.contains("not for api.example.com"),
        "{text}"
    );
    // An unreachable system-root verification (our CA is private) says so too.
    let (good, text) = show(&s.grpc, &[]);
    assert!(!good && text.contains("unknown CA"), "{text}");

    // Renewal on disk: picked up without a restart; open connections carry on.
    let before = show(&s.api, &["--ca", ca, "--json", "--host", "localhost"]).1;
    let before: serde_json::Value =
        serde_json::from_str(before.split("\nError").next().unwrap()).unwrap();
    let renewed = otelhouse(&[
        "certs",
        "renew",
        "--ca-dir",
        pki.ca_dir.to_str().unwrap(),
        pki.cert.to_str().unwrap(),
        "--force",
    ]);
    ok(&renewed);
    // SIGHUP makes it immediate (the file poll would within 5 s).
    unsafe { libc::kill(s.child.id() as i32, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = show(&s.api, &["--ca", ca, "--json", "--host", "localhost"]).1;
        let now: serde_json::Value =
            serde_json::from_str(now.split("\nError").next().unwrap()).unwrap();
        if now["chain"][0]["serial"] != before["chain"][0]["serial"] {
            assert_eq!(now["verified"], true);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "renewed certificate not served: {}",
            s.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    export(
        &mut grpc,
        &creds.ingestion_key,
        "same connection after renewal",
    )
    .await
    .unwrap();
    assert!(
        s.logs().contains("TLS certificate reloaded"),
        "{}",
        s.logs()
    );
}

#[tokio::test]
async fn mutual_tls_on_otlp() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = pki(tmp.path());
    let other = tmp.path().join("other");
    let o = other.to_str().unwrap();
    ok(&otelhouse(&[
        "certs", "init-ca", "--ca-dir", o, "--name", "Other CA",
    ]));
    ok(&otelhouse(&[
        "certs", "issue", "--ca-dir", o, "--client", "--name", "intruder",
    ]));
    let data = tmp.path().join("data");
    let creds = init(&data);
    let mtls = [
        "--tls-client-ca",
        pki.ca.to_str().unwrap(),
        "--tls-min",
        "1.3",
    ];
    let s = Server::start(&data, &[&pki.tls_flags()[..], &mtls].concat());
    // Our client certificate + key: accepted.
    let mut good = grpc_tls(&s.grpc, &pki.ca, Some((&pki.client_cert, &pki.client_key)))
        .await
        .unwrap();
    export(&mut good, &creds.ingestion_key, "with client cert")
        .await
        .unwrap();
    // The certificate does not replace the ingestion key.
    let e = export(&mut good, "wrong-key", "cert but no key")
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    // No client certificate, or one from another CA: refused in the handshake.
    for identity in [
        None,
        Some((other.join("intruder.crt"), other.join("intruder.key"))),
    ] {
        let refused = match grpc_tls(
            &s.grpc,
            &pki.ca,
            identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
        )
        .await
        {
            Err(_) => true,
            Ok(mut c) => export(&mut c, &creds.ingestion_key, "should not land")
                .await
                .is_err(),
        };
        assert!(refused, "{identity:?} was accepted");
    }
    // The API listener does not ask browsers for certificates.
    let api_port = s.api.rsplit(':').next().unwrap();
    let resp = https_client(&pki.ca)
        .get(format!("https://localhost:{api_port}/api/v1/stats"))
        .bearer_auth(&creds.api_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let metrics = https_client(&pki.ca)
        .get(format!("https://localhost:{api_port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        // (a client may retry a refused handshake, so at least once each)
        metrics.contains("otelhouse_tls_handshake_failures_total{listener=\"otlp_grpc\",reason=\"no_client_certificate\"}")
            && metrics.contains("otelhouse_tls_handshake_failures_total{listener=\"otlp_grpc\",reason=\"bad_client_certificate\"}"),
        "{metrics}"
    );
    let rows = get_text(
        &https_client(&pki.ca),
        api_port,
        "/api/v1/search?signal=logs&q=&limit=10",
        &creds.api_token,
    )
    .await;
    assert!(!rows.contains("should not land"), "{rows}");
}

/// Runs `serve` expecting a refusal; returns stderr.
fn refused(data: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--data-dir"]).arg(data).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve did not refuse to start with {args:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(!data.join("listen.json").exists(), "it listened");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn startup_gate_refuses_insecure_public_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    init(&data);
    // The gate decides before binding, so nothing here listens beyond loopback.
    let public = [
        "--otlp-grpc-addr",
        "0.0.0.0:0",
        "--otlp-http-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
    ];
    let err = refused(&data, &public, &[]);
    assert!(err.contains("refusing to start"), "{err}");
    assert!(
        err.contains("--otlp-grpc-addr 0.0.0.0:0") && err.contains("--tls-cert FILE"),
        "{err}"
    );
    assert!(err.contains("--allow-plaintext-behind-proxy"), "{err}");
    assert!(err.contains("1 check failed"), "{err}");

    let err = refused(
        &data,
        &public,
        &[("OTELHOUSE_SESSION_SECRET", "keyboard cat")],
    );
    assert!(
        err.contains("2 checks failed") && err.contains("[SEC-1]"),
        "{err}"
    );
    assert!(
        err.contains("publicly known default") && err.contains("--allow-weak-session-secret"),
        "{err}"
    );
    assert!(
        !err.contains("keyboard cat"),
        "the secret itself is never printed: {err}"
    );

    let secret_file = tmp.path().join("secret");
    std::fs::write(&secret_file, hex_random(32)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = refused(
        &data,
        &public,
        &[(
            "OTELHOUSE_SESSION_SECRET_FILE",
            secret_file.to_str().unwrap(),
        )],
    );
    assert!(
        err.contains("readable by other users") && err.contains("chmod 600"),
        "{err}"
    );

    {
        let creds = otelhouse_auth::Credentials::open(&data).await.unwrap();
        creds
            .set_password_unchecked(otelhouse_auth::ADMIN_EMAIL, "changeme")
            .await
            .unwrap();
        creds.close().await;
    }
    let err = refused(
        &data,
        &[&public[..], &["--allow-plaintext-behind-proxy"]].concat(),
        &[],
    );
    assert!(
        err.contains("1 check failed") && err.contains("[APP-1]"),
        "{err}"
    );
    assert!(
        err.contains("otelhouse users set-password --email admin@otelhouse.local"),
        "{err}"
    );
    // The fix the message names works, and the policy refuses weak ones.
    let mut set = Command::new(BIN)
        .args([
            "users",
            "set-password",
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    set.stdin
        .take()
        .unwrap()
        .write_all(b"password123\n")
        .unwrap();
    let out = set.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("12 characters"));
    let pw = tmp.path().join("pw");
    std::fs::write(&pw, "copper-kettle-91-lantern").unwrap();
    ok(&otelhouse(&[
        "users",
        "set-password",
        "--data-dir",
        data.to_str().unwrap(),
        "--password-file",
        pw.to_str().unwrap(),
    ]));

    // TLS key without certificate, and an expired certificate: named.
    let err = refused(&data, &["--tls-key", "/nonexistent.key"], &[]);
    assert!(err.contains("--tls-key needs --tls-cert"), "{err}");
}

fn hex_random(n: usize) -> String {
    (0..n)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

#[tokio::test]
async fn overrides_are_logged_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let creds = init(&data);
    // SAFETY-free: the child gets the variable, not this process.
    let s = Server::start_with_env(
        &data,
        &["--allow-weak-session-secret"],
        &[("OTELHOUSE_SESSION_SECRET", "hyperdx is cool 👋")],
    );
    assert!(
        s.logs().contains("security override in effect") && s.logs().contains("session_secret"),
        "{}",
        s.logs()
    );
    let (status, report) = api_get(&s, &creds.api_token, "/api/v1/security").await;
    assert_eq!(status, 200);
    let check = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "session_secret")
        .unwrap();
    assert_eq!(
        (check["passed"].as_bool(), check["overridden"].as_bool()),
        (Some(false), Some(true))
    );
    assert_eq!(report["public"], false);
    let metrics = metrics_text(&s).await;
    assert!(
        metrics.contains("otelhouse_security_override{check=\"session_secret\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn secrets_never_reach_the_logs_or_printed_config() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = pki(tmp.path());
    let session = hex_random(32);
    let passphrase = "tangerine-ocelot-passphrase";
    let locked = tmp.path().join("locked");
    let out = Command::new(BIN)
        .args(["certs", "init-ca", "--ca-dir", locked.to_str().unwrap()])
        .env("OTELHOUSE_CA_PASSPHRASE", passphrase)
        .output()
        .unwrap();
    ok(&out);
    let data = tmp.path().join("data");
    let tls = pki.tls_flags();
    // First start: the credentials box goes to stdout, once; the log gets none of it.
    let mut s = Server::start_with_env(
        &data,
        &tls,
        &[
            ("OTELHOUSE_SESSION_SECRET", &session),
            ("OTELHOUSE_LOG", "debug"),
        ],
    );
    let boxed = s.stdout();
    let find = |label: &str| {
        boxed
            .lines()
            .find(|l| l.contains(label))
            .and_then(|l| l.split_whitespace().nth(3))
            .unwrap()
            .to_string()
    };
    let (password, key, token) = (
        find("admin password"),
        find("ingestion key"),
        find("API token"),
    );
    let mut grpc = grpc_tls(&s.grpc, &pki.ca, None).await.unwrap();
    export(&mut grpc, &key, "hello").await.unwrap();
    export(&mut grpc, &format!("{key}x"), "bad key")
        .await
        .unwrap_err();
    let _ = https_client(&pki.ca)
        .get(format!(
            "https://localhost:{}/api/v1/stats",
            s.api.rsplit(':').next().unwrap()
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    s.stop();
    let logs = s.logs();
    assert!(
        logs.contains("TLS on every listener"),
        "debug logs captured: {logs}"
    );
    let tls_key = std::fs::read_to_string(&pki.key).unwrap();
    let key_body = tls_key.lines().nth(1).unwrap();
    for (what, secret) in [
        ("admin password", password.as_str()),
        ("ingestion key", key.as_str()),
        ("API token", token.as_str()),
        ("session secret", session.as_str()),
        ("TLS private key", key_body),
        ("CA passphrase", passphrase),
    ] {
        assert!(!logs.contains(secret), "{what} appears in the log");
    }
    let printed = Command::new(BIN)
        .args([
            "serve",
            "--print-config",
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .args(tls)
        .env("OTELHOUSE_SESSION_SECRET", &session)
        .output()
        .unwrap();
    let printed = ok(&printed);
    assert!(
        printed.contains("<redacted>") && !printed.contains(&session),
        "{printed}"
    );
    assert!(printed.contains("localhost.crt"), "{printed}");
}
