//! `otelhouse clickhouse provision | verify`: least-privilege ClickHouse
//! users for otelhouse, and the proof that they hold; and the ClickHouse
//! flags `serve` shares with them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use otelhouse_clickhouse::provision::{self, Plan};
use otelhouse_clickhouse::{Client, Connection, ddl};
use otelhouse_schema::Table;
use otelhouse_server::config::{ClickHouseConfig, Redacted, read_secret_file};

/// The ClickHouse settings of `serve` and `clickhouse verify`.
#[derive(Args, Default)]
pub struct ClickHouseFlags {
    /// Store in ClickHouse instead of the embedded store, e.g. https://ch.example:8443
    /// (passwords: OTELHOUSE_CLICKHOUSE_INGEST_PASSWORD / _QUERY_PASSWORD or the *-password-file flags)
    #[arg(long, env = "OTELHOUSE_CLICKHOUSE_URL")]
    pub clickhouse_url: Option<String>,
    /// ClickHouse database of the signal tables [default: otel]
    #[arg(long, env = "OTELHOUSE_CLICKHOUSE_DATABASE")]
    pub clickhouse_database: Option<String>,
    /// ClickHouse user that creates tables and inserts [default: otelhouse_ingest]
    #[arg(long, env = "OTELHOUSE_CLICKHOUSE_INGEST_USER")]
    pub clickhouse_ingest_user: Option<String>,
    /// File holding the ingestion user's password
    #[arg(long, env = "OTELHOUSE_CLICKHOUSE_INGEST_PASSWORD_FILE")]
    pub clickhouse_ingest_password_file: Option<PathBuf>,
    /// Read-only ClickHouse user the API queries as [default: otelhouse_query]
    #[arg(long, env = "OTELHOUSE_CLICKHOUSE_QUERY_USER")]
    pub clickhouse_query_user: Option<String>,
    /// File holding the query user's password
    #[arg(long, env = "OTELHOUSE_CLICKHOUSE_QUERY_PASSWORD_FILE")]
    pub clickhouse_query_password_file: Option<PathBuf>,
    /// CA certificate (PEM) of ClickHouse's TLS certificate [default: the system's roots]
    #[arg(long, env = "OTELHOUSE_CLICKHOUSE_CA")]
    pub clickhouse_ca: Option<PathBuf>,
    /// Client certificate (PEM) otelhouse presents to ClickHouse (mTLS)
    #[arg(long, env = "OTELHOUSE_CLICKHOUSE_CLIENT_CERT")]
    pub clickhouse_client_cert: Option<PathBuf>,
    /// Private key (PEM) of --clickhouse-client-cert
    #[arg(long, env = "OTELHOUSE_CLICKHOUSE_CLIENT_KEY")]
    pub clickhouse_client_key: Option<PathBuf>,
    /// Do not verify ClickHouse's certificate: FOR TESTS ONLY (logged at every start)
    #[arg(long, env = "OTELHOUSE_CLICKHOUSE_INSECURE_SKIP_VERIFY")]
    pub clickhouse_insecure_skip_verify: bool,
    /// ClickHouse cluster: ReplicatedMergeTree `*_local` tables ON CLUSTER plus Distributed tables
    #[arg(long, env = "OTELHOUSE_CLICKHOUSE_CLUSTER")]
    pub clickhouse_cluster: Option<String>,
    /// Longest a record waits before it is inserted into ClickHouse [default: 1s]
    #[arg(long, env = "OTELHOUSE_CLICKHOUSE_MAX_BATCH_DELAY", value_parser = humantime::parse_duration)]
    pub clickhouse_max_batch_delay: Option<std::time::Duration>,
}

impl ClickHouseFlags {
    /// Flags (and their variables) over `c`; passwords only from the
    /// environment or files, never a flag (flags show up in `ps`).
    pub fn apply(self, c: &mut ClickHouseConfig) {
        use crate::set;
        set(&mut c.url, self.clickhouse_url.map(Some));
        set(&mut c.database, self.clickhouse_database);
        set(&mut c.ingest_user, self.clickhouse_ingest_user);
        set(
            &mut c.ingest_password_file,
            self.clickhouse_ingest_password_file.map(Some),
        );
        set(&mut c.query_user, self.clickhouse_query_user);
        set(
            &mut c.query_password_file,
            self.clickhouse_query_password_file.map(Some),
        );
        set(&mut c.ca, self.clickhouse_ca.map(Some));
        set(&mut c.client_cert, self.clickhouse_client_cert.map(Some));
        set(&mut c.client_key, self.clickhouse_client_key.map(Some));
        set(&mut c.cluster, self.clickhouse_cluster.map(Some));
        set(&mut c.max_batch_delay, self.clickhouse_max_batch_delay);
        c.insecure_skip_verify |= self.clickhouse_insecure_skip_verify;
        let secret = |name: &str| std::env::var(name).ok().map(Redacted);
        if let Some(p) = secret("OTELHOUSE_CLICKHOUSE_INGEST_PASSWORD") {
            c.ingest_password = Some(p);
        }
        if let Some(p) = secret("OTELHOUSE_CLICKHOUSE_QUERY_PASSWORD") {
            c.query_password = Some(p);
        }
    }
}

