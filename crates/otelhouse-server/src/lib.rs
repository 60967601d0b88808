//! `otelhouse serve`: the listeners (OTLP gRPC, OTLP HTTP, API) around the
//! ingest pipeline and the store.

pub mod api;
pub mod config;
pub mod ingest;
pub mod listen;
pub mod memory;
pub mod otlp_grpc;
pub mod otlp_http;
pub mod security;
pub mod telemetry;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use otelhouse_auth::session_secret::SessionSecret;
use otelhouse_auth::{Credentials, InitialCredentials, KeyCache};
use otelhouse_schema::Signal;
use otelhouse_storage::retention::RetentionPolicy;
use otelhouse_storage::{EmbeddedStore, StoreOptions};
use otelhouse_wal::{Committer, CommitterOptions, Wal, WalOptions};
use tokio::net::TcpListener;

pub use config::ServeConfig;

use crate::ingest::{Ingest, WriteBuffer};
use crate::listen::{Bound, ListenerSpec};
use crate::telemetry::Sink;
use crate::telemetry::Telemetry;
use otelhouse_otlp::convert::TableBatches;

/// Prints first-start credentials once, in a box, to stdout (never to the log).
pub fn print_credentials_box(c: &InitialCredentials) {
    let lines = [
        "otelhouse initialised. These credentials are shown ONLY ONCE: store them now.".to_string(),
        String::new(),
        format!("admin login     {}", c.admin_email),
        format!("admin password  {}", c.admin_password),
        format!("ingestion key   {}", c.ingestion_key),
        format!("API token       {}", c.api_token),
        String::new(),
        "Send OTLP with the header  authorization: <ingestion key>".to_string(),
        "Query the API with         Authorization: Bearer <API token>".to_string(),
    ];
    let width = lines.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let mut out = format!("╔{}╗\n", "═".repeat(width + 2));
    for l in &lines {
        out += &format!("║ {l:<width$} ║\n");
    }
    out += &format!("╚{}╝\n", "═".repeat(width + 2));
    print!("{out}");
}

/// Holds the data directory's lock file for the life of the server, so two
/// servers never share a WAL.
fn lock_data_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    file.try_lock().map_err(|_| {
        anyhow::anyhow!(
            "another otelhouse server is using the data directory {} (--data-dir)",
            dir.display()
        )
    })?;
    Ok(file)
}

