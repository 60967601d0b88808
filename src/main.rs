//! The `otelhouse` command line: `serve`, `init`, `keys`, `tokens`, `users`,
//! `retention`, `sql`, `stats`, `certs`.

mod certs;
mod clickhouse_cmd;
mod search_cmd;

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use otelhouse_auth::{Credentials, SecretKind};
use otelhouse_schema::Signal;
use otelhouse_server::ServeConfig;

// The ingest path allocates many small strings per record (protobuf decode,
// Arrow builders); mimalloc is markedly faster at that than glibc's malloc.
// `--features system-allocator` keeps glibc's, for heap profilers that hook
// malloc (heaptrack).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The memory guard's levers on mimalloc, which keeps freed pages for
/// `purge_delay` (1 s unless MIMALLOC_PURGE_DELAY says otherwise) before
/// returning them to the OS: fast, but it doubled RSS under bursts.
#[cfg(not(feature = "system-allocator"))]
mod allocator {
    use libmimalloc_sys::{mi_collect, mi_option_get, mi_option_set, mi_option_t};
    use std::sync::OnceLock;

    /// `mi_option_purge_delay` in mimalloc.h (v2 and v3); libmimalloc-sys
    /// has no constant for it.
    const PURGE_DELAY: mi_option_t = 15;
    static CONFIGURED_DELAY: OnceLock<std::ffi::c_long> = OnceLock::new();

    fn configured() -> std::ffi::c_long {
        CONFIGURED_DELAY.get().copied().unwrap_or(1000)
    }

    /// A forced `mi_collect` purges every arena (not only this thread's
    /// pages), but only while purge_delay > 0: with 0 it returns at once,
    /// leaving what was scheduled before (or while another thread held
    /// mimalloc's purge lock) resident. So while eager it sets a delay
    /// for the duration of the collect. Pages a worker thread still holds
    /// in its own heap are not returned until that thread collects.
    fn release_now() {
        // SAFETY: option reads and writes as in `release_eagerly`;
        // mi_collect may run on any thread.
        unsafe {
            let eager = mi_option_get(PURGE_DELAY) == 0;
            if eager {
                mi_option_set(PURGE_DELAY, configured().max(1));
            }
            mi_collect(true);
            if eager {
                mi_option_set(PURGE_DELAY, 0);
            }
        }
    }

    pub fn control() -> otelhouse_server::memory::AllocatorControl {
        // SAFETY: reading an option has no preconditions.
        CONFIGURED_DELAY.get_or_init(|| unsafe { mi_option_get(PURGE_DELAY) });
        otelhouse_server::memory::AllocatorControl {
            release_now,
            release_eagerly: |eager| {
                let delay = if eager { 0 } else { configured() };
                // SAFETY: an aligned word store that mimalloc re-reads at each
                // purge decision; only the memory guard's thread writes it
                // (one guard per process).
                unsafe { mi_option_set(PURGE_DELAY, delay) }
            },
        }
    }
}

#[derive(Parser)]
#[command(
    name = "otelhouse",
    version,
    about = "OpenTelemetry in, search out: one binary, secure by default"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (OTLP gRPC + HTTP, API). Initialises the data directory on first start.
    Serve(Box<ServeArgs>),
    /// Initialise a data directory without starting a server; prints the credentials once.
    Init {
        #[command(flatten)]
        dir: DataDir,
        /// Print the credentials as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Manage ingestion keys (the `authorization` header of OTLP requests).
    Keys(SecretArgs),
    /// Manage API tokens (`Authorization: Bearer` on /api/v1).
    Tokens(SecretArgs),
    /// Show or set how long each signal is kept (a running server applies a change within seconds).
    Retention(RetentionArgs),
    /// Run read-only SQL (DataFusion dialect) over the stored parts of a data
    /// directory; tables have ClickStack's names (otel_logs, otel_traces, ...).
    /// Rows still in a running server's memory are not included.
    Sql {
        #[command(flatten)]
        dir: DataDir,
        /// Run the query this many times and print the timings to stderr as JSON.
        #[arg(long, default_value_t = 1)]
        repeat: usize,
        sql: String,
    },
    /// Set a user's password (read from stdin, or --password-file).
    Users(UsersArgs),
    /// Certificates: your own CA, server and client certificates, inspection of any TLS endpoint.
    Certs(certs::CertsArgs),
    /// Search logs or spans on a running server: `otelhouse search 'level:error service:api' --since 1h`
    /// (API token from $OTELHOUSE_API_TOKEN or --token-file).
    Search(Box<search_cmd::SearchArgs>),
    /// ClickHouse: `provision` least-privilege users and tables, `verify` them.
    Clickhouse(clickhouse_cmd::ClickHouseArgs),
    /// Rows, parts and bytes on disk per signal and hour partition (reads the data directory).
    Stats {
        #[command(flatten)]
        dir: DataDir,
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// List every partition, not only the totals.
        #[arg(long)]
        partitions: bool,
    },
}

