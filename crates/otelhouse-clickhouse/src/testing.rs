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
}

/// The repository root (this crate is `crates/otelhouse-clickhouse`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
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
            .args(["--port", "0", "--max-lifetime", "900"])
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
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn client(&self, database: &str) -> Client {
        Client::new(Connection {
            url: self.url(),
            user: "default".into(),
            password: String::new(),
            database: database.into(),
            ca_file: None,
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
