//! `certs show HOST:PORT`: fetch the chain a server presents, whatever it
//! is, so it can be shown and then verified separately with reasons.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;

use crate::TlsError;

/// Records the presented chain and accepts it. Used only to inspect: no
/// application data is sent over this connection.
#[derive(Debug)]
struct Recorder {
    chain: Mutex<Vec<CertificateDer<'static>>>,
    schemes: Vec<SignatureScheme>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = vec![end_entity.clone().into_owned()];
        chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        *self.chain.lock().unwrap() = chain;
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

/// What a server presented: its chain, and the negotiated protocol version.
pub struct Presented {
    pub chain: Vec<CertificateDer<'static>>,
    pub version: String,
}

/// Connects to `host:port` and returns the certificates it presents.
/// `host` is sent as SNI when it is a name.
pub async fn fetch_chain(host: &str, port: u16, timeout: Duration) -> Result<Presented, TlsError> {
    let provider = rustls::crypto::ring::default_provider();
    let recorder = Arc::new(Recorder {
        chain: Mutex::new(Vec::new()),
        schemes: provider
            .signature_verification_algorithms
            .supported_schemes(),
    });
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| TlsError::Invalid(format!("`{host}` is not a host name or IP address")))?;
    let connect = async {
        let tcp = TcpStream::connect((host, port)).await?;
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
    };
    let result = tokio::time::timeout(timeout, connect).await.map_err(|_| {
        TlsError::Invalid(format!(
            "{host}:{port}: no TLS handshake within {timeout:?}"
        ))
    })?;
    let chain = recorder.chain.lock().unwrap().clone();
    match result {
        Ok(stream) => {
            let version = stream
                .get_ref()
                .1
                .protocol_version()
                .map(|v| format!("{v:?}"))
                .unwrap_or_default();
            Ok(Presented { chain, version })
        }
        // A server demanding a client certificate still showed its own.
        Err(_) if !chain.is_empty() => Ok(Presented {
            chain,
            version: String::new(),
        }),
        Err(e) => Err(TlsError::Invalid(format!("{host}:{port}: {e}"))),
    }
}