/// `--data-dir`, shared by every command that works on a data directory.
#[derive(Args)]
struct DataDir {
    #[arg(
        long,
        env = "OTELHOUSE_DATA_DIR",
        default_value = "./otelhouse-data",
        global = true
    )]
    data_dir: PathBuf,
}

#[derive(Args)]
struct UsersArgs {
    #[command(flatten)]
    dir: DataDir,
    #[command(subcommand)]
    action: UsersAction,
}

#[derive(Subcommand)]
enum UsersAction {
    /// Set a password (at least 12 characters, not a common one, not containing the account name).
    SetPassword {
        #[arg(long, default_value = otelhouse_auth::ADMIN_EMAIL)]
        email: String,
        /// Read the password from this file instead of stdin
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
}

#[derive(Args)]
struct RetentionArgs {
    #[command(flatten)]
    dir: DataDir,
    #[command(subcommand)]
    action: RetentionAction,
}

#[derive(Subcommand)]
enum RetentionAction {
    /// `otelhouse retention set logs 7d`: keep logs 7 days (at least 1h).
    Set {
        /// logs, traces or metrics
        signal: String,
        /// e.g. 7d, 36h, 2w
        duration: String,
    },
    /// The retention set with `retention set` (others follow the server's configuration, default 3d).
    Show,
}

#[derive(Args)]
struct ServeArgs {
    /// TOML config file; flags and OTELHOUSE_* variables override it.
    #[arg(long, env = "OTELHOUSE_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long, env = "OTELHOUSE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// OTLP/gRPC listen address [default: 127.0.0.1:4317]
    #[arg(long, env = "OTELHOUSE_OTLP_GRPC_ADDR")]
    otlp_grpc_addr: Option<String>,
    /// OTLP/HTTP listen address [default: 127.0.0.1:4318]
    #[arg(long, env = "OTELHOUSE_OTLP_HTTP_ADDR")]
    otlp_http_addr: Option<String>,
    /// API/UI listen address [default: 127.0.0.1:8080]
    #[arg(long, env = "OTELHOUSE_HTTP_ADDR")]
    http_addr: Option<String>,
    /// How long logs are kept, e.g. 7d [default: 3d]
    #[arg(long, env = "OTELHOUSE_RETENTION_LOGS", value_parser = humantime::parse_duration)]
    retention_logs: Option<std::time::Duration>,
    /// How long spans are kept [default: 3d]
    #[arg(long, env = "OTELHOUSE_RETENTION_TRACES", value_parser = humantime::parse_duration)]
    retention_traces: Option<std::time::Duration>,
    /// How long metric points are kept [default: 3d]
    #[arg(long, env = "OTELHOUSE_RETENTION_METRICS", value_parser = humantime::parse_duration)]
    retention_metrics: Option<std::time::Duration>,
    /// Largest OTLP request body as received, in bytes [default: 8 MiB]
    #[arg(long, env = "OTELHOUSE_MAX_REQUEST_BYTES")]
    max_request_bytes: Option<usize>,
    /// Largest OTLP body after decompression, in bytes [default: 32 MiB]
    #[arg(long, env = "OTELHOUSE_MAX_DECOMPRESSED_BYTES")]
    max_decompressed_bytes: Option<usize>,
    /// Write in-memory rows to Parquet parts at least this often [default: 30s]
    #[arg(long, env = "OTELHOUSE_FLUSH_INTERVAL", value_parser = humantime::parse_duration)]
    flush_interval: Option<std::time::Duration>,
    /// Write a table's in-memory rows to a part once it holds this many rows [default: 500000]
    #[arg(long, env = "OTELHOUSE_FLUSH_ROWS")]
    flush_rows: Option<usize>,
    /// ...or this many bytes [default: 128 MiB]
    #[arg(long, env = "OTELHOUSE_FLUSH_BYTES")]
    flush_bytes: Option<usize>,
    /// Write buffer: memory for rows not yet in parts, e.g. 512MiB; beyond it ingestion answers 503 [default: 1/8 of RAM, at most 1 GiB]
    #[arg(long, env = "OTELHOUSE_MAX_MEMORY_BYTES", value_parser = otelhouse_server::config::parse_bytes)]
    max_memory_bytes: Option<u64>,
    /// WAL disk budget; beyond it ingestion answers 503 [default: 4 GiB]
    #[arg(long, env = "OTELHOUSE_MAX_WAL_BYTES")]
    max_wal_bytes: Option<u64>,
    /// How often retention, the disk budget and compaction run [default: 5s]
    #[arg(long, env = "OTELHOUSE_MAINTENANCE_INTERVAL", value_parser = humantime::parse_duration)]
    maintenance_interval: Option<std::time::Duration>,
    /// Disk budget for stored data, e.g. 50GB; beyond it the oldest hours are dropped early [default: none]
    #[arg(long, env = "OTELHOUSE_MAX_DISK", value_parser = otelhouse_server::config::parse_bytes)]
    max_disk: Option<u64>,
    /// Memory all running queries share, e.g. 1GiB [default: 1/4 of RAM, at most 2 GiB]
    #[arg(long, env = "OTELHOUSE_MAX_QUERY_MEMORY", value_parser = otelhouse_server::config::parse_bytes)]
    max_query_memory: Option<u64>,
    /// Resident memory (RSS) of the whole server, e.g. 4GiB: near it freed memory is returned at once; above 90 % of it ingestion answers 503 and merges wait [default: write buffer + query memory, at least 256 MiB]
    #[arg(long, env = "OTELHOUSE_MAX_RESIDENT_MEMORY", value_parser = otelhouse_server::config::parse_bytes)]
    max_resident_memory: Option<u64>,
    /// Widest time range one query may cover, e.g. 7d [default: 31d]
    #[arg(long, env = "OTELHOUSE_MAX_QUERY_RANGE", value_parser = humantime::parse_duration)]
    max_query_range: Option<std::time::Duration>,
    /// TLS certificate (PEM, leaf first) for every listener; reloaded when the file changes or on SIGHUP
    #[arg(long, env = "OTELHOUSE_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) matching --tls-cert
    #[arg(long, env = "OTELHOUSE_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Require OTLP clients to present a certificate issued by this CA (mTLS)
    #[arg(long, env = "OTELHOUSE_TLS_CLIENT_CA")]
    tls_client_ca: Option<PathBuf>,
    /// Lowest TLS version accepted: 1.2 or 1.3 [default: 1.2]
    #[arg(long, env = "OTELHOUSE_TLS_MIN")]
    tls_min: Option<otelhouse_tls::TlsMin>,
    /// File holding the web app's session secret (default: generated in the data directory)
    #[arg(long, env = "OTELHOUSE_SESSION_SECRET_FILE")]
    session_secret_file: Option<PathBuf>,
    /// Allow plaintext on non-loopback listeners because a TLS proxy terminates in front
    #[arg(long, env = "OTELHOUSE_ALLOW_PLAINTEXT_BEHIND_PROXY")]
    allow_plaintext_behind_proxy: bool,
    /// Allow a public start with a weak or readable session secret
    #[arg(long, env = "OTELHOUSE_ALLOW_WEAK_SESSION_SECRET")]
    allow_weak_session_secret: bool,
    /// Allow a public start while an admin has a default or weak password
    #[arg(long, env = "OTELHOUSE_ALLOW_WEAK_ADMIN_PASSWORD")]
    allow_weak_admin_password: bool,
    #[command(flatten)]
    clickhouse: clickhouse_cmd::ClickHouseFlags,
    /// Allow a public start although ClickHouse is reached without verified TLS
    #[arg(long, env = "OTELHOUSE_ALLOW_INSECURE_CLICKHOUSE")]
    allow_insecure_clickhouse: bool,
    /// Print the effective configuration (TOML, secrets redacted) and exit
    #[arg(long)]
    print_config: bool,
}

/// The TOML config file's settings, or the defaults without one.
fn load_config(path: Option<&Path>) -> anyhow::Result<ServeConfig> {
    match path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            ServeConfig::from_toml(&text)
                .map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))
        }
        None => Ok(ServeConfig::default()),
    }
}