#[derive(Args)]
pub struct ClickHouseArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand)]
enum Action {
    /// Create the database, the tables, a read-only settings profile, a reader role with a
    /// quota, the query user and the ingestion user (SELECT, INSERT, CREATE TABLE, CREATE VIEW
    /// only). Idempotent. Passwords are generated into 0600 files (kept on later runs).
    Provision(Box<ProvisionArgs>),
    /// Log in as each user and prove its privileges: the query user reads with the app's
    /// settings and can do nothing else; the ingestion user inserts and reads nothing else.
    Verify(Box<VerifyArgs>),
}

#[derive(Args)]
struct ProvisionArgs {
    /// ClickHouse URL to provision through, as an administrator (e.g. https://ch:8443)
    #[arg(long, env = "OTELHOUSE_CLICKHOUSE_ADMIN_URL")]
    admin_url: String,
    /// Administrator (needs ACCESS MANAGEMENT and CREATE on the database)
    #[arg(
        long,
        env = "OTELHOUSE_CLICKHOUSE_ADMIN_USER",
        default_value = "default"
    )]
    admin_user: String,
    /// File holding the administrator's password (or OTELHOUSE_CLICKHOUSE_ADMIN_PASSWORD)
    #[arg(long, env = "OTELHOUSE_CLICKHOUSE_ADMIN_PASSWORD_FILE")]
    admin_password_file: Option<PathBuf>,
    #[arg(long, default_value = "otel")]
    database: String,
    #[arg(long, default_value = "otelhouse_ingest")]
    ingest_user: String,
    #[arg(long, default_value = "otelhouse_query")]
    query_user: String,
    /// Users may connect only from these addresses (HOST IP), e.g. 10.0.0.0/8; repeatable
    #[arg(long)]
    allow_from: Vec<String>,
    /// ON CLUSTER: ReplicatedMergeTree `*_local` tables and Distributed tables, users on every node
    #[arg(long)]
    cluster: Option<String>,
    /// Where the generated passwords go: ingest.password and query.password (0600)
    #[arg(long, default_value = "./clickhouse-secrets")]
    secrets_dir: PathBuf,
    /// Print the statements instead of running them (passwords appear only as salted hashes)
    #[arg(long)]
    print_sql: bool,
    /// Server version for the table DDL with --print-sql when ClickHouse cannot be reached, e.g. 26.9
    #[arg(long)]
    server_version: Option<String>,
    /// Retention of the tables created, e.g. 7d (otelhouse changes it later when it may)
    #[arg(long, default_value = "3d", value_parser = humantime::parse_duration)]
    retention_logs: Duration,
    #[arg(long, default_value = "3d", value_parser = humantime::parse_duration)]
    retention_traces: Duration,
    #[arg(long, default_value = "3d", value_parser = humantime::parse_duration)]
    retention_metrics: Duration,
    /// CA of ClickHouse's certificate [default: the system's roots]
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Do not verify ClickHouse's certificate: FOR TESTS ONLY
    #[arg(long)]
    insecure_skip_verify: bool,
}

#[derive(Args)]
struct VerifyArgs {
    /// TOML config file of `serve` (its [clickhouse] section); flags override it
    #[arg(long, env = "OTELHOUSE_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    clickhouse: ClickHouseFlags,
    /// Print the findings as JSON
    #[arg(long)]
    json: bool,
}

pub async fn run(args: ClickHouseArgs) -> anyhow::Result<()> {
    match args.action {
        Action::Provision(a) => provision_cmd(*a).await,
        Action::Verify(a) => verify_cmd(*a).await,
    }
}

