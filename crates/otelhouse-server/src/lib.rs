//! `otelhouse serve`: the listeners (OTLP gRPC, OTLP HTTP, API) around the
//! ingest pipeline and the store.

pub mod api;
pub mod config;
pub mod ingest;
pub mod otlp_grpc;
pub mod otlp_http;
pub mod telemetry;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::serve::ListenerExt;
use otelhouse_auth::{Credentials, InitialCredentials, KeyCache};
use otelhouse_schema::Signal;
use otelhouse_storage::retention::RetentionPolicy;
use otelhouse_storage::{EmbeddedStore, StoreOptions};
use otelhouse_wal::{Committer, CommitterOptions, Wal, WalOptions};
use tokio::net::TcpListener;

pub use config::ServeConfig;

use crate::ingest::Ingest;
use crate::telemetry::Telemetry;

/// One listener's setting, with the flag and variable that change it, so
/// errors can say how to fix them.
struct ListenerSpec<'a> {
    addr: &'a str,
    flag: &'static str,
    env: &'static str,
}

async fn bind_all(specs: &[ListenerSpec<'_>]) -> anyhow::Result<Vec<TcpListener>> {
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for s in specs {
        let addr: SocketAddr = s.addr.parse().with_context(|| {
            format!(
                "{} {:?} is not an address like 127.0.0.1:4317 (set --{} or {})",
                s.flag, s.addr, s.flag, s.env
            )
        })?;
        if addr.port() != 0
            && let Some(i) = addrs.iter().position(|a| {
                a.port() == addr.port()
                    && (a.ip() == addr.ip()
                        || a.ip().is_unspecified()
                        || addr.ip().is_unspecified())
            })
        {
            bail!(
                "--{} and --{} both use port {} ({} and {}); give each listener its own port",
                specs[i].flag,
                s.flag,
                addr.port(),
                addrs[i],
                addr
            );
        }
        addrs.push(addr);
    }
    let mut listeners = Vec::new();
    for (s, addr) in specs.iter().zip(addrs) {
        let l = TcpListener::bind(addr).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                anyhow::anyhow!("port {} ({addr}) is already in use by another program; choose another with --{} or {}", addr.port(), s.flag, s.env)
            } else {
                anyhow::anyhow!("cannot listen on {addr} (--{}): {e}", s.flag)
            }
        })?;
        listeners.push(l);
    }
    Ok(listeners)
}

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
            addr: &config.otlp_grpc_addr,
            flag: "otlp-grpc-addr",
            env: "OTELHOUSE_OTLP_GRPC_ADDR",
        },
        ListenerSpec {
            addr: &config.otlp_http_addr,
            flag: "otlp-http-addr",
            env: "OTELHOUSE_OTLP_HTTP_ADDR",
        },
        ListenerSpec {
            addr: &config.http_addr,
            flag: "http-addr",
            env: "OTELHOUSE_HTTP_ADDR",
        },
    ];
    let listeners = bind_all(&specs).await?;
    let data_dir = config.data_dir.clone();
    let creds = Credentials::open(&data_dir)
        .await
        .with_context(|| format!("opening the credential store in {}", data_dir.display()))?;
    let _lock = lock_data_dir(&data_dir)?;
    if !creds.is_initialised().await? {
        let initial = creds.initialise().await?;
        print_credentials_box(&initial);
    }
    let keys = KeyCache::load(creds.clone()).await?;
    let _refresh = AbortOnDrop(keys.spawn_refresh(Duration::from_secs(1)));

    let s = &config.storage;
    let store = EmbeddedStore::open(
        &data_dir,
        StoreOptions {
            flush_rows: s.flush_rows,
            flush_bytes: s.flush_bytes,
            flush_interval: s.flush_interval,
            max_tail_bytes: s.max_memory_bytes,
            max_query_memory_bytes: s.max_query_memory_bytes,
            query_timeout: s.query_timeout,
        },
    )?;
    tracing::info!(
        write_buffer_mib = s.max_memory_bytes >> 20,
        query_memory_mib = s.max_query_memory_bytes >> 20,
        max_disk_bytes = s.max_disk_bytes.unwrap_or(0),
        "memory and disk budgets (max_disk_bytes 0: none)"
    );
    let retention = Arc::new(RetentionPolicy::new(
        config.retention.logs,
        config.retention.traces,
        config.retention.metrics,
    ));
    apply_retention_overrides(&data_dir, &config.retention, &retention, true)?;
    let started = std::time::Instant::now();
    let mut replay_error = None;
    let (wal, recovery) = Wal::open(
        &data_dir.join("wal"),
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
    tracing::info!(
        entries = recovery.entries,
        truncated_bytes = recovery.truncated_bytes,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "write-ahead log replayed"
    );
    let committer = Committer::start(
        wal,
        store.applier(),
        CommitterOptions {
            max_queue_bytes: s.max_queue_bytes,
            max_wal_bytes: s.max_wal_bytes,
            ..Default::default()
        },
    );
    let telemetry = Arc::new(Telemetry::new(committer.stats().clone(), store.clone()));
    let ingest = Arc::new(Ingest::new(
        committer,
        store.clone(),
        config.limits.clone(),
        retention.clone(),
        telemetry.clone(),
        s.max_inflight_requests,
    ));

    let flusher = tokio::spawn(flush_loop(
        ingest.clone(),
        s.flush_interval.min(Duration::from_secs(1)),
    ));
    let maintainer = tokio::spawn(maintenance_loop(
        store.clone(),
        data_dir.clone(),
        config.retention.clone(),
        retention.clone(),
        s.max_disk_bytes,
        s.maintenance_interval,
    ));

    let [grpc_l, http_l, api_l]: [TcpListener; 3] = listeners
        .try_into()
        .map_err(|_| anyhow::anyhow!("three listeners"))?;
    let addrs = serde_json::json!({
        "otlp_grpc": grpc_l.local_addr()?.to_string(),
        "otlp_http": http_l.local_addr()?.to_string(),
        "http": api_l.local_addr()?.to_string(),
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
    let grpc_routes = otlp_grpc::routes(grpc_svc);
    let grpc = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(otlp_grpc::cap_request_bytes(
                config.limits.max_request_bytes,
            ))
            .add_routes(grpc_routes)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(grpc_l).with_nodelay(Some(true)),
                stopped(stop_rx.clone()),
            ),
    );
    let http_router = otlp_http::router(otlp_http::OtlpHttpState {
        ingest: ingest.clone(),
        keys: keys.clone(),
    });
    let http = tokio::spawn(
        axum::serve(http_l.tap_io(no_delay), http_router)
            .with_graceful_shutdown(stopped(stop_rx.clone()))
            .into_future(),
    );
    let storage: Arc<dyn otelhouse_storage::Storage> = Arc::new(store.clone());
    let api_router = api::router(api::ApiState {
        storage,
        keys: keys.clone(),
        telemetry,
    });
    let api = tokio::spawn(
        axum::serve(api_l.tap_io(no_delay), api_router)
            .with_graceful_shutdown(stopped(stop_rx))
            .into_future(),
    );

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
    flusher.abort();
    maintainer.abort();
    ingest.committer.shutdown();
    let store2 = store.clone();
    let seq = tokio::task::spawn_blocking(move || store2.flush(true)).await??;
    ingest.committer.remove_through(seq)?;
    creds.close().await;
    let _ = std::fs::remove_file(data_dir.join("listen.json"));
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Small responses (acks) go out at once instead of waiting on Nagle.
fn no_delay(tcp: &mut tokio::net::TcpStream) {
    let _ = tcp.set_nodelay(true);
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
        let (store, retention) = (store.clone(), retention.clone());
        let work = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            store.enforce_retention(ingest::now_nanos() as i64, &retention, max_disk)?;
            // A bounded number of merges per round, so retention is not
            // starved behind a long merge backlog.
            for _ in 0..16 {
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
async fn flush_loop(ingest: Arc<Ingest>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let store = ingest.store.clone();
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
