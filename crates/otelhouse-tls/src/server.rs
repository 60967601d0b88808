//! TLS for our listeners: a rustls server configuration built from files,
//! swapped in place when the files change (polled) or on SIGHUP, so a
//! renewed certificate is used for new connections while open ones carry on.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use serde::{Deserialize, Serialize};

use crate::TlsError;
use crate::files::{read_certs, read_key};
use crate::inspect::{CertInfo, Expiry, now_secs};

/// Lowest TLS version a listener accepts (TLS-5: never below 1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum TlsMin {
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

impl std::str::FromStr for TlsMin {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "1.2" => Ok(TlsMin::Tls12),
            "1.3" => Ok(TlsMin::Tls13),
            other => Err(format!(
                "TLS minimum `{other}`: use 1.2 or 1.3 (older versions are not offered)"
            )),
        }
    }
}

/// The files behind one listener's TLS.
#[derive(Debug, Clone)]
pub struct ServerTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Require client certificates issued by this CA (mTLS).
    pub client_ca: Option<PathBuf>,
    pub min: TlsMin,
}

impl ServerTlsFiles {
    fn paths(&self) -> Vec<PathBuf> {
        let mut p = vec![self.cert.clone(), self.key.clone()];
        p.extend(self.client_ca.clone());
        p
    }

    /// Builds the rustls configuration, checking the certificate's dates and
    /// that the key belongs to it.
    pub fn build(&self) -> Result<(ServerConfig, CertInfo), TlsError> {
        let chain = read_certs(&self.cert)?;
        let key = read_key(&self.key, None)?;
        let info = CertInfo::parse(&chain[0])?;
        let expiry = info.expiry(now_secs());
        if expiry.is_unusable() {
            return Err(TlsError::Invalid(format!(
                "{}: certificate {} is {expiry}; renew it with `otelhouse certs renew`",
                self.cert.display(),
                info.subject
            )));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] = match self.min {
            TlsMin::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsMin::Tls13 => &[&rustls::version::TLS13],
        };
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| TlsError::Invalid(e.to_string()))?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let roots = crate::inspect::roots(Some(ca))?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| TlsError::Invalid(format!("{}: {e}", ca.display())))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(chain, key).map_err(|e| {
            TlsError::Invalid(format!(
                "{} and {} do not go together: {e}",
                self.cert.display(),
                self.key.display()
            ))
        })?;
        // gRPC needs HTTP/2; the HTTP listeners speak both.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok((config, info))
    }
}

/// A listener's current TLS configuration; `reload_if_changed` swaps it.
pub struct ReloadingConfig {
    pub listener: &'static str,
    files: ServerTlsFiles,
    current: RwLock<Arc<ServerConfig>>,
    info: RwLock<CertInfo>,
    /// Modification times of the files the current config was built from
    /// (or that last failed to load, so a failure is logged once).
    stamps: Mutex<(Vec<Option<SystemTime>>, bool)>,
}

impl ReloadingConfig {
    pub fn load(listener: &'static str, files: ServerTlsFiles) -> Result<Arc<Self>, TlsError> {
        let stamps = stamps(&files.paths());
        let (config, info) = files.build()?;
        log_expiry(listener, &info);
        Ok(Arc::new(ReloadingConfig {
            listener,
            files,
            current: RwLock::new(Arc::new(config)),
            info: RwLock::new(info),
            stamps: Mutex::new((stamps, false)),
        }))
    }

    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.read().clone()
    }

    pub fn info(&self) -> CertInfo {
        self.info.read().clone()
    }

    /// Rebuilds the configuration when a file changed (or `force`). A file
    /// set that does not load (say, the new certificate is in place but
    /// not yet its key) keeps the old configuration and is retried on the
    /// next call.
    pub fn reload_if_changed(&self, force: bool) -> bool {
        let now = stamps(&self.files.paths());
        let mut guard = self.stamps.lock();
        let (seen, failed) = &mut *guard;
        if !force && now == *seen && !*failed {
            return false;
        }
        match self.files.build() {
            Ok((config, info)) => {
                tracing::info!(
                    listener = self.listener,
                    subject = %info.subject,
                    sans = %info.sans.join(","),
                    not_after = %crate::inspect::format_time(info.not_after),
                    "TLS certificate reloaded; new connections use it"
                );
                log_expiry(self.listener, &info);
                *self.current.write() = Arc::new(config);
                *self.info.write() = info;
                *seen = now;
                *failed = false;
                true
            }
            Err(e) => {
                if now != *seen || !*failed {
                    tracing::error!(listener = self.listener, error = %e, "TLS files changed but do not load; still using the previous certificate");
                }
                *seen = now;
                *failed = true;
                false
            }
        }
    }
}

fn stamps(paths: &[PathBuf]) -> Vec<Option<SystemTime>> {
    paths
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

/// TLS-3 at every load: a warning with a third of the lifetime left, an
/// error under 7 days.
fn log_expiry(listener: &str, info: &CertInfo) {
    match info.expiry(now_secs()) {
        Expiry::Valid { .. } => {}
        e @ Expiry::Renew { .. } => {
            tracing::warn!(listener, subject = %info.subject, "TLS certificate: {e}; run `otelhouse certs renew`")
        }
        e => {
            tracing::error!(listener, subject = %info.subject, "TLS certificate: {e}; run `otelhouse certs renew`")
        }
    }
}

/// Checks the files every `every` and on SIGHUP; also re-logs expiry
/// warnings daily.
pub fn spawn_watcher(
    configs: Vec<Arc<ReloadingConfig>>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(every);
        let mut day = tokio::time::interval(Duration::from_secs(86_400));
        day.tick().await;
        loop {
            let force = tokio::select! {
                _ = tick.tick() => false,
                _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending().await } } => {
                    tracing::info!("SIGHUP: reloading TLS certificates");
                    true
                }
                _ = day.tick() => {
                    for c in &configs { log_expiry(c.listener, &c.info()); }
                    false
                }
            };
            for c in &configs {
                c.reload_if_changed(force);
            }
        }
    })
}