/// A flag's value (or its variable's), when given, over the slot's.
fn set<T>(slot: &mut T, v: Option<T>) {
    if let Some(v) = v {
        *slot = v;
    }
}

impl ServeArgs {
    /// flag > environment (both via clap) > config file > default.
    fn into_config(self) -> anyhow::Result<ServeConfig> {
        let mut c = load_config(self.config.as_deref())?;
        set(&mut c.data_dir, self.data_dir);
        set(&mut c.otlp_grpc_addr, self.otlp_grpc_addr);
        set(&mut c.otlp_http_addr, self.otlp_http_addr);
        set(&mut c.http_addr, self.http_addr);
        set(&mut c.retention.logs, self.retention_logs);
        set(&mut c.retention.traces, self.retention_traces);
        set(&mut c.retention.metrics, self.retention_metrics);
        set(&mut c.limits.max_request_bytes, self.max_request_bytes);
        set(
            &mut c.limits.max_decompressed_bytes,
            self.max_decompressed_bytes,
        );
        set(&mut c.storage.flush_interval, self.flush_interval);
        set(&mut c.storage.flush_rows, self.flush_rows);
        set(&mut c.storage.flush_bytes, self.flush_bytes);
        set(
            &mut c.storage.max_memory_bytes,
            self.max_memory_bytes.map(|b| b as usize),
        );
        set(&mut c.storage.max_wal_bytes, self.max_wal_bytes);
        set(
            &mut c.storage.maintenance_interval,
            self.maintenance_interval,
        );
        set(&mut c.storage.max_disk_bytes, self.max_disk.map(Some));
        set(
            &mut c.storage.max_query_memory_bytes,
            self.max_query_memory.map(|b| b as usize),
        );
        set(
            &mut c.storage.max_resident_bytes,
            self.max_resident_memory.map(Some),
        );
        set(&mut c.storage.max_query_range, self.max_query_range);
        set(&mut c.tls.cert, self.tls_cert.map(Some));
        set(&mut c.tls.key, self.tls_key.map(Some));
        set(&mut c.tls.client_ca, self.tls_client_ca.map(Some));
        set(&mut c.tls.min, self.tls_min);
        set(
            &mut c.security.session_secret_file,
            self.session_secret_file.map(Some),
        );
        // The secret itself only ever comes from the environment, never a flag
        // (flags show up in `ps`).
        c.security.session_secret = std::env::var("OTELHOUSE_SESSION_SECRET")
            .ok()
            .map(otelhouse_server::config::Redacted);
        c.security.allow_plaintext_behind_proxy |= self.allow_plaintext_behind_proxy;
        c.security.allow_weak_session_secret |= self.allow_weak_session_secret;
        c.security.allow_weak_admin_password |= self.allow_weak_admin_password;
        self.clickhouse.apply(&mut c.clickhouse);
        c.clickhouse.allow_insecure_clickhouse |= self.allow_insecure_clickhouse;
        Ok(c)
    }
}