/// A password from `dir/name` if it is there, else a new one written 0600.
fn password_file(dir: &Path, name: &str) -> anyhow::Result<(String, PathBuf)> {
    let path = dir.join(name);
    match read_secret_file(&path) {
        Ok(password) => Ok((password, path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let password = provision::random_hex(24)?;
            otelhouse_tls::files::write_atomic(&path, format!("{password}\n").as_bytes(), 0o600)?;
            Ok((password, path))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

async fn provision_cmd(a: ProvisionArgs) -> anyhow::Result<()> {
    ddl::check_database_name(&a.database).map_err(anyhow::Error::msg)?;
    provision::check_name("--ingest-user", &a.ingest_user).map_err(anyhow::Error::msg)?;
    provision::check_name("--query-user", &a.query_user).map_err(anyhow::Error::msg)?;
    if let Some(c) = &a.cluster {
        provision::check_name("--cluster", c).map_err(anyhow::Error::msg)?;
    }
    for cidr in &a.allow_from {
        provision::check_cidr(cidr).map_err(|e| anyhow::anyhow!("--allow-from {e}"))?;
    }
    let admin_password = match &a.admin_password_file {
        Some(p) => read_secret_file(p).with_context(|| format!("reading {}", p.display()))?,
        None => std::env::var("OTELHOUSE_CLICKHOUSE_ADMIN_PASSWORD").unwrap_or_default(),
    };
    let admin = Client::new(Connection {
        url: a.admin_url.clone(),
        user: a.admin_user.clone(),
        password: admin_password,
        database: a.database.clone(),
        ca_file: a.ca.clone(),
        client_cert: None,
        insecure_skip_verify: a.insecure_skip_verify,
        timeout: Duration::from_secs(120),
    })?;
    let version = match &a.server_version {
        Some(v) => ddl::Version::parse(v)
            .ok_or_else(|| anyhow::anyhow!("--server-version {v}: expected e.g. 26.9"))?,
        None => otelhouse_clickhouse::setup::server_version(&admin.without_database())
            .await
            .context("asking ClickHouse its version (or give --server-version with --print-sql)")?,
    };
    let layout = ddl::Layout {
        database: a.database.clone(),
        version,
        cluster: a.cluster.clone(),
    };
    let retention = |t: Table| match t.signal() {
        otelhouse_schema::Signal::Logs => a.retention_logs,
        otelhouse_schema::Signal::Traces => a.retention_traces,
        otelhouse_schema::Signal::Metrics => a.retention_metrics,
    };
    // create_all starts with CREATE DATABASE, which the plan has already.
    let tables: Vec<String> = ddl::create_all(&layout, retention)
        .into_iter()
        .skip(1)
        .collect();
    let mut plan = Plan::new(&a.database, &a.ingest_user, &a.query_user);
    plan.cluster = a.cluster.clone();
    plan.allow_from = a.allow_from.clone();
    let (ingest_pw, ingest_file) = password_file(&a.secrets_dir, "ingest.password")?;
    let (query_pw, query_file) = password_file(&a.secrets_dir, "query.password")?;
    let salts = (provision::random_hex(16)?, provision::random_hex(16)?);
    let statements = plan.statements((&ingest_pw, &query_pw), (&salts.0, &salts.1), &tables);
    if a.print_sql {
        for st in &statements {
            println!("{st};\n");
        }
    } else {
        let server = admin.without_database();
        for st in &statements {
            let first_line = st.lines().next().unwrap_or("");
            server
                .query(
                    &otelhouse_clickhouse::Statement {
                        sql: st.clone(),
                        params: Vec::new(),
                    },
                    &[],
                )
                .await
                .with_context(|| format!("running: {first_line}"))?;
        }
        // Existing tables keep their TTL unless it is brought in line here.
        otelhouse_clickhouse::setup::sync_retention(&admin, &layout, retention).await?;
        println!(
            "provisioned {} statements on {}",
            statements.len(),
            a.admin_url
        );
    }
    println!(
        "ingestion user {}: password in {}\nquery user {}: password in {}",
        a.ingest_user,
        ingest_file.display(),
        a.query_user,
        query_file.display()
    );
    println!(
        "serve with: --clickhouse-url URL --clickhouse-database {} --clickhouse-ingest-password-file {} --clickhouse-query-password-file {}",
        a.database,
        ingest_file.display(),
        query_file.display()
    );
    Ok(())
}

async fn verify_cmd(a: VerifyArgs) -> anyhow::Result<()> {
    let mut c = crate::load_config(a.config.as_deref())?;
    a.clickhouse.apply(&mut c.clickhouse);
    let ch = &c.clickhouse;
    let (ingest, query) = ch
        .clients(Duration::from_secs(60))
        .map_err(anyhow::Error::msg)?;
    let plan = Plan::new(&ch.database, &ch.ingest_user, &ch.query_user);
    let reader = otelhouse_clickhouse::ClickHouseReader::new(query.clone(), Default::default());
    let findings = provision::verify(&plan, &ingest, &query, &reader.settings()).await;
    let failed = findings.iter().filter(|f| !f.ok).count();
    if a.json {
        println!(
            "{}",
            serde_json::json!({ "ok": failed == 0, "findings": findings })
        );
    } else {
        for f in &findings {
            println!(
                "{} {:<18} {:<30} {}",
                if f.ok { "ok  " } else { "FAIL" },
                f.user,
                f.check,
                f.detail
            );
        }
    }
    if failed > 0 {
        bail!("{failed} check(s) failed");
    }
    Ok(())
}
