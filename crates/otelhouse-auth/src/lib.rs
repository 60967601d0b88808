//! Credentials: the admin account, ingestion keys (OTLP) and API tokens.
//!
//! Stored in SQLite (`<data-dir>/otelhouse.db`, mode 0600) so the CLI can
//! manage them while the server runs. Keys and tokens are 256-bit random
//! secrets shown once and stored only as SHA-256 hashes (a slow hash buys
//! nothing against 256 bits of entropy); passwords use Argon2id. The server
//! checks presented secrets against an in-memory [`KeyCache`] refreshed from
//! the database every second, so a revoked key stops working within a
//! second, without a restart.

pub mod session_secret;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Argon2, PasswordHash, PasswordVerifier};
use base64::Engine as _;
use parking_lot::RwLock;
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use subtle::ConstantTimeEq;

pub const ADMIN_EMAIL: &str = "admin@otelhouse.local";

/// What kind of secret: ingestion keys authorise OTLP writes, API tokens
/// authorise reads through /api/v1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    IngestionKey,
    ApiToken,
}

impl SecretKind {
    fn table(self) -> &'static str {
        match self {
            SecretKind::IngestionKey => "ingestion_keys",
            SecretKind::ApiToken => "api_tokens",
        }
    }
    fn prefix(self) -> &'static str {
        match self {
            SecretKind::IngestionKey => "ohk_",
            SecretKind::ApiToken => "oht_",
        }
    }
    pub fn noun(self) -> &'static str {
        match self {
            SecretKind::IngestionKey => "ingestion key",
            SecretKind::ApiToken => "API token",
        }
    }
}

/// The credentials printed once when an instance is initialised.
#[derive(Debug, Clone, Serialize)]
pub struct InitialCredentials {
    pub admin_email: String,
    pub admin_password: String,
    pub ingestion_key: String,
    pub api_token: String,
}