#[derive(Args)]
struct SecretArgs {
    #[command(flatten)]
    dir: DataDir,
    #[command(subcommand)]
    action: SecretAction,
}

#[derive(Subcommand)]
enum SecretAction {
    /// Create one; its secret is printed once.
    Create {
        #[arg(long)]
        name: String,
    },
    /// List all (ids, names, dates; never secrets).
    List,
    /// Revoke one by id; a running server stops accepting it within a second.
    Revoke { id: String },
}

async fn open_initialised(dir: &Path) -> anyhow::Result<Credentials> {
    let creds = Credentials::open(dir).await?;
    if !creds.is_initialised().await? {
        anyhow::bail!(
            "{} is not initialised: run `otelhouse init --data-dir {}` or start the server once",
            dir.display(),
            dir.display()
        );
    }
    Ok(creds)
}

async fn manage(kind: SecretKind, args: SecretArgs) -> anyhow::Result<()> {
    let creds = open_initialised(&args.dir.data_dir).await?;
    match args.action {
        SecretAction::Create { name } => {
            let (id, secret) = creds.create(kind, &name).await?;
            println!(
                "created {} {id} ({name}); its secret is shown only once:\n{secret}",
                kind.noun()
            );
        }
        SecretAction::List => {
            println!("{:<14} {:<24} {:<22} REVOKED", "ID", "NAME", "CREATED");
            for s in creds.list(kind).await? {
                println!(
                    "{:<14} {:<24} {:<22} {}",
                    s.id,
                    s.name,
                    s.created_at,
                    s.revoked_at.as_deref().unwrap_or("-")
                );
            }
        }
        SecretAction::Revoke { id } => {
            creds.revoke(kind, &id).await?;
            println!("revoked {} {id}", kind.noun());
        }
    }
    creds.close().await;
    Ok(())
}

