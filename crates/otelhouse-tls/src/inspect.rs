//! Reading certificates: what a certificate says (subject, SANs, issuer,
//! validity), how close it is to expiry (TLS-3), whether a chain verifies
//! against a CA or the system roots, and why not, in words (TLS-6).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, RootCertStore};
use serde::Serialize;
use sha2::Digest;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::{TlsError, files};

/// What a certificate says, for `certs show` and for logs.
#[derive(Debug, Clone, Serialize)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    /// DNS names and IP addresses the certificate is valid for.
    pub sans: Vec<String>,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    pub is_ca: bool,
    pub server_auth: bool,
    pub client_auth: bool,
    /// SHA-256 of the DER, hex.
    pub sha256: String,
}

impl CertInfo {
    pub fn parse(der: &[u8]) -> Result<Self, TlsError> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| TlsError::Invalid(format!("not an X.509 certificate: {e}")))?;
        let mut sans = Vec::new();
        if let Ok(Some(ext)) = cert.subject_alternative_name() {
            for name in &ext.value.general_names {
                match name {
                    GeneralName::DNSName(d) => sans.push(d.to_string()),
                    GeneralName::IPAddress(b) => sans.push(ip_string(b)),
                    _ => {}
                }
            }
        }
        let (server_auth, client_auth) = match cert.extended_key_usage() {
            Ok(Some(eku)) => (
                eku.value.server_auth || eku.value.any,
                eku.value.client_auth || eku.value.any,
            ),
            // No EKU extension: usable for any purpose.
            _ => (true, true),
        };
        let digest = sha2::Sha256::digest(der);
        Ok(CertInfo {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            serial: cert.raw_serial_as_string(),
            sans,
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            is_ca: cert.is_ca(),
            server_auth,
            client_auth,
            sha256: hex::encode(digest),
        })
    }

    /// The subject's common name, if any.
    pub fn common_name(&self) -> Option<&str> {
        self.subject
            .split(", ")
            .find_map(|part| part.strip_prefix("CN="))
    }

    pub fn lifetime_secs(&self) -> i64 {
        self.not_after - self.not_before
    }

    pub fn expiry(&self, now: i64) -> Expiry {
        if now < self.not_before {
            return Expiry::NotYetValid {
                starts_in_days: (self.not_before - now) as f64 / 86_400.0,
            };
        }
        if now >= self.not_after {
            return Expiry::Expired {
                days_ago: (now - self.not_after) as f64 / 86_400.0,
            };
        }
        let left = self.not_after - now;
        let days_left = left as f64 / 86_400.0;
        if left < 7 * 86_400 {
            Expiry::Critical { days_left }
        } else if left * 3 < self.lifetime_secs() {
            Expiry::Renew { days_left }
        } else {
            Expiry::Valid { days_left }
        }
    }
}

fn ip_string(b: &[u8]) -> String {
    match b.len() {
        4 => std::net::Ipv4Addr::from(<[u8; 4]>::try_from(b).unwrap()).to_string(),
        16 => std::net::Ipv6Addr::from(<[u8; 16]>::try_from(b).unwrap()).to_string(),
        _ => hex::encode(b),
    }
}

/// Where a certificate stands in its lifetime (TLS-3): renew when less than
/// a third remains, critical under 7 days, unusable when expired or not yet
/// valid.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Expiry {
    Valid { days_left: f64 },
    Renew { days_left: f64 },
    Critical { days_left: f64 },
    Expired { days_ago: f64 },
    NotYetValid { starts_in_days: f64 },
}

impl Expiry {
    /// Expired or not yet valid: nothing should accept it.
    pub fn is_unusable(&self) -> bool {
        matches!(self, Expiry::Expired { .. } | Expiry::NotYetValid { .. })
    }
}

impl std::fmt::Display for Expiry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expiry::Valid { days_left } => write!(f, "valid, {days_left:.0} days left"),
            Expiry::Renew { days_left } => write!(
                f,
                "renew soon: {days_left:.0} days left (less than a third of its lifetime)"
            ),
            Expiry::Critical { days_left } => {
                write!(f, "EXPIRES in {days_left:.1} days (under 7): renew now")
            }
            Expiry::Expired { days_ago } => write!(f, "EXPIRED {days_ago:.1} days ago"),
            Expiry::NotYetValid { starts_in_days } => {
                write!(f, "NOT YET VALID: starts in {starts_in_days:.1} days")
            }
        }
    }
}