/// Runs the server until `shutdown` resolves, then stops accepting, writes
/// the in-memory tail to parts and returns.
pub async fn serve(
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let specs = [
        ListenerSpec {
            name: "otlp_grpc",
            addr: &config.otlp_grpc_addr,
            flag: "otlp-grpc-addr",
            env: "OTELHOUSE_OTLP_GRPC_ADDR",
        },
        ListenerSpec {
            name: "otlp_http",
            addr: &config.otlp_http_addr,
            flag: "otlp-http-addr",
            env: "OTELHOUSE_OTLP_HTTP_ADDR",
        },
        ListenerSpec {
            name: "http",
            addr: &config.http_addr,
            flag: "http-addr",
            env: "OTELHOUSE_HTTP_ADDR",
        },
    ];
    let addrs = listen::parse_addrs(&specs)?;
    if config.storage.max_resident_bytes == Some(0) {
        bail!("max_resident_bytes (--max-resident-memory) must be above 0");
    }
    // Certificate problems are configuration errors: fail before anything else.
    let tls = load_tls(&config.tls)?;
    let data_dir = config.data_dir.clone();
    let creds = Credentials::open(&data_dir)
        .await
        .with_context(|| format!("opening the credential store in {}", data_dir.display()))?;
    let _lock = lock_data_dir(&data_dir)?;
    let initialised = creds.is_initialised().await?;

    let session_secret = SessionSecret::load(
        &data_dir,
        config.security.session_secret.as_ref().map(|r| r.0.clone()),
        config.security.session_secret_file.as_deref(),
    )
    .map_err(anyhow::Error::msg)?;
    let public = addrs.iter().any(security::is_public);
    // Hashing candidate passwords takes a moment: only a public start needs it.
    let weak_admins = match (public, initialised) {
        (true, true) => Some(creds.admins_with_weak_passwords().await?),
        (true, false) => Some(Vec::new()),
        (false, _) => None,
    };
    let report = security::evaluate(
        &config,
        &security::Facts {
            listeners: specs
                .iter()
                .zip(&addrs)
                .map(|(s, a)| security::Listener {
                    flag: s.flag,
                    addr: *a,
                    tls: tls.is_some(),
                })
                .collect(),
            session_secret_source: session_secret.source.to_string(),
            session_secret_weaknesses: session_secret.weaknesses(),
            weak_admins,
        },
    );
    if let Some(refusal) = report.refusal_message() {
        bail!(refusal);
    }
    report.log();
    let security = Arc::new(report);

    let listeners = listen::bind_all(&specs, &addrs).await?;
    if !initialised {
        let initial = creds.initialise().await?;
        print_credentials_box(&initial);
    }
    let keys = KeyCache::load(creds.clone()).await?;
    let _refresh = AbortOnDrop(keys.spawn_refresh(Duration::from_secs(1)));
    let _tls_watch = tls.as_ref().map(|(otlp, api)| {
        AbortOnDrop(otelhouse_tls::server::spawn_watcher(
            vec![otlp.clone(), api.clone()],
            Duration::from_secs(5),
        ))
    });

    let s = &config.storage;
    let retention = Arc::new(RetentionPolicy::new(
        config.retention.logs,
        config.retention.traces,
        config.retention.metrics,
    ));
    apply_retention_overrides(&data_dir, &config.retention, &retention, true)?;
    let committer_opts = CommitterOptions {
        max_queue_bytes: s.max_queue_bytes,
        max_wal_bytes: s.max_wal_bytes,
        ..Default::default()
    };
    let backend = match &config.clickhouse.url {
        None => open_embedded(&config, committer_opts)?,
        Some(url) => open_clickhouse(&config, url, committer_opts)?,
    };
    let resident_budget = s.resident_budget();
    tracing::info!(
        resident_mib = resident_budget >> 20,
        "resident memory budget (near it freed memory is returned at once; above 90 %: 503 and no merges)"
    );
    let memory = memory::MemoryGuard::spawn(resident_budget, Duration::from_millis(100));
    let telemetry = Arc::new(Telemetry::new(
        backend.committer.stats().clone(),
        backend.sink.clone(),
        &security,
        Some(memory.clone()),
    ));
    let ingest = Arc::new(Ingest::new(
        backend.committer,
        backend.buffer,
        memory.clone(),
        config.limits.clone(),
        retention.clone(),
        telemetry.clone(),
        s.max_inflight_requests,
    ));
    // The sink's own stop signal: sent only once the listeners are done and
    // the WAL writer has stopped, so the shipper drains the last requests.
    let (sink_stop_tx, sink_stop_rx) = tokio::sync::watch::channel(false);
    let background = match &backend.sink {
        Sink::Embedded(store) => vec![
            tokio::spawn(flush_loop(
                ingest.clone(),
                store.clone(),
                s.flush_interval.min(Duration::from_secs(1)),
            )),
            tokio::spawn(maintenance_loop(
                store.clone(),
                memory.clone(),
                data_dir.clone(),
                config.retention.clone(),
                retention.clone(),
                s.max_disk_bytes,
                s.maintenance_interval,
            )),
        ],
        Sink::ClickHouse(shipper) => vec![tokio::spawn(ship_maintenance_loop(
            ingest.clone(),
            shipper.clone(),
            data_dir.clone(),
            config.retention.clone(),
            retention.clone(),
            s.maintenance_interval,
        ))],
    };
    let shipping = match &backend.sink {
        Sink::ClickHouse(shipper) => {
            let (shipper, retention) = (shipper.clone(), retention.clone());
            Some(tokio::spawn(async move {
                shipper.run(retention, sink_stop_rx).await
            }))
        }
        Sink::Embedded(_) => None,
    };

    let [grpc_l, http_l, api_l]: [TcpListener; 3] = listeners
        .try_into()
        .map_err(|_| anyhow::anyhow!("three listeners"))?;
    let (otlp_tls, api_tls) = match &tls {
        Some((o, a)) => (Some(o.clone()), Some(a.clone())),
        None => (None, None),
    };
    let grpc_l = Bound::new(
        grpc_l,
        otlp_tls.clone(),
        telemetry.handshake_failure_hook(specs[0].name),
    );
    let http_l = Bound::new(
        http_l,
        otlp_tls,
        telemetry.handshake_failure_hook(specs[1].name),
    );
    let api_public = security::is_public(&addrs[2]);
    let api_l = Bound::new(
        api_l,
        api_tls,
        telemetry.handshake_failure_hook(specs[2].name),
    );
    let addrs = serde_json::json!({
        "otlp_grpc": grpc_l.local_addr()?.to_string(),
        "otlp_http": http_l.local_addr()?.to_string(),
        "http": api_l.local_addr()?.to_string(),
        "tls": tls.is_some(),
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let grpc_svc = otlp_grpc::OtlpGrpc {
        ingest: ingest.clone(),
        keys: keys.clone(),
        max_message_bytes: config.limits.max_decompressed_bytes,
    };
    let grpc = listen::serve_grpc(
        grpc_l,
        otlp_grpc::routes(grpc_svc),
        config.limits.max_request_bytes,
        stopped(stop_rx.clone()),
    );
    let http_router = otlp_http::router(otlp_http::OtlpHttpState {
        ingest: ingest.clone(),
        keys: keys.clone(),
    });
    let http = listen::serve_axum(http_l, http_router, stopped(stop_rx.clone()));
    let storage = backend.storage;
    let query = Arc::new(otelhouse_query::QueryService::new(
        storage.clone(),
        otelhouse_query::Limits {
            max_range: config.storage.max_query_range,
            ..Default::default()
        },
    ));
    let api_router = api::router(api::ApiState {
        storage,
        query,
        keys: keys.clone(),
        telemetry,
        security,
        metrics_need_token: api_public,
        ready: backend.ready,
    });
    let api = listen::serve_axum(api_l, api_router, stopped(stop_rx));

    write_listen_file(&data_dir, &addrs)?;
    tracing::info!(otlp_grpc = %addrs["otlp_grpc"], otlp_http = %addrs["otlp_http"], http = %addrs["http"], data_dir = %data_dir.display(), "otelhouse is serving");

    shutdown.await;
    tracing::info!("shutting down: finishing requests in flight");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let _ = grpc.await;
        let _ = http.await;
        let _ = api.await;
    })
    .await;
    for task in &background {
        task.abort();
    }
    ingest.committer.shutdown();
    match &backend.sink {
        Sink::Embedded(store) => {
            let store = store.clone();
            let seq = tokio::task::spawn_blocking(move || store.flush(true)).await??;
            ingest.committer.remove_through(seq)?;
        }
        Sink::ClickHouse(shipper) => {
            let _ = sink_stop_tx.send(true);
            if let Some(task) = shipping {
                // What is not shipped now stays in the WAL for the next start.
                let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
            }
            ingest.committer.remove_through(shipper.shipped_seq())?;
            tracing::info!(
                backlog_entries = shipper.backlog_entries(),
                "ClickHouse shipping stopped; any backlog ships at the next start"
            );
        }
    }
    creds.close().await;
    let _ = std::fs::remove_file(data_dir.join("listen.json"));
    tracing::info!("stopped cleanly");
    Ok(())
}