async fn run_sql(data_dir: &Path, sql: &str, repeat: usize) -> anyhow::Result<()> {
    let ctx = otelhouse_storage::sql::session(data_dir)?;
    let (batches, times) = otelhouse_storage::sql::run(&ctx, sql, repeat).await?;
    for row in otelhouse_storage::rows::to_rows(&batches) {
        println!("{}", serde_json::to_string(&row)?);
    }
    if repeat > 1 {
        let mut ms: Vec<f64> = times.iter().map(|t| t.as_secs_f64() * 1e3).collect();
        let runs = ms.clone();
        ms.sort_by(f64::total_cmp);
        eprintln!(
            "{}",
            serde_json::json!({"p50_ms": ms[ms.len() / 2], "min_ms": ms[0], "runs_ms": runs})
        );
    }
    Ok(())
}

fn retention(args: RetentionArgs) -> anyhow::Result<()> {
    use otelhouse_storage::retention;
    if !args.dir.data_dir.join("otelhouse.db").exists() {
        anyhow::bail!(
            "{} is not an otelhouse data directory (run `otelhouse init` or `otelhouse serve` first)",
            args.dir.data_dir.display()
        );
    }
    match args.action {
        RetentionAction::Set { signal, duration } => {
            let s = Signal::parse(&signal).ok_or_else(|| {
                anyhow::anyhow!("unknown signal `{signal}`: use logs, traces or metrics")
            })?;
            let d = retention::parse(&duration)?;
            retention::save_override(&args.dir.data_dir, s, d)?;
            println!(
                "{} are kept {}; a running server applies this within 5 seconds and drops older hours",
                s.as_str(),
                humantime::format_duration(d)
            );
        }
        RetentionAction::Show => {
            let set = retention::load_overrides(&args.dir.data_dir)?;
            for s in Signal::ALL {
                match set.get(&s) {
                    Some(d) => println!("{:<8} {}", s.as_str(), humantime::format_duration(*d)),
                    None => println!("{:<8} (server configuration; default 3d)", s.as_str()),
                }
            }
        }
    }
    Ok(())
}