/// A key or token as listed (never its secret).
#[derive(Debug, Clone, Serialize)]
pub struct SecretInfo {
    pub id: String,
    pub name: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the data directory {0} is already initialised")]
    AlreadyInitialised(PathBuf),
    #[error("no {noun} with id {id}", noun = .0.noun(), id = .1)]
    NotFound(SecretKind, String),
    #[error("credential store: {0}")]
    Db(#[from] sqlx::Error),
    #[error("no user {0}")]
    NoUser(String),
    #[error("password refused: {0}")]
    WeakPassword(String),
    #[error("password hashing: {0}")]
    Hash(String),
}

/// Default and most common passwords (vendor defaults, top of breach
/// lists): an admin with one of these is refused on a public interface.
const KNOWN_WEAK_PASSWORDS: &[&str] = &[
    "",
    "admin",
    "password",
    "changeme",
    "otelhouse",
    "hyperdx",
    "123456",
    "12345678",
    "qwerty",
    "letmein",
    "admin123",
    "password1",
];

/// The password policy (APP-1): at least 12 characters, not a known weak
/// password, not the email or its local part.
pub fn password_policy(email: &str, password: &str) -> Result<(), String> {
    let lower = password.to_lowercase();
    if password.chars().count() < 12 {
        return Err("a password needs at least 12 characters".into());
    }
    if KNOWN_WEAK_PASSWORDS.contains(&lower.as_str()) {
        return Err("that password is on the list of common passwords".into());
    }
    let local = email.split('@').next().unwrap_or_default().to_lowercase();
    if lower == email.to_lowercase() || (!local.is_empty() && lower.contains(&local)) {
        return Err("a password must not contain the account's name".into());
    }
    if password
        .chars()
        .collect::<std::collections::HashSet<_>>()
        .len()
        < 6
    {
        return Err("a password needs more variety (at least 6 different characters)".into());
    }
    Ok(())
}

fn hash_password(password: &str) -> Result<String, AuthError> {
    let salt = SaltString::encode_b64(&random_bytes::<16>())
        .map_err(|e| AuthError::Hash(e.to_string()))?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| AuthError::Hash(e.to_string()))?
        .to_string())
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rng().fill_bytes(&mut b);
    b
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn sha256(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The credential database of one data directory.
#[derive(Clone)]
pub struct Credentials {
    pool: SqlitePool,
    dir: PathBuf,
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS instance (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL, role TEXT NOT NULL, created_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS ingestion_keys (id TEXT PRIMARY KEY, name TEXT NOT NULL, secret_hash BLOB NOT NULL, created_at TEXT NOT NULL, revoked_at TEXT)",
    "CREATE TABLE IF NOT EXISTS api_tokens (id TEXT PRIMARY KEY, name TEXT NOT NULL, secret_hash BLOB NOT NULL, created_at TEXT NOT NULL, revoked_at TEXT)",
];

impl Credentials {
    /// Opens (creating if needed) the credential database in `data_dir`.
    pub async fn open(data_dir: &Path) -> Result<Self, AuthError> {
        create_private_dir(data_dir).map_err(|e| AuthError::Db(sqlx::Error::Io(e)))?;
        let path = data_dir.join("otelhouse.db");
        let opts = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        restrict_file(&path);
        for stmt in SCHEMA {
            sqlx::query(stmt).execute(&pool).await?;
        }
        Ok(Credentials {
            pool,
            dir: data_dir.to_owned(),
        })
    }

    pub async fn is_initialised(&self) -> Result<bool, AuthError> {
        Ok(
            sqlx::query("SELECT 1 FROM instance WHERE key = 'initialised_at'")
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    /// Creates the admin account, a first ingestion key and a first API
    /// token. Refuses an instance that is already initialised.
    pub async fn initialise(&self) -> Result<InitialCredentials, AuthError> {
        let mut tx = self.pool.begin().await?;
        let inserted =
            sqlx::query("INSERT OR IGNORE INTO instance (key, value) VALUES ('initialised_at', ?)")
                .bind(now())
                .execute(&mut *tx)
                .await?;
        if inserted.rows_affected() == 0 {
            return Err(AuthError::AlreadyInitialised(self.dir.clone()));
        }
        let admin_password = b64(&random_bytes::<18>());
        let hash = hash_password(&admin_password)?;
        sqlx::query(
            "INSERT INTO users (email, password_hash, role, created_at) VALUES (?, ?, 'admin', ?)",
        )
        .bind(ADMIN_EMAIL)
        .bind(hash)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        let (_, ingestion_key) =
            insert_secret(&mut tx, SecretKind::IngestionKey, "default").await?;
        let (_, api_token) = insert_secret(&mut tx, SecretKind::ApiToken, "default").await?;
        tx.commit().await?;
        session_secret::ensure_generated(&self.dir)
            .map_err(|e| AuthError::Db(sqlx::Error::Io(e)))?;
        Ok(InitialCredentials {
            admin_email: ADMIN_EMAIL.into(),
            admin_password,
            ingestion_key,
            api_token,
        })
    }

    /// Creates a key or token; returns (id, secret). The secret is not stored.
    pub async fn create(
        &self,
        kind: SecretKind,
        name: &str,
    ) -> Result<(String, String), AuthError> {
        let mut conn = self.pool.acquire().await?;
        insert_secret(&mut conn, kind, name).await
    }

    pub async fn list(&self, kind: SecretKind) -> Result<Vec<SecretInfo>, AuthError> {
        let sql = format!(
            "SELECT id, name, created_at, revoked_at FROM {} ORDER BY created_at, id",
            kind.table()
        );
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(|r| SecretInfo {
                id: r.get(0),
                name: r.get(1),
                created_at: r.get(2),
                revoked_at: r.get(3),
            })
            .collect())
    }

    pub async fn revoke(&self, kind: SecretKind, id: &str) -> Result<(), AuthError> {
        let sql = format!(
            "UPDATE {} SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?",
            kind.table()
        );
        let done = sqlx::query(&sql)
            .bind(now())
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(AuthError::NotFound(kind, id.into()));
        }
        Ok(())
    }

    /// Hashes of the secrets that are not revoked, with their ids.
    async fn active_hashes(&self, kind: SecretKind) -> Result<Vec<(String, [u8; 32])>, AuthError> {
        let sql = format!(
            "SELECT id, secret_hash FROM {} WHERE revoked_at IS NULL",
            kind.table()
        );
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                let hash: Vec<u8> = r.get(1);
                Some((r.get(0), hash.try_into().ok()?))
            })
            .collect())
    }

    /// Checks a user's password (Argon2id).
    pub async fn verify_password(&self, email: &str, password: &str) -> Result<bool, AuthError> {
        let row = sqlx::query("SELECT password_hash FROM users WHERE email = ?")
            .bind(email)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(false) };
        let stored: String = row.get(0);
        let parsed = PasswordHash::new(&stored).map_err(|e| AuthError::Hash(e.to_string()))?;
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    }

    /// Sets a user's password after checking it against the policy.
    pub async fn set_password(&self, email: &str, password: &str) -> Result<(), AuthError> {
        password_policy(email, password).map_err(AuthError::WeakPassword)?;
        self.set_password_unchecked(email, password).await
    }

    /// Sets a password without the policy check: for tests that need a
    /// weak password on record (as an older release might have left one).
    #[doc(hidden)]
    pub async fn set_password_unchecked(
        &self,
        email: &str,
        password: &str,
    ) -> Result<(), AuthError> {
        let hash = hash_password(password)?;
        let done = sqlx::query("UPDATE users SET password_hash = ? WHERE email = ?")
            .bind(hash)
            .bind(email)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(AuthError::NoUser(email.to_string()));
        }
        Ok(())
    }

    /// Admins whose password is a known default or derived from their
    /// email (checked by hashing each candidate: the stored hashes cannot
    /// be read back).
    pub async fn admins_with_weak_passwords(&self) -> Result<Vec<String>, AuthError> {
        let rows = sqlx::query("SELECT email, password_hash FROM users WHERE role = 'admin'")
            .fetch_all(&self.pool)
            .await?;
        let mut weak = Vec::new();
        for row in rows {
            let (email, stored): (String, String) = (row.get(0), row.get(1));
            let parsed = PasswordHash::new(&stored).map_err(|e| AuthError::Hash(e.to_string()))?;
            let local = email.split('@').next().unwrap_or_default().to_string();
            let candidates = KNOWN_WEAK_PASSWORDS
                .iter()
                .map(|s| s.to_string())
                .chain([email.clone(), local]);
            for c in candidates {
                if Argon2::default()
                    .verify_password(c.as_bytes(), &parsed)
                    .is_ok()
                {
                    weak.push(email.clone());
                    break;
                }
            }
        }
        Ok(weak)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

async fn insert_secret(
    conn: &mut sqlx::SqliteConnection,
    kind: SecretKind,
    name: &str,
) -> Result<(String, String), AuthError> {
    let id = hex::encode(random_bytes::<6>());
    let secret = format!("{}{}", kind.prefix(), b64(&random_bytes::<32>()));
    let sql = format!(
        "INSERT INTO {} (id, name, secret_hash, created_at) VALUES (?, ?, ?, ?)",
        kind.table()
    );
    sqlx::query(&sql)
        .bind(&id)
        .bind(name)
        .bind(&sha256(&secret)[..])
        .bind(now())
        .execute(conn)
        .await?;
    Ok((id, secret))
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

fn restrict_file(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        tracing::warn!(path = %path.display(), error = %e, "could not restrict the credential database to its owner");
    }
}

/// Active key and token hashes held in memory for the request path.
#[derive(Default)]
struct Cached {
    keys: Vec<(String, [u8; 32])>,
    tokens: Vec<(String, [u8; 32])>,
}

/// What the server checks presented secrets against; see the crate docs.
#[derive(Clone)]
pub struct KeyCache {
    creds: Credentials,
    cached: Arc<RwLock<Cached>>,
}

impl KeyCache {
    pub async fn load(creds: Credentials) -> Result<Self, AuthError> {
        let cache = KeyCache {
            creds,
            cached: Arc::default(),
        };
        cache.refresh().await?;
        Ok(cache)
    }

    pub async fn refresh(&self) -> Result<(), AuthError> {
        let keys = self.creds.active_hashes(SecretKind::IngestionKey).await?;
        let tokens = self.creds.active_hashes(SecretKind::ApiToken).await?;
        *self.cached.write() = Cached { keys, tokens };
        Ok(())
    }

    /// Refreshes every `period` until the returned task is dropped/aborted.
    pub fn spawn_refresh(&self, period: Duration) -> tokio::task::JoinHandle<()> {
        let cache = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                if let Err(e) = cache.refresh().await {
                    tracing::warn!(error = %e, "could not refresh ingestion keys and API tokens");
                }
            }
        })
    }

    /// The id of the active secret equal to `presented`, if any. The hash of
    /// the presented value is compared with every active hash in constant
    /// time, without stopping at the first match.
    pub fn check(&self, kind: SecretKind, presented: &str) -> Option<String> {
        let digest = sha256(presented);
        let cached = self.cached.read();
        let list = match kind {
            SecretKind::IngestionKey => &cached.keys,
            SecretKind::ApiToken => &cached.tokens,
        };
        let mut found = None;
        for (id, hash) in list {
            if bool::from(hash.ct_eq(&digest)) {
                found = Some(id.clone());
            }
        }
        found
    }
}

