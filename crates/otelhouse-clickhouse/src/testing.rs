//! The real ClickHouse engine for tests: `tests/support/chdb_front.py`
//! (chdb-core behind ClickHouse's HTTP interface), started as a child
//! process with the repository's Python venv, stopped on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::client::{Client, Connection};

pub struct ChdbFront {
    child: Child,
    pub port: u16,
    pub data_dir: PathBuf,
    _dir: Option<tempfile::TempDir>,
    tls: bool,
}

/// The repository root (this crate is `crates/otelhouse-clickhouse`).
/// The checkout the tests run from: found from the working directory (cargo
/// runs a test in its package's directory), because a library built from
/// another checkout sharing the target directory keeps that checkout's
/// `CARGO_MANIFEST_DIR`.
pub fn repo_root() -> PathBuf {
    let marker = "tests/support/chdb_front.py";
    std::env::current_dir()
        .ok()
        .and_then(|cwd| {
            cwd.ancestors()
                .find(|d| d.join(marker).exists())
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

fn python() -> PathBuf {
    std::env::var_os("OTELHOUSE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/bin/python"))
}

impl ChdbFront {
    /// A front on a fresh data directory.
    pub fn start() -> ChdbFront {
        let dir = tempfile::tempdir().unwrap();
        let mut f = Self::start_on(dir.path());
        f._dir = Some(dir);
        f
    }

    /// A front on `data_dir` (restart one on the same directory to keep
    /// the tables).
    pub fn start_on(data_dir: &Path) -> ChdbFront {
        Self::start_on_port(data_dir, 0)
    }

    /// A front on `data_dir` and a given port (0: any): a restarted front
    /// on the old port is ClickHouse coming back after an outage.
    pub fn start_on_port(data_dir: &Path, port: u16) -> ChdbFront {
        Self::start_with(data_dir, port, &[])
    }

    /// A front speaking HTTPS with `cert`/`key`, requiring client
    /// certificates from `client_ca` when given.
    pub fn start_tls(cert: &Path, key: &Path, client_ca: Option<&Path>) -> ChdbFront {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec![
            "--tls-cert".into(),
            cert.as_os_str().to_owned(),
            "--tls-key".into(),
            key.as_os_str().to_owned(),
        ];
        if let Some(ca) = client_ca {
            args.extend(["--tls-client-ca".into(), ca.as_os_str().to_owned()]);
        }
        let mut f = Self::start_with(dir.path(), 0, &args);
        f._dir = Some(dir);
        f.tls = true;
        f
    }

    fn start_with(data_dir: &Path, port: u16, extra: &[std::ffi::OsString]) -> ChdbFront {
        let python = python();
        assert!(
            python.exists(),
            "{} is missing: run ./scripts/test.sh once (it creates the venv with chdb-core)",
            python.display()
        );
        let mut child = Command::new(&python)
            .arg(repo_root().join("tests/support/chdb_front.py"))
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--port", &port.to_string(), "--max-lifetime", "900"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start chdb_front.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("LISTENING ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("chdb_front.py did not start: {line:?}"));
        ChdbFront {
            child,
            port,
            data_dir: data_dir.to_path_buf(),
            _dir: None,
            tls: false,
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn client(&self, database: &str) -> Client {
        Client::new(Connection {
            url: self.url(),
            user: "default".into(),
            password: String::new(),
            database: database.into(),
            ca_file: None,
            client_cert: None,
            insecure_skip_verify: false,
            timeout: Duration::from_secs(60),
        })
        .unwrap()
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChdbFront {
    fn drop(&mut self) {
        self.stop();
    }
}
