//! Replays pre-encoded payloads into a running server over OTLP/gRPC or OTLP/HTTP
//! from concurrent tasks, each sending one batch at a time and timing its acknowledgement.

use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::{BufMut as _, Bytes, BytesMut};
use hdrhistogram::Histogram;
use http::header::{
    AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER, TE,
};
use http_body_util::{BodyExt as _, Full};
use tonic::codegen::Service as _;
use tonic::transport::{Channel, Endpoint};

use crate::procstat;
use crate::signal::{Payload, Signal};

/// Wait before resending a throttled batch when the server gives no Retry-After.
const DEFAULT_BACKOFF: Duration = Duration::from_millis(50);
/// Errors printed to stderr; later ones are only counted.
const PRINTED_ERRORS: u64 = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    Grpc,
    Http,
}

/// When to stop sending.
#[derive(Clone, Copy, Debug)]
pub enum Limit {
    Duration(Duration),
    /// Stop once this many records were handed out (rounded up to whole batches).
    Records(u64),
}

#[derive(Clone, Debug)]
pub struct SendConfig {
    pub signal: Signal,
    pub protocol: Protocol,
    /// `host:port` or a URL such as `http://host:port`.
    pub endpoint: String,
    /// Value of the `authorization` header.
    pub key: Option<String>,
    pub concurrency: usize,
    pub limit: Limit,
    /// Server process whose CPU time and peak RSS are reported.
    pub server_pid: Option<u32>,
}

#[derive(Debug)]
pub struct SendReport {
    /// Records in acknowledged batches.
    pub records: u64,
    pub batches: u64,
    pub seconds: f64,
    /// Acknowledgement latency per batch, in microseconds.
    pub latency_us: Histogram<u64>,
    pub throttled: u64,
    pub errors: u64,
    pub server_cpu_seconds: Option<f64>,
    pub server_peak_rss_mb: Option<f64>,
}

impl SendReport {
    pub fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.seconds
    }

    /// Acknowledgement latency quantile in milliseconds.
    pub fn ack_ms(&self, quantile: f64) -> f64 {
        self.latency_us.value_at_quantile(quantile) as f64 / 1000.0
    }
}

/// Sends every payload of `payloads` exactly once (resending throttled ones
/// until accepted), in order, from `config.concurrency` connections; for
/// loading a dataset. `config.limit` is ignored.
pub async fn replay(
    config: &SendConfig,
    payloads: impl Iterator<Item = anyhow::Result<Payload>> + Send + 'static,
) -> anyhow::Result<SendReport> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Payload>(4 * config.concurrency.max(1));
    let protocol = config.protocol;
    let reader = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        for p in payloads {
            let p = match protocol {
                Protocol::Grpc => grpc_frame(p?),
                Protocol::Http => p?,
            };
            if tx.blocking_send(p).is_err() {
                break;
            }
        }
        Ok(())
    });
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let cpu_before = config
        .server_pid
        .and_then(|p| procstat::cpu_seconds(p).ok());
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..config.concurrency.max(1) {
        let mut transport = Transport::connect(config, true).await?;
        let rx = rx.clone();
        workers.push(tokio::spawn(async move {
            let mut stats = Stats::new();
            loop {
                let Some(payload) = rx.lock().await.recv().await else {
                    break;
                };
                let retry = |wait: Duration| Some(wait.min(Duration::from_secs(1)));
                if let Err(error) = deliver(&mut transport, &payload, &mut stats, retry).await {
                    eprintln!("a batch failed and is not stored: {error}");
                }
            }
            stats
        }));
    }
    let mut total = Stats::new();
    for w in workers {
        total.merge(&w.await?);
    }
    reader.await??;
    Ok(report(config, total, started, cpu_before))
}

