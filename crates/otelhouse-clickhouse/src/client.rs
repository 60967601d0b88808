//! ClickHouse's HTTP interface, the part otelhouse uses: a statement with
//! bound parameters (`{name:Type}` + `param_name=` URL arguments, never
//! spliced text), per-query settings, insert bodies, and errors with
//! ClickHouse's code and message.

use std::time::Duration;

use bytes::Bytes;

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct Connection {
    /// `http://host:8123` or `https://host:8443`.
    pub url: String,
    pub user: String,
    pub password: String,
    pub database: String,
    /// PEM file of the CA that signed the server's certificate (default:
    /// the system's roots).
    pub ca_file: Option<std::path::PathBuf>,
    /// PEM certificate and key otelhouse presents (mTLS).
    pub client_cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// For tests only; logged loudly.
    pub insecure_skip_verify: bool,
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ClickHouseError {
    /// ClickHouse refused the statement (its code, name and message).
    #[error("ClickHouse error {code}: {message}")]
    Server { code: u32, message: String },
    #[error("cannot reach ClickHouse at {url}: {why}")]
    Unreachable { url: String, why: String },
    #[error("{0}")]
    Config(String),
}

impl ClickHouseError {
    /// Worth retrying the same request later (the server or network, not
    /// the statement, failed).
    pub fn is_transient(&self) -> bool {
        match self {
            ClickHouseError::Unreachable { .. } => true,
            // TIMEOUT_EXCEEDED, TOO_MANY_SIMULTANEOUS_QUERIES, MEMORY_LIMIT_EXCEEDED,
            // NETWORK_ERROR, SOCKET_TIMEOUT, TOO_MANY_PARTS, ALL_CONNECTION_TRIES_FAILED,
            // KEEPER_EXCEPTION, TABLE_IS_READ_ONLY.
            ClickHouseError::Server { code, .. } => {
                matches!(code, 159 | 202 | 241 | 209 | 210 | 252 | 279 | 999 | 242)
            }
            ClickHouseError::Config(_) => false,
        }
    }
}

/// One bound value: `{name:Type}` in the statement, `param_name` in the URL.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub name: String,
    pub value: String,
}

/// A statement and the values bound to its placeholders.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<Param>,
}

impl Statement {
    /// Binds `value` as a new parameter of `ty` and returns its placeholder.
    pub fn bind(&mut self, ty: &str, value: impl ToString) -> String {
        let name = format!("p{}", self.params.len());
        let placeholder = format!("{{{name}:{ty}}}");
        self.params.push(Param {
            name,
            value: value.to_string(),
        });
        placeholder
    }
}

/// A parameter value in the escaped text form ClickHouse parses
/// `param_*` values in (as a TSV field): backslash, tab, newline, carriage
/// return and NUL escaped; everything else as is.
pub fn escape_param(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    conn: Connection,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.conn.url)
            .field("user", &self.conn.user)
            .field("database", &self.conn.database)
            .finish()
    }
}

impl Client {
    pub fn new(conn: Connection) -> Result<Self, ClickHouseError> {
        let mut http = reqwest::Client::builder()
            .timeout(conn.timeout)
            .pool_idle_timeout(Duration::from_secs(30));
        if let Some(ca) = &conn.ca_file {
            let pem = std::fs::read(ca).map_err(|e| {
                ClickHouseError::Config(format!("reading the ClickHouse CA {}: {e}", ca.display()))
            })?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| ClickHouseError::Config(format!("{}: {e}", ca.display())))?;
            http = http
                .add_root_certificate(cert)
                .tls_built_in_root_certs(false);
        }
        if let Some((cert, key)) = &conn.client_cert {
            let mut pem = std::fs::read(cert).map_err(|e| {
                ClickHouseError::Config(format!(
                    "reading the client certificate {}: {e}",
                    cert.display()
                ))
            })?;
            pem.push(b'\n');
            pem.extend(std::fs::read(key).map_err(|e| {
                ClickHouseError::Config(format!("reading the client key {}: {e}", key.display()))
            })?);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                ClickHouseError::Config(format!(
                    "client certificate {} / key {}: {}",
                    cert.display(),
                    key.display(),
                    error_chain(&e)
                ))
            })?;
            http = http.identity(identity);
        }
        if conn.insecure_skip_verify {
            tracing::warn!(
                url = %conn.url,
                "ClickHouse TLS certificates are NOT verified (--clickhouse-insecure-skip-verify): for tests only"
            );
            http = http.danger_accept_invalid_certs(true);
        }
        let http = http
            .build()
            .map_err(|e| ClickHouseError::Config(e.to_string()))?;
        Ok(Client { http, conn })
    }

    pub fn database(&self) -> &str {
        &self.conn.database
    }

    /// The same connection without a current database: for statements
    /// that must work before the database exists (ClickHouse refuses any
    /// request naming an unknown `database`).
    pub fn without_database(&self) -> Client {
        let mut c = self.clone();
        c.conn.database.clear();
        c
    }

    /// Runs a statement; returns the response body (in the statement's
    /// FORMAT). `settings` apply to this statement only.
    pub async fn query(
        &self,
        st: &Statement,
        settings: &[(&str, String)],
    ) -> Result<Bytes, ClickHouseError> {
        self.send(st, settings, None).await
    }

    /// `INSERT INTO … FORMAT …` (in `st`) with `body` as the data, sent
    /// LZ4-compressed (`Content-Encoding: lz4`, the LZ4 frame format):
    /// telemetry compresses several-fold and LZ4 costs little CPU.
    pub async fn insert(
        &self,
        st: &Statement,
        settings: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<(), ClickHouseError> {
        self.send(st, settings, Some(lz4_frame(&body)?))
            .await
            .map(|_| ())
    }

    async fn send(
        &self,
        st: &Statement,
        settings: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ClickHouseError> {
        let mut url: Vec<(String, String)> = Vec::new();
        if !self.conn.database.is_empty() {
            url.push(("database".into(), self.conn.database.clone()));
        }
        for p in &st.params {
            url.push((format!("param_{}", p.name), escape_param(&p.value)));
        }
        for (k, v) in settings {
            url.push(((*k).to_string(), v.clone()));
        }
        let req = match body {
            // The statement travels in the URL, the data in the body.
            Some(data) => {
                url.push(("query".into(), st.sql.clone()));
                self.http
                    .post(&self.conn.url)
                    .header("Content-Encoding", "lz4")
                    .body(data)
            }
            None => self.http.post(&self.conn.url).body(st.sql.clone()),
        };
        let resp = req
            .query(&url)
            .header("X-ClickHouse-User", &self.conn.user)
            .header("X-ClickHouse-Key", &self.conn.password)
            .send()
            .await
            .map_err(|e| ClickHouseError::Unreachable {
                url: self.conn.url.clone(),
                why: handshake_reason(&error_chain(&e)),
            })?;
        let code = resp
            .headers()
            .get("X-ClickHouse-Exception-Code")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok());
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ClickHouseError::Unreachable {
                url: self.conn.url.clone(),
                why: error_chain(&e),
            })?;
        if !status.is_success() || code.is_some() {
            let message = String::from_utf8_lossy(&bytes).trim().to_string();
            return Err(ClickHouseError::Server {
                code: code.unwrap_or(0),
                message,
            });
        }
        Ok(bytes)
    }
}