/// What the ingest path writes to and the API reads from.
struct Backend {
    committer: Committer<TableBatches>,
    buffer: Arc<dyn WriteBuffer>,
    storage: Arc<dyn otelhouse_storage::Storage>,
    /// Whether `storage` can answer (`/readyz`).
    ready: Arc<dyn Fn() -> bool + Send + Sync>,
    sink: Sink,
}

/// The embedded store: the WAL replays into its in-memory tail.
fn open_embedded(
    config: &ServeConfig,
    committer_opts: CommitterOptions,
) -> anyhow::Result<Backend> {
    let s = &config.storage;
    let store = EmbeddedStore::open(
        &config.data_dir,
        StoreOptions {
            flush_rows: s.flush_rows,
            flush_bytes: s.flush_bytes,
            flush_interval: s.flush_interval,
            max_tail_bytes: s.max_memory_bytes,
            max_query_memory_bytes: s.max_query_memory_bytes,
            query_timeout: s.query_timeout,
            merge: Default::default(),
        },
    )?;
    tracing::info!(
        write_buffer_mib = s.max_memory_bytes >> 20,
        query_memory_mib = s.max_query_memory_bytes >> 20,
        max_disk_bytes = s.max_disk_bytes.unwrap_or(0),
        "memory and disk budgets (max_disk_bytes 0: none)"
    );
    let started = std::time::Instant::now();
    let mut replay_error = None;
    let (wal, recovery) = Wal::open(
        &config.data_dir.join("wal"),
        WalOptions::default(),
        store.min_next_seq(),
        |entry| {
            if let Err(e) = store.replay(entry) {
                replay_error.get_or_insert(e);
            }
        },
    )?;
    if let Some(e) = replay_error {
        return Err(e.context("replaying the write-ahead log"));
    }
    log_recovery(&recovery, started);
    Ok(Backend {
        committer: Committer::start(wal, store.applier(), committer_opts),
        buffer: Arc::new(store.clone()),
        storage: Arc::new(store.clone()),
        ready: Arc::new(|| true),
        sink: Sink::Embedded(store),
    })
}