/// Sends `payloads` round-robin until `config.limit` is reached and reports the results.
pub async fn run(config: &SendConfig, payloads: Vec<Payload>) -> anyhow::Result<SendReport> {
    anyhow::ensure!(!payloads.is_empty(), "no payloads");
    anyhow::ensure!(config.concurrency > 0, "concurrency must be positive");
    let gzip = payloads[0].gzip;
    let payloads: Arc<[Payload]> = match config.protocol {
        Protocol::Grpc => payloads.into_iter().map(grpc_frame).collect(),
        Protocol::Http => payloads.into(),
    };
    let mut transports = Vec::with_capacity(config.concurrency);
    for _ in 0..config.concurrency {
        transports.push(Transport::connect(config, gzip).await?);
    }

    let cpu_before = config
        .server_pid
        .map(procstat::cpu_seconds)
        .transpose()
        .context("reading server CPU time")?;
    let start = Instant::now();
    let shared = Arc::new(Shared::new(config.limit, start));
    let tasks: Vec<_> = (transports.into_iter().enumerate())
        .map(|(i, transport)| {
            let first = i * payloads.len() / config.concurrency;
            tokio::spawn(worker(transport, payloads.clone(), first, shared.clone()))
        })
        .collect();
    let mut total = Stats::new();
    for task in tasks {
        total.merge(&task.await?);
    }
    Ok(report(config, total, start, cpu_before))
}

/// The report of a finished run that started at `start`, with the server's
/// CPU time since `cpu_before` and its peak RSS.
fn report(
    config: &SendConfig,
    total: Stats,
    start: Instant,
    cpu_before: Option<f64>,
) -> SendReport {
    let seconds = start.elapsed().as_secs_f64();
    // The server may have gone away meanwhile: keep the report, without its numbers.
    let after = |read: fn(u32) -> std::io::Result<f64>| {
        let pid = config.server_pid?;
        read(pid)
            .inspect_err(|e| eprintln!("warning: reading /proc/{pid}: {e}"))
            .ok()
    };
    let (cpu_after, server_peak_rss_mb) =
        (after(procstat::cpu_seconds), after(procstat::peak_rss_mb));
    SendReport {
        records: total.records,
        batches: total.latency_us.len(),
        seconds,
        latency_us: total.latency_us,
        throttled: total.throttled,
        errors: total.errors,
        server_cpu_seconds: cpu_after
            .zip(cpu_before)
            .map(|(after, before)| after - before),
        server_peak_rss_mb,
    }
}

/// State shared by the workers: the stop condition and the error budget for printing.
struct Shared {
    deadline: Option<Instant>,
    record_limit: Option<u64>,
    claimed: AtomicU64,
    errors: AtomicU64,
}

impl Shared {
    fn new(limit: Limit, start: Instant) -> Self {
        let (deadline, record_limit) = match limit {
            Limit::Duration(d) => (Some(start + d), None),
            Limit::Records(n) => (None, Some(n)),
        };
        Shared {
            deadline,
            record_limit,
            claimed: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }

    /// Whether another batch of `records` may be sent.
    fn claim(&self, records: usize) -> bool {
        !self.expired()
            && self.record_limit.is_none_or(|limit| {
                self.claimed.fetch_add(records as u64, Ordering::Relaxed) < limit
            })
    }

    fn expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Time until the deadline, capped at `wait`.
    fn capped(&self, wait: Duration) -> Duration {
        self.deadline.map_or(wait, |d| {
            wait.min(d.saturating_duration_since(Instant::now()))
        })
    }

    fn report_error(&self, error: &str) {
        if self.errors.fetch_add(1, Ordering::Relaxed) < PRINTED_ERRORS {
            eprintln!("error: {error}");
        }
    }
}

struct Stats {
    latency_us: Histogram<u64>,
    records: u64,
    throttled: u64,
    errors: u64,
}

impl Stats {
    fn new() -> Self {
        let latency_us =
            Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds");
        Stats {
            latency_us,
            records: 0,
            throttled: 0,
            errors: 0,
        }
    }