fn lz4_frame(data: &[u8]) -> Result<Vec<u8>, ClickHouseError> {
    use std::io::Write as _;
    let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::with_capacity(data.len() / 4));
    enc.write_all(data)
        .and_then(|()| enc.finish().map_err(std::io::Error::other))
        .map_err(|e| ClickHouseError::Config(format!("LZ4 compression: {e}")))
}

/// Puts the reason of a failed TLS handshake first, in words (rustls's
/// error names are precise but cryptic); other errors pass unchanged.
pub fn handshake_reason(chain: &str) -> String {
    const REASONS: [(&str, &str); 11] = [
        (
            "UnknownIssuer",
            "TLS: unknown CA: ClickHouse's certificate is not signed by the CA otelhouse trusts (--clickhouse-ca)",
        ),
        (
            "NotValidForName",
            "TLS: name mismatch: ClickHouse's certificate is not valid for the host in --clickhouse-url",
        ),
        (
            "not valid for name",
            "TLS: name mismatch: ClickHouse's certificate is not valid for the host in --clickhouse-url",
        ),
        (
            "certificate expired",
            "TLS: ClickHouse's certificate has expired",
        ),
        (
            "unknown issuer",
            "TLS: unknown CA: ClickHouse's certificate is not signed by the CA otelhouse trusts (--clickhouse-ca)",
        ),
        ("Expired", "TLS: ClickHouse's certificate has expired"),
        (
            "NotValidYet",
            "TLS: ClickHouse's certificate is not valid yet",
        ),
        ("Revoked", "TLS: ClickHouse's certificate is revoked"),
        (
            "CertificateRequired",
            "TLS: ClickHouse requires a client certificate (--clickhouse-client-cert, --clickhouse-client-key)",
        ),
        (
            "UnknownCA",
            "TLS: ClickHouse does not trust otelhouse's client certificate (unknown CA)",
        ),
        (
            "BadCertificate",
            "TLS: ClickHouse refused otelhouse's client certificate",
        ),
    ];
    match REASONS.iter().find(|(needle, _)| chain.contains(needle)) {
        Some((_, reason)) => format!("{reason} ({chain})"),
        None => chain.to_string(),
    }
}

/// An error with its causes ("… : invalid peer certificate: UnknownIssuer").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_failures_are_named() {
        let r = handshake_reason("error sending request: invalid peer certificate: UnknownIssuer");
        assert!(r.starts_with("TLS: unknown CA"), "{r}");
        let r = handshake_reason("invalid peer certificate: NotValidForName: ...");
        assert!(r.starts_with("TLS: name mismatch"), "{r}");
        let r = handshake_reason(
            "invalid peer certificate: certificate not valid for name \"127.0.0.1\"; certificate is only valid for DnsName(\"db.example\")",
        );
        assert!(r.starts_with("TLS: name mismatch"), "{r}");
        let r = handshake_reason("invalid peer certificate: Expired");
        assert!(
            r.starts_with("TLS: ClickHouse's certificate has expired"),
            "{r}"
        );
        assert_eq!(handshake_reason("connection refused"), "connection refused");
    }

    #[test]
    fn params_are_escaped_as_tsv_fields() {
        assert_eq!(
            escape_param("a\\b\tc\nd\r\0'\"; DROP"),
            "a\\\\b\\tc\\nd\\r\\0'\"; DROP"
        );
        let mut st = Statement::default();
        assert_eq!(st.bind("String", "x"), "{p0:String}");
        assert_eq!(st.bind("Float64", 1.5), "{p1:Float64}");
        assert_eq!(st.params[1].value, "1.5");
    }
}