fn stats(data_dir: &Path, json: bool, partitions: bool) -> anyhow::Result<()> {
    if !data_dir.join("parts").exists() {
        anyhow::bail!("{} holds no stored data yet", data_dir.display());
    }
    let tables = otelhouse_storage::stats_on_disk(data_dir)?;
    if json {
        let out: Vec<_> = tables
            .iter()
            .map(otelhouse_server::api::stats_json)
            .collect();
        println!("{}", serde_json::json!({ "tables": out }));
        return Ok(());
    }
    let ratio = |raw: u64, bytes: u64| {
        if bytes == 0 {
            "-".to_string()
        } else {
            format!("{:.1}x", raw as f64 / bytes as f64)
        }
    };
    println!(
        "{:<36} {:>12} {:>6} {:>12} {:>7}",
        "table / partition", "rows", "parts", "bytes", "ratio"
    );
    for t in tables.iter().filter(|t| t.parts > 0) {
        println!(
            "{:<36} {:>12} {:>6} {:>12} {:>7}",
            t.table,
            t.part_rows,
            t.parts,
            t.part_bytes,
            ratio(t.part_raw_bytes, t.part_bytes)
        );
        if partitions {
            for p in &t.partitions {
                println!(
                    "  {:<34} {:>12} {:>6} {:>12} {:>7}",
                    p.partition,
                    p.rows,
                    p.parts,
                    p.bytes,
                    ratio(p.raw_bytes, p.bytes)
                );
            }
        }
    }
    println!(
        "(rows still in the server's memory are not counted; GET /api/v1/stats includes them)"
    );
    Ok(())
}

async fn users(args: UsersArgs) -> anyhow::Result<()> {
    match args.action {
        UsersAction::SetPassword {
            email,
            password_file,
        } => {
            let password = match password_file {
                Some(p) => std::fs::read_to_string(&p)
                    .with_context(|| format!("reading {}", p.display()))?,
                None => {
                    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                        eprintln!("new password for {email} (then Enter):");
                    }
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    line
                }
            };
            let password = password.trim_end_matches(['\n', '\r']);
            let creds = open_initialised(&args.dir.data_dir).await?;
            let result = creds.set_password(&email, password).await;
            creds.close().await;
            result?;
            println!("password set for {email}");
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn main() -> anyhow::Result<()> {
    // Everything otelhouse writes (data, WAL, credentials) is for its owner only.
    // SAFETY: umask has no memory-safety preconditions.
    unsafe { libc::umask(0o077) };
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OTELHOUSE_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: log files and collectors get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        match cli.command {
            Command::Serve(args) => {
                let print = args.print_config;
                let config = args.into_config()?;
                if print {
                    print!("{}", config.to_toml());
                    return Ok(());
                }
                #[cfg(not(feature = "system-allocator"))]
                otelhouse_server::memory::set_allocator_control(allocator::control());
                otelhouse_server::serve(config, shutdown_signal()).await
            }
            Command::Users(args) => users(args).await,
            Command::Certs(args) => certs::run(args).await,
            Command::Clickhouse(args) => clickhouse_cmd::run(args).await,
            Command::Init { dir, json } => {
                let creds = Credentials::open(&dir.data_dir).await?;
                let initial = creds.initialise().await?;
                creds.close().await;
                if json {
                    println!("{}", serde_json::to_string(&initial)?);
                } else {
                    otelhouse_server::print_credentials_box(&initial);
                }
                Ok(())
            }
            Command::Keys(args) => manage(SecretKind::IngestionKey, args).await,
            Command::Tokens(args) => manage(SecretKind::ApiToken, args).await,
            Command::Retention(args) => retention(args),
            Command::Search(args) => search_cmd::run(*args).await,
            Command::Sql { dir, repeat, sql } => run_sql(&dir.data_dir, &sql, repeat).await,
            Command::Stats {
                dir,
                json,
                partitions,
            } => stats(&dir.data_dir, json, partitions),
        }
    })
}