/// Extracts the secret from an `authorization` header value: ClickStack's
/// bare `<key>` form or `Bearer <key>`.
pub fn secret_from_header(value: &str) -> &str {
    let v = value.trim();
    match v.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn password_policy_and_weak_admins() {
        let dir = tempfile::tempdir().unwrap();
        let creds = Credentials::open(dir.path()).await.unwrap();
        creds.initialise().await.unwrap();
        assert!(dir.path().join(session_secret::FILE_NAME).exists());
        assert!(creds.admins_with_weak_passwords().await.unwrap().is_empty());
        for weak in ["short", "password1", "admin-is-me-123", "aaaaaaaaaaaaaaaa"] {
            let e = creds.set_password(ADMIN_EMAIL, weak).await.unwrap_err();
            assert!(matches!(e, AuthError::WeakPassword(_)), "{weak}: {e}");
        }
        creds
            .set_password(ADMIN_EMAIL, "vivid-otter-42-harbour")
            .await
            .unwrap();
        assert!(
            creds
                .verify_password(ADMIN_EMAIL, "vivid-otter-42-harbour")
                .await
                .unwrap()
        );
        assert!(matches!(
            creds
                .set_password("nobody@x", "vivid-otter-42-harbour")
                .await,
            Err(AuthError::NoUser(_))
        ));
        creds
            .set_password_unchecked(ADMIN_EMAIL, "changeme")
            .await
            .unwrap();
        assert_eq!(
            creds.admins_with_weak_passwords().await.unwrap(),
            vec![ADMIN_EMAIL]
        );
        creds
            .set_password_unchecked(ADMIN_EMAIL, "admin")
            .await
            .unwrap();
        assert_eq!(
            creds.admins_with_weak_passwords().await.unwrap(),
            vec![ADMIN_EMAIL]
        );
    }

    #[tokio::test]
    async fn init_create_check_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let creds = Credentials::open(dir.path()).await.unwrap();
        assert!(!creds.is_initialised().await.unwrap());
        let init = creds.initialise().await.unwrap();
        assert!(matches!(
            creds.initialise().await,
            Err(AuthError::AlreadyInitialised(_))
        ));
        assert!(
            creds
                .verify_password(ADMIN_EMAIL, &init.admin_password)
                .await
                .unwrap()
        );
        assert!(!creds.verify_password(ADMIN_EMAIL, "wrong").await.unwrap());
        // 256-bit secrets: 43 base64url characters after the prefix.
        assert_eq!(init.ingestion_key.len(), 4 + 43);
        let cache = KeyCache::load(creds.clone()).await.unwrap();
        assert!(
            cache
                .check(SecretKind::IngestionKey, &init.ingestion_key)
                .is_some()
        );
        assert!(
            cache
                .check(SecretKind::ApiToken, &init.ingestion_key)
                .is_none()
        );
        assert!(cache.check(SecretKind::ApiToken, &init.api_token).is_some());
        let (id, key) = creds.create(SecretKind::IngestionKey, "ci").await.unwrap();
        cache.refresh().await.unwrap();
        assert_eq!(
            cache.check(SecretKind::IngestionKey, &key),
            Some(id.clone())
        );
        creds.revoke(SecretKind::IngestionKey, &id).await.unwrap();
        cache.refresh().await.unwrap();
        assert!(cache.check(SecretKind::IngestionKey, &key).is_none());
        assert!(matches!(
            creds.revoke(SecretKind::ApiToken, "nope").await,
            Err(AuthError::NotFound(..))
        ));
        let listed = creds.list(SecretKind::IngestionKey).await.unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed.iter().any(|k| k.id == id && k.revoked_at.is_some()));
        // Secrets are not stored anywhere in the database file.
        let db = std::fs::read(dir.path().join("otelhouse.db")).unwrap();
        let hay = String::from_utf8_lossy(&db);
        assert!(!hay.contains(&init.ingestion_key[4..]));
    }

    #[test]
    fn header_forms() {
        assert_eq!(secret_from_header("ohk_abc"), "ohk_abc");
        assert_eq!(secret_from_header("Bearer ohk_abc"), "ohk_abc");
        assert_eq!(secret_from_header("bearer  ohk_abc "), "ohk_abc");
    }
}
