//! Accepting TLS connections: TCP accept in one task, each handshake in its
//! own (bounded in time and number), so a slow or hostile client never
//! holds up the others. Finished connections come out of `TlsIncoming`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::server::ReloadingConfig;

/// Handshakes in progress at once per listener; more wait in the kernel's
/// accept queue.
const MAX_HANDSHAKES: usize = 256;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a handshake failed, as a metric label.
pub type FailureHook = Arc<dyn Fn(&'static str) + Send + Sync>;

pub struct TlsIncoming {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsIncoming {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsIncoming {
    pub fn new(
        listener: TcpListener,
        config: Arc<ReloadingConfig>,
        on_failure: FailureHook,
    ) -> Self {
        let local_addr = listener
            .local_addr()
            .expect("bound listener has an address");
        let (tx, rx) = mpsc::channel(64);
        let task = tokio::spawn(accept_loop(listener, config, on_failure, tx));
        TlsIncoming {
            rx,
            local_addr,
            task,
        }
    }

    /// The next connection whose handshake succeeded.
    pub async fn accept(&mut self) -> Option<(TlsStream<TcpStream>, SocketAddr)> {
        self.rx.recv().await
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

async fn accept_loop(
    listener: TcpListener,
    config: Arc<ReloadingConfig>,
    on_failure: FailureHook,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(listener = config.listener, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = TlsAcceptor::from(config.current());
        let (tx, on_failure, name) = (tx.clone(), on_failure.clone(), config.listener);
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let _ = tx.send((stream, peer)).await;
                }
                Ok(Err(e)) => {
                    let (label, why) = classify(&e);
                    on_failure(label);
                    tracing::debug!(listener = name, %peer, reason = %why, "TLS handshake failed");
                }
                Err(_) => {
                    on_failure("timeout");
                    tracing::debug!(listener = name, %peer, "TLS handshake timed out");
                }
            }
        });
    }
}

/// A failed handshake's metric label and its explanation.
fn classify(e: &std::io::Error) -> (&'static str, String) {
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return ("io", e.to_string());
    };
    let label = match tls {
        rustls::Error::NoCertificatesPresented => "no_client_certificate",
        rustls::Error::InvalidCertificate(_) => "bad_client_certificate",
        rustls::Error::AlertReceived(_) => "rejected_by_client",
        rustls::Error::PeerIncompatible(_) => "incompatible",
        rustls::Error::InvalidMessage(_) => "not_tls",
        _ => "other",
    };
    (label, crate::inspect::explain(tls))
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::ca::{Ca, IssueRequest, init_ca};
    use crate::files::{read_certs, read_key};
    use crate::inspect::{CertInfo, explain, now_secs, roots};
    use crate::server::{ServerTlsFiles, TlsMin};

    struct Pki {
        _dir: tempfile::TempDir,
        dir: PathBuf,
        ca: Ca,
    }

    impl Pki {
        fn new(name: &str) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().to_path_buf();
            init_ca(&path, name, 365, None).unwrap();
            let ca = Ca::load(&path, None).unwrap();
            Pki {
                _dir: dir,
                dir: path,
                ca,
            }
        }
        fn issue(&self, name: &str, req: IssueRequest) -> (PathBuf, PathBuf) {
            let (c, k) = (
                self.dir.join(format!("{name}.crt")),
                self.dir.join(format!("{name}.key")),
            );
            self.ca.issue(&req, &c, &k).unwrap();
            (c, k)
        }
        fn server(&self, name: &str) -> (PathBuf, PathBuf) {
            self.issue(
                name,
                IssueRequest {
                    dns: vec!["localhost".into()],
                    ips: vec!["127.0.0.1".parse().unwrap()],
                    days: 90,
                    ..Default::default()
                },
            )
        }
        fn client(&self, name: &str) -> (PathBuf, PathBuf) {
            self.issue(
                name,
                IssueRequest {
                    client: true,
                    common_name: Some(name.into()),
                    days: 30,
                    ..Default::default()
                },
            )
        }
        fn ca_file(&self) -> PathBuf {
            self.dir.join(crate::ca::CA_CERT)
        }
    }

    /// Serves `config` with an echo handler; returns the port and the
    /// handshake failure labels seen.
    async fn echo_server(config: Arc<ReloadingConfig>) -> (u16, Arc<Mutex<Vec<&'static str>>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let failures = Arc::new(Mutex::new(Vec::new()));
        let f2 = failures.clone();
        let mut incoming =
            TlsIncoming::new(l, config, Arc::new(move |l| f2.lock().unwrap().push(l)));
        tokio::spawn(async move {
            while let Some((mut s, _)) = incoming.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        (port, failures)
    }

    fn client_config(
        ca: &Path,
        client: Option<(&Path, &Path)>,
        tls12_only: bool,
    ) -> rustls::ClientConfig {
        let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
            &[&rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        let b = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots(Some(ca)).unwrap());
        match client {
            Some((c, k)) => b
                .with_client_auth_cert(read_certs(c).unwrap(), read_key(k, None).unwrap())
                .unwrap(),
            None => b.with_no_client_auth(),
        }
    }

    /// Connects, sends a byte and reads the echo; Ok(serial of the server
    /// certificate) or the failure explained.
    async fn roundtrip(
        port: u16,
        name: &str,
        config: rustls::ClientConfig,
    ) -> Result<String, String> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let why =
            |e: std::io::Error| match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                Some(t) => explain(t),
                None => e.to_string(),
            };
        let mut s = connector
            .connect(ServerName::try_from(name.to_string()).unwrap(), tcp)
            .await
            .map_err(why)?;
        s.write_all(b"x").await.map_err(why)?;
        let mut b = [0u8; 1];
        // TLS 1.3: a server's refusal of our client certificate arrives here.
        s.read_exact(&mut b).await.map_err(why)?;
        let serial = CertInfo::parse(&s.get_ref().1.peer_certificates().unwrap()[0])
            .unwrap()
            .serial;
        Ok(serial)
    }

    fn files(cert: &Path, key: &Path, client_ca: Option<PathBuf>, min: TlsMin) -> ServerTlsFiles {
        ServerTlsFiles {
            cert: cert.into(),
            key: key.into(),
            client_ca,
            min,
        }
    }

    #[tokio::test]
    async fn handshakes_succeed_with_our_ca_and_fail_with_reasons() {
        let pki = Pki::new("Test CA");
        let other = Pki::new("Other CA");
        let (crt, key) = pki.server("server");
        let config = ReloadingConfig::load("test", files(&crt, &key, None, TlsMin::Tls12)).unwrap();
        let (port, _) = echo_server(config).await;

        roundtrip(
            port,
            "localhost",
            client_config(&pki.ca_file(), None, false),
        )
        .await
        .unwrap();
        roundtrip(
            port,
            "127.0.0.1",
            client_config(&pki.ca_file(), None, false),
        )
        .await
        .unwrap();
        roundtrip(port, "localhost", client_config(&pki.ca_file(), None, true))
            .await
            .unwrap();

        let e = roundtrip(
            port,
            "localhost",
            client_config(&other.ca_file(), None, false),
        )
        .await
        .unwrap_err();
        assert!(e.contains("unknown CA"), "{e}");
        let e = roundtrip(
            port,
            "db.example",
            client_config(&pki.ca_file(), None, false),
        )
        .await
        .unwrap_err();
        assert!(
            e.contains("name mismatch") && e.contains("localhost, 127.0.0.1"),
            "{e}"
        );

        // An expired certificate: the server refuses to load it...
        let (old_crt, old_key) = pki.issue(
            "old",
            IssueRequest {
                dns: vec!["localhost".into()],
                days: 2,
                not_before: Some(now_secs() - 10 * 86_400),
                ..Default::default()
            },
        );
        let err = files(&old_crt, &old_key, None, TlsMin::Tls12)
            .build()
            .unwrap_err()
            .to_string();
        assert!(err.contains("EXPIRED"), "{err}");
        // ...and a client of a server that serves one anyway says why.
        let raw = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            read_certs(&old_crt).unwrap(),
            read_key(&old_key, None).unwrap(),
        )
        .unwrap();
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port2 = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (tcp, _) = l.accept().await.unwrap();
            let _ = TlsAcceptor::from(Arc::new(raw)).accept(tcp).await;
        });
        let e = roundtrip(
            port2,
            "localhost",
            client_config(&pki.ca_file(), None, false),
        )
        .await
        .unwrap_err();
        assert!(e.starts_with("expired"), "{e}");
    }

    #[tokio::test]
    async fn tls13_minimum_refuses_tls12_clients() {
        let pki = Pki::new("Test CA");
        let (crt, key) = pki.server("server");
        let config = ReloadingConfig::load("test", files(&crt, &key, None, TlsMin::Tls13)).unwrap();
        let (port, failures) = echo_server(config).await;
        roundtrip(
            port,
            "localhost",
            client_config(&pki.ca_file(), None, false),
        )
        .await
        .unwrap();
        let e = roundtrip(port, "localhost", client_config(&pki.ca_file(), None, true))
            .await
            .unwrap_err();
        assert!(e.contains("TLS version") || e.contains("protocol"), "{e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(failures.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn mutual_tls_accepts_our_clients_only() {
        let pki = Pki::new("Test CA");
        let other = Pki::new("Other CA");
        let (crt, key) = pki.server("server");
        let (ccrt, ckey) = pki.client("collector-1");
        let (occrt, ockey) = other.client("intruder");
        let config = ReloadingConfig::load(
            "otlp",
            files(&crt, &key, Some(pki.ca_file()), TlsMin::Tls12),
        )
        .unwrap();
        let (port, failures) = echo_server(config).await;
        let ca = pki.ca_file();

        roundtrip(
            port,
            "localhost",
            client_config(&ca, Some((&ccrt, &ckey)), false),
        )
        .await
        .unwrap();
        roundtrip(
            port,
            "localhost",
            client_config(&ca, Some((&ccrt, &ckey)), true),
        )
        .await
        .unwrap();
        let e = roundtrip(port, "localhost", client_config(&ca, None, false))
            .await
            .unwrap_err();
        assert!(e.contains("requires a client certificate"), "{e}");
        let e = roundtrip(
            port,
            "localhost",
            client_config(&ca, Some((&occrt, &ockey)), false),
        )
        .await
        .unwrap_err();
        assert!(e.contains("unknown CA") || e.contains("rejected"), "{e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            *failures.lock().unwrap(),
            vec!["no_client_certificate", "bad_client_certificate"]
        );
    }

    #[tokio::test]
    async fn renewed_certificate_is_used_without_dropping_connections() {
        let pki = Pki::new("Test CA");
        let (crt, key) = pki.server("server");
        let config = ReloadingConfig::load("test", files(&crt, &key, None, TlsMin::Tls12)).unwrap();
        let (port, _) = echo_server(config.clone()).await;
        let ca = pki.ca_file();
        let first = roundtrip(port, "localhost", client_config(&ca, None, false))
            .await
            .unwrap();

        // A connection opened before the renewal...
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut open = tokio_rustls::TlsConnector::from(Arc::new(client_config(&ca, None, false)))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();

        assert!(!config.reload_if_changed(false), "nothing changed yet");
        // A half-done renewal (a certificate without its key) is not taken.
        let good_key = std::fs::read(&key).unwrap();
        pki.ca.renew(&crt, &key, true, None).unwrap().unwrap();
        let new_key = std::fs::read(&key).unwrap();
        std::fs::write(&key, &good_key).unwrap();
        assert!(!config.reload_if_changed(false), "mismatched pair refused");
        assert_eq!(
            roundtrip(port, "localhost", client_config(&ca, None, false))
                .await
                .unwrap(),
            first
        );
        std::fs::write(&key, &new_key).unwrap();
        assert!(config.reload_if_changed(false), "completed pair taken");

        let second = roundtrip(port, "localhost", client_config(&ca, None, false))
            .await
            .unwrap();
        assert_ne!(first, second, "new connections get the renewed certificate");
        // ...still works.
        open.write_all(b"y").await.unwrap();
        let mut b = [0u8; 1];
        open.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"y");
    }
}