    fn merge(&mut self, other: &Stats) {
        self.latency_us
            .add(&other.latency_us)
            .expect("same histogram bounds");
        self.records += other.records;
        self.throttled += other.throttled;
        self.errors += other.errors;
    }
}

async fn worker(
    mut transport: Transport,
    payloads: Arc<[Payload]>,
    first: usize,
    shared: Arc<Shared>,
) -> Stats {
    let mut stats = Stats::new();
    for payload in payloads.iter().cycle().skip(first) {
        if !shared.claim(payload.records) {
            break;
        }
        let retry = |wait| (!shared.expired()).then(|| shared.capped(wait));
        if let Err(error) = deliver(&mut transport, payload, &mut stats, retry).await {
            shared.report_error(&error);
        }
    }
    stats
}

/// Sends one batch, resending it while the server throttles and `retry`
/// gives a wait (None: give up); counts the outcome in `stats`.
async fn deliver(
    transport: &mut Transport,
    payload: &Payload,
    stats: &mut Stats,
    retry: impl Fn(Duration) -> Option<Duration>,
) -> Result<(), String> {
    loop {
        let started = Instant::now();
        match transport.send(payload.body.clone()).await {
            Outcome::Acked => {
                stats
                    .latency_us
                    .saturating_record(started.elapsed().as_micros() as u64);
                stats.records += payload.records as u64;
                return Ok(());
            }
            Outcome::Throttled(wait) => {
                stats.throttled += 1;
                match retry(wait) {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => return Ok(()),
                }
            }
            Outcome::Failed(error) => {
                stats.errors += 1;
                return Err(error);
            }
        }
    }
}

enum Outcome {
    Acked,
    /// Server backpressure: resend the same batch after the wait.
    Throttled(Duration),
    Failed(String),
}

/// One connection to the server (an HTTP/2 channel or an HTTP/1.1 client) with the
/// request headers it sends.
enum Transport {
    Grpc {
        channel: Channel,
        path: &'static str,
        headers: HeaderMap,
    },
    Http {
        client: reqwest::Client,
        url: String,
        headers: HeaderMap,
    },
}

impl Transport {
    async fn connect(config: &SendConfig, gzip: bool) -> anyhow::Result<Self> {
        let base = base_url(&config.endpoint);
        let mut headers = HeaderMap::new();
        if let Some(key) = &config.key {
            headers.insert(
                AUTHORIZATION,
                HeaderValue::from_str(key).context("invalid key")?,
            );
        }
        Ok(match config.protocol {
            Protocol::Grpc => {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
                headers.insert(TE, HeaderValue::from_static("trailers"));
                if gzip {
                    headers.insert("grpc-encoding", HeaderValue::from_static("gzip"));
                }
                let endpoint = Endpoint::from_shared(base.clone())?.tcp_nodelay(true);
                let channel = endpoint
                    .connect()
                    .await
                    .with_context(|| format!("connecting to {base}"))?;
                Transport::Grpc {
                    channel,
                    path: config.signal.grpc_path(),
                    headers,
                }
            }
            Protocol::Http => {
                headers.insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/x-protobuf"),
                );
                if gzip {
                    headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                }
                let client = reqwest::Client::builder().tcp_nodelay(true).build()?;
                Transport::Http {
                    client,
                    url: format!("{base}{}", config.signal.http_path()),
                    headers,
                }
            }
        })
    }

    async fn send(&mut self, body: Bytes) -> Outcome {
        let result = match self {
            Transport::Grpc {
                channel,
                path,
                headers,
            } => grpc_send(channel, path, headers, body).await,
            Transport::Http {
                client,
                url,
                headers,
            } => http_send(client, url, headers, body).await,
        };
        result.unwrap_or_else(|e| Outcome::Failed(error_chain(e.as_ref())))
    }
}

type BoxError = Box<dyn Error + Send + Sync>;

