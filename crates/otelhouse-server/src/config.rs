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
    /// In-memory tail budget (all tables); beyond it ingestion answers 503.
    pub max_memory_bytes: usize,
    /// WAL disk budget; beyond it ingestion answers 503.
    pub max_wal_bytes: u64,
    /// Bytes waiting for the WAL writer; beyond it ingestion answers 503.
    pub max_queue_bytes: usize,
    /// Requests decoded at once (HTTP and gRPC together); more answer 503.
    pub max_inflight_requests: usize,
    #[serde(with = "human_duration")]
    pub query_timeout: Duration,
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
            max_memory_bytes: 512 << 20,
            max_wal_bytes: 4 << 30,
            max_queue_bytes: 64 << 20,
            max_inflight_requests: 64,
            query_timeout: Duration::from_secs(30),
        }
    }
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
        }
    }
}

impl ServeConfig {
    /// Parses a TOML config file's text; errors name the offending key.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
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
        let err = ServeConfig::from_toml("[retention]\nlogs = \"soon\"").unwrap_err();
        assert!(err.contains("invalid duration"), "{err}");
    }
}
