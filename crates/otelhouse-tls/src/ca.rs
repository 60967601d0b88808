//! Our own certificate authority (TLS-1, TLS-2): `certs init-ca` makes a
//! root whose name is not a host name and whose key is 0600 (optionally
//! passphrase-protected); `certs issue` signs server or client certificates
//! with SANs; `certs renew` re-issues one with a fresh key once less than a
//! third of its lifetime remains.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::PrivateKeyDer;
use time::{Duration, OffsetDateTime};

use crate::TlsError;
use crate::files::{key_pem, read_certs, read_key, write_atomic};
use crate::inspect::{CertInfo, now_secs};

pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";

/// Issued certificates are backdated this much, so a client whose clock is
/// slightly behind does not see a not-yet-valid certificate.
const BACKDATE: Duration = Duration::minutes(5);

pub struct CaPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CaPaths {
    pub fn in_dir(dir: &Path) -> Self {
        CaPaths {
            cert: dir.join(CA_CERT),
            key: dir.join(CA_KEY),
        }
    }
}

/// Creates a CA in `dir` (`ca.crt` 0644, `ca.key` 0600). Refuses to
/// overwrite an existing CA key: every certificate it issued depends on it.
pub fn init_ca(
    dir: &Path,
    name: &str,
    days: u32,
    passphrase: Option<&str>,
) -> Result<CertInfo, TlsError> {
    if looks_like_host_name(name) {
        return Err(TlsError::Invalid(format!(
            "the CA's name `{name}` looks like a host name; a root's CN must not be one (TLS-2): use e.g. \"Acme otelhouse CA\""
        )));
    }
    let paths = CaPaths::in_dir(dir);
    if paths.key.exists() {
        return Err(TlsError::Invalid(format!(
            "{} already exists; a CA is created once (move it away to start over)",
            paths.key.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| TlsError::io(dir, e))?;
    let key = KeyPair::generate().map_err(rc)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "otelhouse");
    // Path length 0: this root signs leaf certificates only.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::days(days as i64);
    params.serial_number = Some(random_serial());
    let cert = params.self_signed(&key).map_err(rc)?;
    write_atomic(
        &paths.key,
        key_pem(&key.serialize_der(), passphrase)?.as_bytes(),
        0o600,
    )?;
    write_atomic(&paths.cert, cert.pem().as_bytes(), 0o644)?;
    CertInfo::parse(cert.der())
}

/// A root's CN should read like a name, not like `example.com` or an IP.
fn looks_like_host_name(name: &str) -> bool {
    let n = name.trim();
    n.parse::<IpAddr>().is_ok()
        || n.eq_ignore_ascii_case("localhost")
        || (!n.contains(' ')
            && n.contains('.')
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '*'))
}

/// What to issue.
#[derive(Debug, Clone, Default)]
pub struct IssueRequest {
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    /// A client certificate (mTLS) instead of a server certificate.
    pub client: bool,
    /// Subject CN; defaults to the first SAN.
    pub common_name: Option<String>,
    pub days: u32,
    /// Start of validity, unix seconds; default: now (less 5 minutes for
    /// clock skew), and the certificate runs `days` from now.
    pub not_before: Option<i64>,
}

impl IssueRequest {
    /// The subject CN: `common_name`, else the first DNS name, else the first IP.
    pub fn subject_name(&self) -> Option<String> {
        self.common_name
            .clone()
            .or_else(|| self.dns.first().cloned())
            .or_else(|| self.ips.first().map(|i| i.to_string()))
    }
}

/// A loaded CA, ready to sign.
pub struct Ca {
    cert_der: rustls::pki_types::CertificateDer<'static>,
    key: KeyPair,
    pub info: CertInfo,
}

impl std::fmt::Debug for Ca {
    // Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("subject", &self.info.subject)
            .finish()
    }
}

impl Ca {
    pub fn load(dir: &Path, passphrase: Option<&str>) -> Result<Self, TlsError> {
        let paths = CaPaths::in_dir(dir);
        let cert_der = read_certs(&paths.cert)?.remove(0);
        let key = match read_key(&paths.key, passphrase)? {
            PrivateKeyDer::Pkcs8(k) => KeyPair::try_from(k.secret_pkcs8_der()).map_err(rc)?,
            other => KeyPair::try_from(&other).map_err(rc)?,
        };
        let info = CertInfo::parse(&cert_der)?;
        if !info.is_ca {
            return Err(TlsError::Invalid(format!(
                "{} is not a CA certificate",
                paths.cert.display()
            )));
        }
        if info.expiry(now_secs()).is_unusable() {
            return Err(TlsError::Invalid(format!(
                "the CA in {} is {}",
                paths.cert.display(),
                info.expiry(now_secs())
            )));
        }
        Ok(Ca {
            cert_der,
            key,
            info,
        })
    }

