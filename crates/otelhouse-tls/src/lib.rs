//! TLS for otelhouse: our own CA and certificates (`otelhouse certs`),
//! certificate inspection and verification with reasons, and the reloading
//! rustls configuration our listeners use. Crypto is rustls with *ring*
//! (no cmake or clang needed to build).

pub mod ca;
pub mod files;
pub mod inspect;
pub mod listener;
pub mod probe;
pub mod server;

pub use rustls;

pub use inspect::{CertInfo, Expiry};
pub use listener::TlsIncoming;
pub use server::{ReloadingConfig, ServerTlsFiles, TlsMin};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl TlsError {
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        TlsError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
