//! Settings of `otelhouse serve`. Every field can come from the TOML config
//! file; the binary layers `OTELHOUSE_*` environment variables and flags on
//! top (flag > environment > file > default).

use std::path::PathBuf;
use std::time::Duration;

use otelhouse_otlp::Limits;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub otlp_grpc_addr: String,
    pub otlp_http_addr: String,
    pub http_addr: String,
    pub retention: Retention,
    pub limits: Limits,
    pub storage: StorageConfig,
    pub tls: TlsConfig,
    pub security: SecurityConfig,
    pub clickhouse: ClickHouseConfig,
}

/// The ClickHouse backend: with `url` set, records go from the WAL to
/// ClickHouse (ClickStack's tables) and the API reads from there instead of
/// the embedded store. Passwords come from the environment
/// (`OTELHOUSE_CLICKHOUSE_INGEST_PASSWORD`, `..._QUERY_PASSWORD`) or from
/// files, never from a flag or this file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClickHouseConfig {
    /// `https://host:8443` (or `http://` on loopback). None: embedded store.
    pub url: Option<String>,
    pub database: String,
    /// The user that creates the tables and inserts (`clickhouse provision`
    /// makes it with exactly SELECT, INSERT, CREATE TABLE, CREATE VIEW).
    pub ingest_user: String,
    pub ingest_password_file: Option<PathBuf>,
    #[serde(skip)]
    pub ingest_password: Option<Redacted>,
    /// The read-only user the API queries as.
    pub query_user: String,
    pub query_password_file: Option<PathBuf>,
    #[serde(skip)]
    pub query_password: Option<Redacted>,
    /// CA of ClickHouse's certificate (default: the system's roots).
    pub ca: Option<PathBuf>,
    /// Client certificate and key for mTLS to ClickHouse.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Accept any server certificate: for tests only, logged loudly.
    pub insecure_skip_verify: bool,
    /// `ON CLUSTER` tables: ReplicatedMergeTree `<name>_local` + Distributed.
    pub cluster: Option<String>,
    /// Backlog shipped per insert (rows); ClickHouse wants few, large inserts.
    pub max_batch_rows: usize,
    /// Longest a record waits before its batch is inserted.
    #[serde(with = "human_duration")]
    pub max_batch_delay: Duration,
    /// Start on a public address although ClickHouse is reached without
    /// verified TLS (plaintext to a remote host, or verification off).
    pub allow_insecure_clickhouse: bool,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        ClickHouseConfig {
            url: None,
            database: "otel".into(),
            ingest_user: "otelhouse_ingest".into(),
            ingest_password_file: None,
            ingest_password: None,
            query_user: "otelhouse_query".into(),
            query_password_file: None,
            query_password: None,
            ca: None,
            client_cert: None,
            client_key: None,
            insecure_skip_verify: false,
            cluster: None,
            max_batch_rows: 200_000,
            max_batch_delay: Duration::from_secs(1),
            allow_insecure_clickhouse: false,
        }
    }
}