/// A unary gRPC call with a pre-encoded (and possibly pre-compressed) message frame.
async fn grpc_send(
    channel: &mut Channel,
    path: &str,
    headers: &HeaderMap,
    frame: Bytes,
) -> Result<Outcome, BoxError> {
    let mut request = http::Request::post(path).body(tonic::body::Body::new(Full::new(frame)))?;
    *request.headers_mut() = headers.clone();
    std::future::poll_fn(|cx| channel.poll_ready(cx)).await?;
    let (parts, body) = channel.call(request).await?.into_parts();
    let trailers = body
        .collect()
        .await?
        .trailers()
        .cloned()
        .unwrap_or_default();
    if !parts.status.is_success() {
        return Ok(Outcome::Failed(format!("HTTP {}", parts.status)));
    }
    // A trailers-only response carries the status in the headers.
    let header = |name: &str| {
        trailers
            .get(name)
            .or_else(|| parts.headers.get(name))
            .and_then(|v| v.to_str().ok())
    };
    Ok(match header("grpc-status").map(str::parse::<i32>) {
        Some(Ok(0)) => Outcome::Acked,
        // UNAVAILABLE, RESOURCE_EXHAUSTED
        Some(Ok(14 | 8)) => Outcome::Throttled(DEFAULT_BACKOFF),
        Some(Ok(code)) => {
            let message = percent_decode(header("grpc-message").unwrap_or_default());
            Outcome::Failed(format!("gRPC status {code}: {message}"))
        }
        _ => Outcome::Failed("response without a valid grpc-status".into()),
    })
}

async fn http_send(
    client: &reqwest::Client,
    url: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Outcome, BoxError> {
    let response = client
        .post(url)
        .headers(headers.clone())
        .body(body)
        .send()
        .await?;
    let status = response.status();
    let retry_after = (response.headers().get(RETRY_AFTER))
        .and_then(|v| v.to_str().ok()?.trim().parse::<f64>().ok())
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok());
    let text = response.bytes().await?;
    Ok(match status.as_u16() {
        200..=299 => Outcome::Acked,
        429 | 503 => Outcome::Throttled(retry_after.unwrap_or(DEFAULT_BACKOFF)),
        _ => {
            let text = String::from_utf8_lossy(&text[..text.len().min(300)]);
            Outcome::Failed(format!("HTTP {status}: {}", text.trim()))
        }
    })
}

/// Prefixes the message with the gRPC length-prefixed-message header.
fn grpc_frame(payload: Payload) -> Payload {
    let mut frame = BytesMut::with_capacity(5 + payload.body.len());
    frame.put_u8(u8::from(payload.gzip));
    frame.put_u32(u32::try_from(payload.body.len()).expect("payload under 4 GiB"));
    frame.put_slice(&payload.body);
    Payload {
        body: frame.freeze(),
        ..payload
    }
}

/// Decodes the percent-encoding of a `grpc-message`.
fn percent_decode(text: &str) -> String {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        let hex = tail
            .get(..2)
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (first, hex) {
            (b'%', Some(byte)) => {
                bytes.push(byte);
                rest = &tail[2..];
            }
            _ => {
                bytes.push(first);
                rest = tail;
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn base_url(endpoint: &str) -> String {
    let endpoint = endpoint.trim_end_matches('/');
    if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("http://{endpoint}")
    }
}

fn error_chain(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_limit_is_rounded_up_to_batches() {
        let shared = Shared::new(Limit::Records(250), Instant::now());
        assert_eq!((0..5).filter(|_| shared.claim(100)).count(), 3);
    }

    #[test]
    fn duration_limit_expires() {
        let shared = Shared::new(Limit::Duration(Duration::ZERO), Instant::now());
        assert!(!shared.claim(1));
    }

    #[test]
    fn frames_and_urls() {
        let framed = grpc_frame(Payload {
            body: Bytes::from_static(b"abc"),
            gzip: true,
            records: 1,
        });
        assert_eq!(&framed.body[..], b"\x01\x00\x00\x00\x03abc");
        assert_eq!(base_url("127.0.0.1:4317"), "http://127.0.0.1:4317");
        assert_eq!(base_url("https://h:1/"), "https://h:1");
        assert_eq!(percent_decode("bad%20key%3A 100%"), "bad key: 100%");
    }
}