fn log_recovery(recovery: &otelhouse_wal::Recovery, started: std::time::Instant) {
    tracing::info!(
        entries = recovery.entries,
        truncated_bytes = recovery.truncated_bytes,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "write-ahead log replayed"
    );
}

/// ClickHouse: the WAL's entries not yet confirmed by ClickHouse are the
/// shipper's backlog; the API reads as the query user.
fn open_clickhouse(
    config: &ServeConfig,
    url: &str,
    committer_opts: CommitterOptions,
) -> anyhow::Result<Backend> {
    let ch = &config.clickhouse;
    // Inserts of large batches and the slowest query both fit.
    let (ingest_client, query_client) = ch
        .clients(config.storage.query_timeout.max(Duration::from_secs(60)))
        .map_err(anyhow::Error::msg)?;
    let wal_dir = config.data_dir.join("wal");
    let shipper = otelhouse_clickhouse::Shipper::open(
        ingest_client,
        &wal_dir,
        &config.data_dir.join("clickhouse-shipped.json"),
        otelhouse_clickhouse::ShipOptions {
            max_batch_rows: ch.max_batch_rows,
            max_delay: ch.max_batch_delay,
            max_memory_bytes: config.storage.max_memory_bytes,
            cluster: ch.cluster.clone(),
            ..Default::default()
        },
    )
    .context("opening the ClickHouse shipping state")?;
    let started = std::time::Instant::now();
    let mut last = 0;
    // Entries are not replayed into memory: the shipper reads its backlog
    // back from the WAL. New entries are numbered above everything shipped,
    // so deduplication tokens never repeat.
    let (wal, recovery) = Wal::open(
        &wal_dir,
        WalOptions::default(),
        shipper.shipped_seq() + 1,
        |entry| last = entry.seq,
    )?;
    log_recovery(&recovery, started);
    shipper.set_durable(last);
    tracing::info!(
        url,
        database = %ch.database,
        ingest_user = %ch.ingest_user,
        query_user = %ch.query_user,
        backlog_entries = shipper.backlog_entries(),
        "storing in ClickHouse"
    );
    let reader = otelhouse_clickhouse::ClickHouseReader::new(
        query_client,
        otelhouse_clickhouse::ReadLimits {
            max_execution_time: config.storage.query_timeout,
            ..Default::default()
        },
    );
    Ok(Backend {
        committer: Committer::start(wal, shipper.applier(), committer_opts),
        buffer: Arc::new(shipper.clone()),
        storage: Arc::new(reader),
        ready: {
            let shipper = shipper.clone();
            Arc::new(move || shipper.is_ready())
        },
        sink: Sink::ClickHouse(shipper),
    })
}

/// ClickHouse mode's upkeep: picks up `otelhouse retention set` (the
/// shipper then changes the tables' TTL) and drops WAL segments ClickHouse
/// has confirmed.
async fn ship_maintenance_loop(
    ingest: Arc<Ingest>,
    shipper: otelhouse_clickhouse::Shipper,
    data_dir: std::path::PathBuf,
    configured: config::Retention,
    retention: Arc<RetentionPolicy>,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every.min(Duration::from_secs(1)));
    loop {
        tick.tick().await;
        if let Err(e) = ingest.committer.remove_through(shipper.shipped_seq()) {
            tracing::error!(error = %e, "could not remove shipped WAL segments");
        }
        if let Err(e) = apply_retention_overrides(&data_dir, &configured, &retention, false) {
            tracing::error!(error = %e, "could not read the retention settings");
        }
    }
}

/// The TLS configurations of the OTLP listeners (with the client CA, when
/// mTLS is on) and of the API listener; None when TLS is off.
type ListenerTls = (
    Arc<otelhouse_tls::ReloadingConfig>,
    Arc<otelhouse_tls::ReloadingConfig>,
);