impl ClickHouseConfig {
    /// Clients for the ingestion user and the query user.
    pub fn clients(
        &self,
        timeout: Duration,
    ) -> Result<(otelhouse_clickhouse::Client, otelhouse_clickhouse::Client), String> {
        let url = self
            .url
            .clone()
            .ok_or("no ClickHouse URL: give --clickhouse-url")?;
        otelhouse_clickhouse::ddl::check_database_name(&self.database)
            .map_err(|e| format!("--clickhouse-database: {e}"))?;
        if let Some(c) = &self.cluster {
            otelhouse_clickhouse::provision::check_name("--clickhouse-cluster", c)?;
        }
        let client_cert = match (&self.client_cert, &self.client_key) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            (None, None) => None,
            _ => {
                return Err(
                    "--clickhouse-client-cert and --clickhouse-client-key go together".into(),
                );
            }
        };
        let connect = |user: &str, password: String| {
            otelhouse_clickhouse::Client::new(otelhouse_clickhouse::Connection {
                url: url.clone(),
                user: user.to_string(),
                password,
                database: self.database.clone(),
                ca_file: self.ca.clone(),
                client_cert: client_cert.clone(),
                insecure_skip_verify: self.insecure_skip_verify,
                timeout,
            })
            .map_err(|e| e.to_string())
        };
        let ingest = Self::password(
            &self.ingest_password,
            &self.ingest_password_file,
            "ClickHouse ingestion user's",
        )?;
        let query = Self::password(
            &self.query_password,
            &self.query_password_file,
            "ClickHouse query user's",
        )?;
        Ok((
            connect(&self.ingest_user, ingest)?,
            connect(&self.query_user, query)?,
        ))
    }

    /// A user's password: the environment variable, else the file (one
    /// line; a trailing newline is not part of it), else empty.
    pub fn password(
        from_env: &Option<Redacted>,
        file: &Option<PathBuf>,
        what: &str,
    ) -> Result<String, String> {
        if let Some(p) = from_env {
            return Ok(p.0.clone());
        }
        match file {
            None => Ok(String::new()),
            Some(path) => read_secret_file(path)
                .map_err(|e| format!("reading the {what} password file {}: {e}", path.display())),
        }
    }
}

/// TLS on every listener: with a certificate and key set, the OTLP gRPC,
/// OTLP HTTP and API listeners all speak TLS only.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate (leaf first, then any intermediates).
    pub cert: Option<PathBuf>,
    /// PEM private key (unencrypted: the server starts unattended).
    pub key: Option<PathBuf>,
    /// Require OTLP clients to present a certificate from this CA (mTLS);
    /// the ingestion key is still required.
    pub client_ca: Option<PathBuf>,
    /// Lowest TLS version accepted: "1.2" (default) or "1.3".
    pub min: otelhouse_tls::TlsMin,
}

/// The startup gate's inputs and its explicit overrides. Secrets
/// themselves never live in the config file (SEC-2): only paths to them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// File holding the web app's session secret (a Docker/Kubernetes
    /// secret). Default: `session.secret` in the data directory, generated.
    pub session_secret_file: Option<PathBuf>,
    /// The session secret itself, from `OTELHOUSE_SESSION_SECRET` only.
    #[serde(skip)]
    pub session_secret: Option<Redacted>,
    /// Serve plaintext on a non-loopback address because a TLS proxy
    /// terminates in front of otelhouse.
    pub allow_plaintext_behind_proxy: bool,
    /// Start on a public address with a weak or readable session secret.
    pub allow_weak_session_secret: bool,
    /// Start on a public address while an admin has a default or weak password.
    pub allow_weak_admin_password: bool,
}

/// A secret value: `Debug` and `Serialize` never show it.
#[derive(Clone, PartialEq)]
pub struct Redacted(pub String);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How long each signal is kept. Records older than this are refused at
/// ingestion (reported through OTLP partial success).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Retention {
    #[serde(with = "human_duration")]
    pub logs: Duration,
    #[serde(with = "human_duration")]
    pub traces: Duration,
    #[serde(with = "human_duration")]
    pub metrics: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Flush a table's in-memory tail to a Parquet part after this long...
    #[serde(with = "human_duration")]
    pub flush_interval: Duration,
    /// ...or once it holds this many rows...
    pub flush_rows: usize,
    /// ...or this many bytes of memory.
    pub flush_bytes: usize,
    /// In-memory tail budget (all tables), the write buffer; beyond it
    /// ingestion answers 503. Default: 1/8 of RAM, at most 1 GiB.
    pub max_memory_bytes: usize,
    /// Memory all running queries may use together; a query that needs
    /// more fails with a clear error. Default: 1/4 of RAM, at most 2 GiB.
    pub max_query_memory_bytes: usize,
    /// Resident memory (RSS) of the whole server; above 90 % of it ingestion
    /// answers 503 and merges wait. None: write buffer + query memory, at
    /// least 256 MiB.
    pub max_resident_bytes: Option<u64>,
    /// Disk budget for parts; beyond it the oldest hour partitions are
    /// dropped before their retention (logged and counted). None: no budget.
    pub max_disk_bytes: Option<u64>,
    /// WAL disk budget; beyond it ingestion answers 503.
    pub max_wal_bytes: u64,
    /// Bytes waiting for the WAL writer; beyond it ingestion answers 503.
    pub max_queue_bytes: usize,
    /// Requests decoded at once (HTTP and gRPC together); more answer 503.
    pub max_inflight_requests: usize,
    #[serde(with = "human_duration")]
    pub query_timeout: Duration,
    /// Widest time range one query may cover.
    #[serde(with = "human_duration")]
    pub max_query_range: Duration,
    /// How often retention, the disk budget and compaction run.
    #[serde(with = "human_duration")]
    pub maintenance_interval: Duration,
}

