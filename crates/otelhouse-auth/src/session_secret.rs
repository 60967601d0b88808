//! The session secret the web app signs its sessions with (SEC-1). It comes
//! from `OTELHOUSE_SESSION_SECRET`, a file (`OTELHOUSE_SESSION_SECRET_FILE`,
//! e.g. a Docker or Kubernetes secret), or, when neither is given,
//! `session.secret` in the data directory: 32 random bytes, hex, 0600,
//! created at init.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::random_bytes;

pub const FILE_NAME: &str = "session.secret";

/// Secrets that ship in documentation or defaults and so are known to
/// everyone; HyperDX's default `EXPRESS_SESSION_SECRET` first.
const KNOWN_DEFAULTS: &[&str] = &[
    "hyperdx is cool 👋",
    "hyperdx is cool",
    "keyboard cat",
    "changeme",
    "change-me",
    "secret",
    "your-secret",
    "your-secret-key",
    "supersecret",
    "otelhouse",
    "session-secret",
];

/// Where the secret came from, for messages (never the value).
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Environment,
    File(PathBuf),
    DataDir(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Environment => write!(f, "OTELHOUSE_SESSION_SECRET"),
            Source::File(p) => write!(f, "OTELHOUSE_SESSION_SECRET_FILE ({})", p.display()),
            Source::DataDir(p) => write!(f, "{} (generated)", p.display()),
        }
    }
}

pub struct SessionSecret {
    value: Vec<u8>,
    pub source: Source,
}

impl std::fmt::Debug for SessionSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionSecret(<redacted>, from {})", self.source)
    }
}

impl SessionSecret {
    pub fn expose(&self) -> &[u8] {
        &self.value
    }

    /// Loads the secret: the environment value, else the file, else the
    /// data directory's generated one (created if missing).
    pub fn load(
        data_dir: &Path,
        env_value: Option<String>,
        file: Option<&Path>,
    ) -> Result<Self, String> {
        if let Some(v) = env_value {
            return Ok(SessionSecret {
                value: v.trim_end_matches(['\r', '\n']).as_bytes().to_vec(),
                source: Source::Environment,
            });
        }
        if let Some(path) = file {
            let bytes = std::fs::read(path)
                .map_err(|e| format!("OTELHOUSE_SESSION_SECRET_FILE {}: {e}", path.display()))?;
            return Ok(SessionSecret {
                value: trim_newline(bytes),
                source: Source::File(path.to_owned()),
            });
        }
        let path = ensure_generated(data_dir)
            .map_err(|e| format!("creating {}: {e}", data_dir.join(FILE_NAME).display()))?;
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(SessionSecret {
            value: trim_newline(bytes),
            source: Source::DataDir(path),
        })
    }

    /// Why the secret is not fit for production, if it is not: too short,
    /// a known default, too little variety to be random, or a file any
    /// user can read.
    pub fn weaknesses(&self) -> Vec<String> {
        let mut out = Vec::new();
        let text = String::from_utf8_lossy(&self.value);
        let bytes = random_bytes_in(&text).unwrap_or(self.value.len());
        if KNOWN_DEFAULTS
            .iter()
            .any(|d| d.eq_ignore_ascii_case(text.trim()))
        {
            out.push("it is a publicly known default".to_string());
        } else if bytes < 32 {
            out.push(format!(
                "it holds {bytes} bytes; at least 32 random bytes are needed (e.g. `openssl rand -hex 32`)"
            ));
        } else if distinct(&self.value) < 12 {
            out.push("it does not look random (too few distinct characters)".to_string());
        }
        if let Source::File(p) | Source::DataDir(p) = &self.source
            && let Ok(meta) = std::fs::metadata(p)
            // Group read is allowed: Kubernetes mounts secrets for the pod's
            // fsGroup (mode 0440); everyone else must not read it.
            && meta.permissions().mode() & 0o007 != 0
        {
            out.push(format!(
                "{} is readable by other users (mode {:o}); `chmod 600` it",
                p.display(),
                meta.permissions().mode() & 0o777
            ));
        }
        out
    }
}

fn trim_newline(mut v: Vec<u8>) -> Vec<u8> {
    while v.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        v.pop();
    }
    v
}

/// Hex or base64 text carries fewer random bytes than characters.
fn random_bytes_in(text: &str) -> Option<usize> {
    let t = text.trim();
    if !t.is_empty() && t.len().is_multiple_of(2) && t.chars().all(|c| c.is_ascii_hexdigit()) {
        return Some(t.len() / 2);
    }
    let b64 = |c: char| c.is_ascii_alphanumeric() || "+/-_=".contains(c);
    if t.chars().all(b64) {
        return Some(t.trim_end_matches('=').len() * 3 / 4);
    }
    None
}

fn distinct(v: &[u8]) -> usize {
    let mut seen = [false; 256];
    v.iter().for_each(|b| seen[*b as usize] = true);
    seen.iter().filter(|s| **s).count()
}

/// Creates `session.secret` (32 random bytes, hex, 0600) unless it exists.
pub fn ensure_generated(data_dir: &Path) -> std::io::Result<PathBuf> {
    let path = data_dir.join(FILE_NAME);
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(mut f) => {
            f.write_all(hex::encode(random_bytes::<32>()).as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(v: &str) -> SessionSecret {
        SessionSecret {
            value: v.as_bytes().to_vec(),
            source: Source::Environment,
        }
    }

    #[test]
    fn strength() {
        assert!(
            secret(&hex::encode(
                [7u8; 8]
                    .iter()
                    .chain(&random_bytes::<32>())
                    .copied()
                    .collect::<Vec<_>>()
            ))
            .weaknesses()
            .is_empty()
        );
        assert!(secret("hyperdx is cool 👋").weaknesses()[0].contains("known default"));
        assert!(secret("keyboard cat").weaknesses()[0].contains("known default"));
        // 40 hex characters are only 20 bytes.
        assert!(secret(&hex::encode(random_bytes::<20>())).weaknesses()[0].contains("20 bytes"));
        assert!(secret(&"a".repeat(64)).weaknesses()[0].contains("random"));
    }

    #[test]
    fn generated_once_private_and_strong() {
        let dir = tempfile::tempdir().unwrap();
        let s = SessionSecret::load(dir.path(), None, None).unwrap();
        assert!(s.weaknesses().is_empty(), "{:?}", s.weaknesses());
        let again = SessionSecret::load(dir.path(), None, None).unwrap();
        assert_eq!(s.expose(), again.expose());
        assert_eq!(s.expose().len(), 64);
        let path = dir.path().join(FILE_NAME);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let w = SessionSecret::load(dir.path(), None, None)
            .unwrap()
            .weaknesses();
        assert!(w[0].contains("readable by other users"), "{w:?}");
        assert!(!format!("{s:?}").contains(std::str::from_utf8(s.expose()).unwrap()));
    }

    #[test]
    fn environment_then_file_then_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("mounted");
        std::fs::write(&f, "from-file\n").unwrap();
        let s = SessionSecret::load(dir.path(), Some("from-env".into()), Some(&f)).unwrap();
        assert_eq!(
            (s.expose(), &s.source),
            (&b"from-env"[..], &Source::Environment)
        );
        let s = SessionSecret::load(dir.path(), None, Some(&f)).unwrap();
        assert_eq!(s.expose(), b"from-file");
        let missing = SessionSecret::load(dir.path(), None, Some(&dir.path().join("nope")));
        assert!(
            missing
                .unwrap_err()
                .contains("OTELHOUSE_SESSION_SECRET_FILE")
        );
    }
}
