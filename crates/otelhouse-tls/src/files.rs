//! PEM files: reading certificates and keys with errors that name the file,
//! and writing them so a private key is never readable by others, not even
//! for a moment, and a reader never sees half a file.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use pkcs8::der::pem::LineEnding;
use pkcs8::{EncryptedPrivateKeyInfo, PrivateKeyInfo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::TlsError;

/// The label of a passphrase-protected PKCS#8 key.
const ENCRYPTED_LABEL: &str = "ENCRYPTED PRIVATE KEY";

pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| TlsError::io(path, e))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            TlsError::Invalid(format!(
                "{}: not a PEM certificate file: {e}",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(TlsError::Invalid(format!(
            "{}: no certificate in it (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(certs)
}

/// Reads a private key (PKCS#8, PKCS#1 or SEC1 PEM). A passphrase-protected
/// PKCS#8 key needs `passphrase`.
pub fn read_key(path: &Path, passphrase: Option<&str>) -> Result<PrivateKeyDer<'static>, TlsError> {
    let text = std::fs::read_to_string(path).map_err(|e| TlsError::io(path, e))?;
    if text.contains(ENCRYPTED_LABEL) {
        let Some(pass) = passphrase else {
            return Err(TlsError::Invalid(format!(
                "{} is protected by a passphrase: give it with --passphrase-file or OTELHOUSE_CA_PASSPHRASE",
                path.display()
            )));
        };
        let (_, doc) = pkcs8::der::SecretDocument::from_pem(&text)
            .map_err(|e| TlsError::Invalid(format!("{}: {e}", path.display())))?;
        let info = EncryptedPrivateKeyInfo::try_from(doc.as_bytes())
            .map_err(|e| TlsError::Invalid(format!("{}: {e}", path.display())))?;
        let plain = info
            .decrypt(pass)
            .map_err(|_| TlsError::Invalid(format!("{}: wrong passphrase", path.display())))?;
        return Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            plain.as_bytes().to_vec(),
        )));
    }
    PrivateKeyDer::from_pem_slice(text.as_bytes()).map_err(|e| {
        TlsError::Invalid(format!(
            "{}: no private key in it (expected -----BEGIN PRIVATE KEY-----): {e}",
            path.display()
        ))
    })
}

/// PKCS#8 DER as PEM, encrypted (scrypt + AES-256-CBC, readable by
/// `openssl pkey`) when a passphrase is given.
pub fn key_pem(pkcs8_der: &[u8], passphrase: Option<&str>) -> Result<String, TlsError> {
    match passphrase {
        None => Ok(pem_block("PRIVATE KEY", pkcs8_der)),
        Some(pass) => {
            let info = PrivateKeyInfo::try_from(pkcs8_der)
                .map_err(|e| TlsError::Invalid(format!("key encoding: {e}")))?;
            let salt: [u8; 16] = rand::random();
            let iv: [u8; 16] = rand::random();
            // scrypt N=2^14, r=8, p=1 (16 MiB): OpenSSL's own choice for
            // `pkcs8 -scrypt` and within its default memory limit, so
            // `openssl pkey` reads the key; the crate default (2^17) is not.
            let scrypt = pkcs8::pkcs5::scrypt::Params::new(14, 8, 1, 32)
                .map_err(|e| TlsError::Invalid(format!("key encryption: {e}")))?;
            let params = pkcs8::pkcs5::pbes2::Parameters::scrypt_aes256cbc(scrypt, &salt, &iv)
                .map_err(|e| TlsError::Invalid(format!("key encryption: {e}")))?;
            let doc = info
                .encrypt_with_params(params, pass)
                .map_err(|e| TlsError::Invalid(format!("key encryption: {e}")))?;
            Ok(doc
                .to_pem(ENCRYPTED_LABEL, LineEnding::LF)
                .map_err(|e| TlsError::Invalid(format!("key encoding: {e}")))?
                .to_string())
        }
    }
}

fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Writes `bytes` to `path` via a temporary file created with `mode`, fsync
/// and rename: readers (a server reloading its certificate) see the old file
/// or the new one, and a key file is 0600 from its first byte.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let tmp = tmp_path(path);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| TlsError::io(&tmp, e))?;
    // The umask may have narrowed the mode; never widened it, but make it exact.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| TlsError::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| TlsError::io(&tmp, e))?;
    f.sync_all().map_err(|e| TlsError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| TlsError::io(path, e))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// True when group or others may read the file.
pub fn readable_by_others(path: &Path) -> Result<bool, TlsError> {
    let meta = std::fs::metadata(path).map_err(|e| TlsError::io(path, e))?;
    Ok(meta.permissions().mode() & 0o077 != 0)
}