    /// Issues a certificate and writes `cert_path` (0644) and `key_path`
    /// (0600). Its end date never passes the CA's.
    pub fn issue(
        &self,
        req: &IssueRequest,
        cert_path: &Path,
        key_path: &Path,
    ) -> Result<CertInfo, TlsError> {
        if req.dns.is_empty() && req.ips.is_empty() && !req.client {
            return Err(TlsError::Invalid(
                "a server certificate needs at least one --dns NAME or --ip ADDRESS: clients check the name they connect to against these (TLS-2)".into(),
            ));
        }
        if req.days == 0 {
            return Err(TlsError::Invalid("--days must be at least 1".into()));
        }
        let mut params = CertificateParams::default();
        params.subject_alt_names = Vec::new();
        for d in &req.dns {
            let name = d
                .clone()
                .try_into()
                .map_err(|_| TlsError::Invalid(format!("--dns `{d}` is not a DNS name")))?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        for ip in &req.ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        let cn = req.subject_name().ok_or_else(|| {
            TlsError::Invalid("a client certificate needs --name (who it identifies)".into())
        })?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![if req.client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        let (start, end) = match req.not_before {
            Some(secs) => {
                let start = OffsetDateTime::from_unix_timestamp(secs)
                    .map_err(|e| TlsError::Invalid(format!("start date: {e}")))?;
                (start, start + Duration::days(req.days as i64))
            }
            None => (now - BACKDATE, now + Duration::days(req.days as i64)),
        };
        params.not_before = start;
        let ca_end = OffsetDateTime::from_unix_timestamp(self.info.not_after)
            .map_err(|e| TlsError::Invalid(format!("CA end date: {e}")))?;
        params.not_after = end.min(ca_end);
        params.serial_number = Some(random_serial());
        let key = KeyPair::generate().map_err(rc)?;
        let issuer = Issuer::from_ca_cert_der(&self.cert_der, &self.key).map_err(rc)?;
        let cert = params.signed_by(&key, &issuer).map_err(rc)?;
        write_atomic(
            key_path,
            key_pem(&key.serialize_der(), None)?.as_bytes(),
            0o600,
        )?;
        write_atomic(cert_path, cert.pem().as_bytes(), 0o644)?;
        CertInfo::parse(cert.der())
    }

    /// Re-issues the certificate in `cert_path` (same names, purpose and
    /// lifetime, a new key) when less than a third of its lifetime remains,
    /// or always with `force`. Returns the new certificate, or None when it
    /// was not due.
    pub fn renew(
        &self,
        cert_path: &Path,
        key_path: &Path,
        force: bool,
        days: Option<u32>,
    ) -> Result<Option<CertInfo>, TlsError> {
        let old = CertInfo::parse(&read_certs(cert_path)?[0])?;
        let due = !matches!(old.expiry(now_secs()), crate::inspect::Expiry::Valid { .. });
        if !due && !force {
            return Ok(None);
        }
        let mut req = IssueRequest {
            client: old.client_auth && !old.server_auth,
            common_name: old.common_name().map(str::to_string),
            days: days.unwrap_or(((old.lifetime_secs() + 3_600) / 86_400).max(1) as u32),
            ..Default::default()
        };
        for san in &old.sans {
            match san.parse::<IpAddr>() {
                Ok(ip) => req.ips.push(ip),
                Err(_) => req.dns.push(san.clone()),
            }
        }
        self.issue(&req, cert_path, key_path).map(Some)
    }
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // no leading zero byte
    SerialNumber::from_slice(&bytes)
}

fn rc(e: rcgen::Error) -> TlsError {
    TlsError::Invalid(format!("certificate: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::Expiry;

    #[test]
    fn ca_key_is_private_and_root_name_is_not_a_host() {
        let dir = tempfile::tempdir().unwrap();
        let err = init_ca(dir.path(), "ca.example.com", 365, None).unwrap_err();
        assert!(err.to_string().contains("looks like a host name"), "{err}");
        let info = init_ca(dir.path(), "Test CA", 365, None).unwrap();
        assert!(info.is_ca);
        assert_eq!(info.common_name(), Some("Test CA"));
        assert!(!crate::files::readable_by_others(&dir.path().join(CA_KEY)).unwrap());
        let again = init_ca(dir.path(), "Test CA", 365, None).unwrap_err();
        assert!(again.to_string().contains("already exists"), "{again}");
    }

    #[test]
    fn issues_server_and_client_certificates_with_sans() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "Test CA", 365, None).unwrap();
        let ca = Ca::load(dir.path(), None).unwrap();
        let req = IssueRequest {
            dns: vec!["a.example".into(), "localhost".into()],
            ips: vec!["10.0.0.5".parse().unwrap()],
            days: 90,
            ..Default::default()
        };
        let (crt, key) = (dir.path().join("a.crt"), dir.path().join("a.key"));
        let info = ca.issue(&req, &crt, &key).unwrap();
        assert_eq!(info.sans, vec!["a.example", "localhost", "10.0.0.5"]);
        assert!(info.server_auth && !info.client_auth && !info.is_ca);
        assert!(info.issuer.contains("Test CA"));
        assert!(
            matches!(info.expiry(now_secs()), Expiry::Valid { days_left } if (89.0..=90.1).contains(&days_left))
        );
        assert!(!crate::files::readable_by_others(&key).unwrap());
        let roots = crate::inspect::roots(Some(&dir.path().join(CA_CERT))).unwrap();
        let chain = read_certs(&crt).unwrap();
        let now = rustls::pki_types::UnixTime::now();
        crate::inspect::verify_chain(&chain, roots.clone(), Some("a.example"), now).unwrap();
        crate::inspect::verify_chain(&chain, roots.clone(), Some("10.0.0.5"), now).unwrap();
        let wrong = crate::inspect::verify_chain(&chain, roots.clone(), Some("b.example"), now)
            .unwrap_err();
        assert!(
            wrong.contains("name mismatch") && wrong.contains("a.example"),
            "{wrong}"
        );

        let no_san = ca.issue(
            &IssueRequest {
                days: 90,
                ..Default::default()
            },
            &crt,
            &key,
        );
        assert!(no_san.unwrap_err().to_string().contains("--dns"));

        let client = IssueRequest {
            client: true,
            common_name: Some("collector-1".into()),
            days: 30,
            ..Default::default()
        };
        let (ccrt, ckey) = (dir.path().join("c.crt"), dir.path().join("c.key"));
        let cinfo = ca.issue(&client, &ccrt, &ckey).unwrap();
        assert!(cinfo.client_auth && !cinfo.server_auth);
        crate::inspect::verify_chain(&read_certs(&ccrt).unwrap(), roots, None, now).unwrap();
    }

    #[test]
    fn passphrase_protects_the_ca_key() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "Locked CA", 365, Some("correct horse")).unwrap();
        let text = std::fs::read_to_string(dir.path().join(CA_KEY)).unwrap();
        assert!(text.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
        assert!(
            Ca::load(dir.path(), None)
                .unwrap_err()
                .to_string()
                .contains("passphrase")
        );
        assert!(
            Ca::load(dir.path(), Some("wrong"))
                .unwrap_err()
                .to_string()
                .contains("wrong passphrase")
        );
        Ca::load(dir.path(), Some("correct horse")).unwrap();
    }

    #[test]
    fn renew_waits_for_the_last_third_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "Test CA", 365, None).unwrap();
        let ca = Ca::load(dir.path(), None).unwrap();
        let (crt, key) = (dir.path().join("s.crt"), dir.path().join("s.key"));
        let req = IssueRequest {
            dns: vec!["s.example".into()],
            days: 90,
            ..Default::default()
        };
        let first = ca.issue(&req, &crt, &key).unwrap();
        let old_key = std::fs::read(&key).unwrap();
        assert!(ca.renew(&crt, &key, false, None).unwrap().is_none());
        let renewed = ca.renew(&crt, &key, true, None).unwrap().unwrap();
        assert_eq!(renewed.sans, first.sans);
        assert_ne!(renewed.serial, first.serial);
        assert_ne!(
            std::fs::read(&key).unwrap(),
            old_key,
            "renewal rotates the key"
        );
        assert!((renewed.lifetime_secs() - first.lifetime_secs()).abs() < 86_400);
    }

    #[test]
    fn expiry_thresholds() {
        let info = |nb: i64, na: i64| CertInfo {
            subject: String::new(),
            issuer: String::new(),
            serial: String::new(),
            sans: vec![],
            not_before: nb,
            not_after: na,
            is_ca: false,
            server_auth: true,
            client_auth: false,
            sha256: String::new(),
        };
        let day = 86_400;
        let c = info(0, 90 * day);
        assert!(matches!(c.expiry(10 * day), Expiry::Valid { .. }));
        assert!(matches!(c.expiry(61 * day), Expiry::Renew { .. }));
        assert!(matches!(c.expiry(84 * day), Expiry::Critical { .. }));
        assert!(matches!(c.expiry(90 * day), Expiry::Expired { .. }));
        assert!(matches!(c.expiry(-1), Expiry::NotYetValid { .. }));
    }
}