impl StorageConfig {
    /// The resident memory budget the server enforces.
    pub fn resident_budget(&self) -> u64 {
        self.max_resident_bytes.unwrap_or_else(|| {
            (self
                .max_memory_bytes
                .saturating_add(self.max_query_memory_bytes) as u64)
                .max(crate::memory::MIN_DEFAULT_BUDGET)
        })
    }
}

const DAY: Duration = Duration::from_secs(86_400);

impl Default for Retention {
    fn default() -> Self {
        Retention {
            logs: 3 * DAY,
            traces: 3 * DAY,
            metrics: 3 * DAY,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            flush_interval: Duration::from_secs(30),
            flush_rows: 500_000,
            flush_bytes: 128 << 20,
            max_memory_bytes: share_of_memory(8, 1 << 30),
            max_query_memory_bytes: share_of_memory(4, 2 << 30),
            max_resident_bytes: None,
            max_disk_bytes: None,
            max_wal_bytes: 4 << 30,
            max_queue_bytes: 64 << 20,
            max_inflight_requests: 64,
            query_timeout: Duration::from_secs(30),
            max_query_range: 31 * DAY,
            maintenance_interval: Duration::from_secs(5),
        }
    }
}

/// `1/divisor` of the machine's memory, at most `cap` (the cap alone when
/// the memory size is unknown).
fn share_of_memory(divisor: u64, cap: usize) -> usize {
    total_memory().map_or(cap, |m| ((m / divisor) as usize).min(cap))
}