fn load_tls(c: &config::TlsConfig) -> anyhow::Result<Option<ListenerTls>> {
    let (cert, key) = match (&c.cert, &c.key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        (None, None) => {
            if c.client_ca.is_some() {
                bail!("--tls-client-ca needs TLS on: give --tls-cert and --tls-key too");
            }
            return Ok(None);
        }
        (Some(_), None) => bail!("--tls-cert needs --tls-key (OTELHOUSE_TLS_KEY)"),
        (None, Some(_)) => bail!("--tls-key needs --tls-cert (OTELHOUSE_TLS_CERT)"),
    };
    let files = otelhouse_tls::ServerTlsFiles {
        cert,
        key,
        client_ca: c.client_ca.clone(),
        min: c.min,
    };
    let otlp = otelhouse_tls::ReloadingConfig::load("otlp", files.clone())
        .context("TLS for the OTLP listeners (--tls-cert, --tls-key, --tls-client-ca)")?;
    let api = otelhouse_tls::ReloadingConfig::load(
        "http",
        otelhouse_tls::ServerTlsFiles {
            client_ca: None,
            ..files
        },
    )
    .context("TLS for the API listener (--tls-cert, --tls-key)")?;
    let info = api.info();
    tracing::info!(
        subject = %info.subject,
        sans = %info.sans.join(","),
        not_after = %otelhouse_tls::inspect::format_time(info.not_after),
        min_version = ?c.min,
        client_certificates = if c.client_ca.is_some() { "required on OTLP" } else { "not required" },
        "TLS on every listener"
    );
    Ok(Some((otlp, api)))
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `listen.json` tells scripts and tests which ports were bound (useful with `:0`).
fn write_listen_file(dir: &Path, addrs: &serde_json::Value) -> anyhow::Result<()> {
    let tmp = dir.join("listen.json.tmp");
    std::fs::write(&tmp, addrs.to_string())?;
    std::fs::rename(&tmp, dir.join("listen.json"))?;
    Ok(())
}

/// Retention set with `otelhouse retention set` wins over the configured
/// value (it is the later, explicit choice); logged when it differs.
fn apply_retention_overrides(
    data_dir: &Path,
    configured: &config::Retention,
    live: &RetentionPolicy,
    at_start: bool,
) -> anyhow::Result<()> {
    let overrides = otelhouse_storage::retention::load_overrides(data_dir)?;
    for signal in Signal::ALL {
        let from_config = match signal {
            Signal::Logs => configured.logs,
            Signal::Traces => configured.traces,
            Signal::Metrics => configured.metrics,
        };
        let want = overrides.get(&signal).copied().unwrap_or(from_config);
        if want != live.get(signal) || (at_start && want != from_config) {
            tracing::info!(
                signal = signal.as_str(),
                retention = %humantime::format_duration(want),
                source = if overrides.contains_key(&signal) { "otelhouse retention set" } else { "configuration" },
                "retention"
            );
        }
        live.set(signal, want);
    }
    Ok(())
}

/// Every few seconds: picks up retention changes, drops expired (or
/// over-budget) partitions, and merges small parts.
async fn maintenance_loop(
    store: EmbeddedStore,
    memory: Arc<memory::MemoryGuard>,
    data_dir: std::path::PathBuf,
    configured: config::Retention,
    retention: Arc<RetentionPolicy>,
    max_disk: Option<u64>,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        if let Err(e) = apply_retention_overrides(&data_dir, &configured, &retention, false) {
            tracing::error!(error = %e, "could not read the retention settings");
        }
        let (store, retention, memory) = (store.clone(), retention.clone(), memory.clone());
        let work = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            store.enforce_retention(ingest::now_nanos() as i64, &retention, max_disk)?;
            // A bounded number of merges per round, so retention is not
            // starved behind a long merge backlog; none while memory is at
            // its budget (a merge can wait, and needs memory of its own).
            for _ in 0..16 {
                if memory.over_budget() {
                    memory.merge_postponed();
                    break;
                }
                if !store.compact_once(ingest::now_nanos() as i64)? {
                    break;
                }
            }
            Ok(())
        });
        match work.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "storage maintenance failed; will retry"),
            Err(e) => tracing::error!(error = %e, "storage maintenance panicked"),
        }
    }
}

/// Writes due tails to parts every second (or every flush interval, if shorter) and lets the WAL drop what the
/// parts now hold.
async fn flush_loop(ingest: Arc<Ingest>, store: EmbeddedStore, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let store = store.clone();
        match tokio::task::spawn_blocking(move || store.flush(false)).await {
            Ok(Ok(seq)) => {
                if let Err(e) = ingest.committer.remove_through(seq) {
                    tracing::error!(error = %e, "could not remove flushed WAL segments");
                }
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "flush to parts failed; rows stay in memory and in the WAL")
            }
            Err(e) => tracing::error!(error = %e, "flush task panicked"),
        }
    }
}