/// Unix seconds as `2026-11-21 09:30:00 UTC`.
pub fn format_time(secs: i64) -> String {
    let fmt =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| secs.to_string())
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Trust anchors to verify against: a CA file, or the system's roots.
pub fn roots(ca: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    match ca {
        Some(path) => {
            for cert in files::read_certs(path)? {
                store.add(cert).map_err(|e| {
                    TlsError::Invalid(format!(
                        "{}: not a usable CA certificate: {e}",
                        path.display()
                    ))
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = store.add(cert);
            }
            if store.is_empty() {
                return Err(TlsError::Invalid(
                    "no system CA certificates found (install ca-certificates, or pass --ca FILE)"
                        .into(),
                ));
            }
        }
    }
    Ok(store)
}

/// Verifies a chain (leaf first) as a TLS server certificate for `name`, or
/// as a client certificate when `name` is None.
pub fn verify_chain(
    chain: &[CertificateDer<'static>],
    roots: RootCertStore,
    name: Option<&str>,
    now: UnixTime,
) -> Result<(), String> {
    let Some((leaf, intermediates)) = chain.split_first() else {
        return Err("no certificate presented".into());
    };
    let roots = Arc::new(roots);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let result = match name {
        Some(name) => {
            let server_name = ServerName::try_from(name.to_string())
                .map_err(|_| format!("`{name}` is not a host name or IP address"))?;
            let verifier =
                rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| e.to_string())?;
            verifier
                .verify_server_cert(leaf, intermediates, &server_name, &[], now)
                .map(|_| ())
        }
        None => {
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| e.to_string())?;
            verifier
                .verify_client_cert(leaf, intermediates, now)
                .map(|_| ())
        }
    };
    result.map_err(|e| explain(&e))
}

/// A TLS failure in words: which of unknown CA, name mismatch, expired...
pub fn explain(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(c) => explain_certificate(c),
        rustls::Error::AlertReceived(alert) => {
            use rustls::AlertDescription as A;
            let why = match alert {
                A::UnknownCA => "the peer does not trust our certificate's CA (unknown CA)",
                A::BadCertificate => "the peer rejected our certificate (bad certificate)",
                A::CertificateExpired => "the peer says our certificate has expired",
                A::CertificateRequired => {
                    "the peer requires a client certificate and none was sent"
                }
                A::ProtocolVersion => "no TLS version in common (the peer may require TLS 1.3)",
                A::HandshakeFailure => "no cipher suite or protocol in common",
                _ => "",
            };
            if why.is_empty() {
                format!("the peer ended the handshake: {alert:?}")
            } else {
                why.to_string()
            }
        }
        rustls::Error::NoCertificatesPresented => "no client certificate was presented".into(),
        rustls::Error::PeerIncompatible(p) => format!("incompatible peer: {p:?}"),
        other => other.to_string(),
    }
}

/// rustls reports presented names as `DnsName("a.example")` or
/// `IpAddress(10.0.0.5)`; users want `a.example` and `10.0.0.5`.
fn plain_name(p: &str) -> &str {
    p.split_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .map(|inner| inner.trim_matches('"'))
        .unwrap_or(p)
}

fn explain_certificate(c: &CertificateError) -> String {
    match c {
        CertificateError::UnknownIssuer => {
            "unknown CA: the certificate was not issued by a trusted CA (pass the issuing CA with --ca FILE)".into()
        }
        CertificateError::NotValidForName => "name mismatch: the certificate is not valid for this host name".into(),
        CertificateError::NotValidForNameContext { expected, presented } => format!(
            "name mismatch: the certificate is valid for [{}], not for {}",
            presented.iter().map(|p| plain_name(p)).collect::<Vec<_>>().join(", "),
            expected.to_str()
        ),
        CertificateError::Expired => "expired: the certificate is past its end date".into(),
        CertificateError::ExpiredContext { time, not_after } => format!(
            "expired: the certificate ended {} (now {})",
            format_time(not_after.as_secs() as i64),
            format_time(time.as_secs() as i64)
        ),
        CertificateError::NotValidYet => "not yet valid: the certificate's start date is in the future".into(),
        CertificateError::NotValidYetContext { time, not_before } => format!(
            "not yet valid: the certificate starts {} (now {}); check the clocks",
            format_time(not_before.as_secs() as i64),
            format_time(time.as_secs() as i64)
        ),
        CertificateError::BadSignature => "bad signature: the certificate was not signed by the CA it names".into(),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "wrong purpose: a server certificate used as a client certificate or the reverse (issue it with or without --client)".into()
        }
        CertificateError::Revoked => "revoked".into(),
        other => format!("invalid certificate: {other:?}"),
    }
}