/// Total RAM from /proc/meminfo (Linux; containers see their host's RAM
/// here, so the cap above keeps the default modest).
pub fn total_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Parses a byte size: `1048576`, `512MiB`, `50GB`, `2TiB` (KB/MB/GB/TB are
/// powers of 1000, KiB/MiB/GiB/TiB of 1024).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size such as 50GB or 512MiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1_000,
        "mb" | "m" => 1_000_000,
        "gb" | "g" => 1_000_000_000,
        "tb" | "t" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        other => {
            return Err(format!(
                "`{s}`: unknown unit `{other}` (use KB, MB, GB, TB or KiB, MiB, GiB, TiB)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            data_dir: PathBuf::from("./otelhouse-data"),
            otlp_grpc_addr: "127.0.0.1:4317".into(),
            otlp_http_addr: "127.0.0.1:4318".into(),
            http_addr: "127.0.0.1:8080".into(),
            retention: Retention::default(),
            limits: Limits::default(),
            storage: StorageConfig::default(),
            tls: TlsConfig::default(),
            security: SecurityConfig::default(),
            clickhouse: ClickHouseConfig::default(),
        }
    }
}

impl ServeConfig {
    /// Parses a TOML config file's text; errors name the offending key.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// The effective configuration as TOML, for `serve --print-config`.
    /// Secrets are not part of it; where one comes from is noted instead.
    pub fn to_toml(&self) -> String {
        let mut out = toml::to_string(self).unwrap_or_else(|e| format!("# cannot print: {e}\n"));
        if self.security.session_secret.is_some() {
            out.push_str(
                "\n# security.session_secret = <redacted> (from OTELHOUSE_SESSION_SECRET)\n",
            );
        }
        let ch = &self.clickhouse;
        for (set, name) in [
            (ch.ingest_password.is_some(), "ingest_password"),
            (ch.query_password.is_some(), "query_password"),
        ] {
            if set {
                out.push_str(&format!(
                    "# clickhouse.{name} = <redacted> (from OTELHOUSE_CLICKHOUSE_{})\n",
                    name.to_ascii_uppercase()
                ));
            }
        }
        out
    }
}

/// A secret kept in a file (a password, a passphrase): its text without
/// the line ending editors and `echo` leave after it.
pub fn read_secret_file(path: &std::path::Path) -> std::io::Result<String> {
    std::fs::read_to_string(path).map(|s| s.trim_end_matches(['\n', '\r']).to_string())
}

/// Durations as people write them: `30s`, `72h`, `7d`.
pub mod human_duration {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {text:?}: {e} (e.g. 30s, 72h, 7d)"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_overrides_defaults_and_rejects_unknown_keys() {
        let c = ServeConfig::from_toml(
            "data_dir = \"/d\"\n[retention]\nlogs = \"7d\"\n[limits]\nmax_records = 10\n",
        )
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/d"));
        assert_eq!(c.retention.logs, 7 * DAY);
        assert_eq!(c.retention.traces, 3 * DAY);
        assert_eq!(c.limits.max_records, 10);
        let err = ServeConfig::from_toml("data_dri = \"/d\"").unwrap_err();
        assert!(err.contains("data_dri"), "{err}");
        assert!(c.storage.max_memory_bytes <= 1 << 30);
        let err = ServeConfig::from_toml("[retention]\nlogs = \"soon\"").unwrap_err();
        assert!(err.contains("invalid duration"), "{err}");
    }

    #[test]
    fn printed_config_reads_back_and_hides_the_session_secret() {
        let mut c = ServeConfig::default();
        c.tls.cert = Some("/etc/otelhouse/server.crt".into());
        c.tls.min = otelhouse_tls::TlsMin::Tls13;
        c.security.session_secret = Some(Redacted("s3cr3t-value-xyz".into()));
        c.clickhouse.url = Some("https://ch.example:8443".into());
        c.clickhouse.ingest_password = Some(Redacted("ch-ingest-pw-123".into()));
        c.clickhouse.query_password_file = Some("/run/secrets/query".into());
        let text = c.to_toml();
        assert!(!text.contains("s3cr3t-value-xyz"), "{text}");
        assert!(!text.contains("ch-ingest-pw-123"), "{text}");
        assert!(!format!("{c:?}").contains("ch-ingest-pw-123"));
        assert!(
            text.contains("# clickhouse.ingest_password = <redacted>"),
            "{text}"
        );
        assert!(!format!("{c:?}").contains("s3cr3t-value-xyz"));
        assert!(text.contains("min = \"1.3\""), "{text}");
        let back = ServeConfig::from_toml(&text).unwrap();
        assert_eq!(back.tls, c.tls);
        assert_eq!(back.clickhouse.url, c.clickhouse.url);
        assert_eq!(
            back.clickhouse.query_password_file,
            c.clickhouse.query_password_file
        );
        let err = ServeConfig::from_toml("[clickhouse]\ningest_password = \"x\"").unwrap_err();
        assert!(err.contains("ingest_password"), "{err}");
        let err = ServeConfig::from_toml("[security]\nsession_secret = \"x\"").unwrap_err();
        assert!(err.contains("session_secret"), "{err}");
    }

    #[test]
    fn sizes_parse_with_units_and_bad_ones_are_named() {
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("50GB"), Ok(50_000_000_000));
        assert_eq!(parse_bytes("2 TiB"), Ok(2 << 40));
        assert!(parse_bytes("lots").unwrap_err().contains("not a size"));
        assert!(parse_bytes("5XB").unwrap_err().contains("unknown unit"));
        assert!(
            parse_bytes("99999999999TB")
                .unwrap_err()
                .contains("too large")
        );
    }
}
