use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use otelhouse_loadgen::send::{self, Limit, Protocol, SendConfig, SendReport};
use otelhouse_loadgen::{Payload, Signal, Stage, build_payloads, decode_baseline};
use serde_json::json;

// The ingest path allocates many small strings per record (protobuf decode,
// Arrow builders); mimalloc is markedly faster at that than glibc's malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load generator for otelhouse: replays generated OTLP log and span batches into a
/// running server, or measures a decode-only baseline over the same payloads.
#[derive(Parser)]
#[command(name = "otelhouse-loadgen", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send pre-generated batches from concurrent tasks as fast as the server
    /// acknowledges them; print records/s, ack latency and server CPU/RSS.
    Send(SendArgs),
    /// Decode-only baseline: gunzip (with --gzip) and protobuf-decode the same
    /// payloads in one thread; print records/s.
    Decode(DecodeArgs),
    /// Write the benchmark dataset (logs and spans over a time window, in
    /// time order) to a directory.
    Dataset(DatasetArgs),
    /// Send a dataset written by `dataset` to a server, every batch once.
    Replay(ReplayArgs),
}

#[derive(Args)]
struct DatasetArgs {
    /// Directory to write.
    #[arg(long)]
    out: std::path::PathBuf,
    #[arg(long, default_value_t = 10_000_000)]
    logs: usize,
    #[arg(long, default_value_t = 2_000_000)]
    spans: usize,
    /// Length of the window, ending now.
    #[arg(long, default_value_t = 24)]
    hours: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// One log body in this many carries the rare token.
    #[arg(long, default_value_t = 1_000_000)]
    rare_every: usize,
}

#[derive(Args)]
struct ReplayArgs {
    /// Directory written by `dataset`.
    #[arg(long)]
    dir: std::path::PathBuf,
    /// OTLP/gRPC host:port.
    #[arg(long, default_value = "127.0.0.1:4317")]
    endpoint: String,
    #[arg(long)]
    key: Option<String>,
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    #[arg(long)]
    server_pid: Option<u32>,
}

#[derive(Args)]
struct PayloadArgs {
    /// Signal to generate.
    #[arg(long, value_enum, default_value_t = Signal::Logs)]
    signal: Signal,
    /// Gzip-compress the payloads (once, up front).
    #[arg(long)]
    gzip: bool,
    /// Records (log records or spans) per batch.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Distinct batches generated up front and replayed round-robin.
    #[arg(long, default_value_t = 64)]
    payloads: usize,
    /// Generator seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also print the results as one JSON line.
    #[arg(long)]
    json: bool,
}

impl PayloadArgs {
    fn build(&self) -> Vec<Payload> {
        build_payloads(
            self.signal,
            self.seed,
            self.payloads.max(1),
            self.batch.max(1),
            self.gzip,
        )
    }
}

#[derive(Args)]
struct SendArgs {
    #[command(flatten)]
    payload: PayloadArgs,
    /// OTLP transport.
    #[arg(long, value_enum, default_value_t = Protocol::Grpc)]
    protocol: Protocol,
    /// Server host:port or URL [default: 127.0.0.1:4317 for gRPC, 127.0.0.1:4318 for HTTP].
    #[arg(long)]
    endpoint: Option<String>,
    /// Value of the authorization header (the ingest API key).
    #[arg(long)]
    key: Option<String>,
    /// Concurrent senders, each with its own connection and one batch in flight.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// How long to send, e.g. 20s, 500ms, 2m.
    #[arg(long, default_value = "20s", value_parser = parse_duration, conflicts_with = "records")]
    duration: Duration,
    /// Stop after this many records (whole batches) instead of after --duration.
    #[arg(long)]
    records: Option<u64>,
    /// PID of the server, to report its CPU seconds and peak RSS (Linux /proc).
    #[arg(long)]
    server_pid: Option<u32>,
}

#[derive(Args)]
struct DecodeArgs {
    #[command(flatten)]
    payload: PayloadArgs,
    /// How long to decode, in seconds.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// decode: protobuf only (the baseline); pipeline: the server's whole
    /// pre-WAL work (decode, validate, window, convert to Arrow).
    #[arg(long, value_enum, default_value_t = Stage::Decode)]
    stage: Stage,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Send(args) => send_command(args),
        Command::Decode(args) => {
            decode_command(&args);
            Ok(())
        }
        Command::Dataset(args) => {
            let end = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_nanos() as u64;
            let spec = otelhouse_loadgen::dataset::Spec {
                logs: args.logs,
                spans: args.spans,
                hours: args.hours,
                end,
                seed: args.seed,
                batch: args.batch,
                rare_every: args.rare_every,
            };
            let summary = otelhouse_loadgen::dataset::write(&args.out, &spec)?;
            println!("{}", serde_json::to_string(&summary)?);
            Ok(())
        }
        Command::Replay(args) => replay_command(args),
    }
}

/// Logs then spans, each every batch once; one JSON line per signal.
fn replay_command(args: ReplayArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    for signal in [Signal::Logs, Signal::Traces] {
        let config = SendConfig {
            signal,
            protocol: Protocol::Grpc,
            endpoint: args.endpoint.clone(),
            key: args.key.clone(),
            concurrency: args.concurrency,
            limit: Limit::Records(u64::MAX),
            server_pid: args.server_pid,
        };
        let batches = otelhouse_loadgen::dataset::read(&args.dir, signal)?;
        let report = rt.block_on(send::replay(&config, batches))?;
        anyhow::ensure!(report.errors == 0, "{} batches failed", report.errors);
        println!("{}", send_json(&config, true, &report));
    }
    Ok(())
}

fn send_command(args: SendArgs) -> anyhow::Result<()> {
    let default_endpoint = match args.protocol {
        Protocol::Grpc => "127.0.0.1:4317",
        Protocol::Http => "127.0.0.1:4318",
    };
    let config = SendConfig {
        signal: args.payload.signal,
        protocol: args.protocol,
        endpoint: args.endpoint.unwrap_or_else(|| default_endpoint.to_owned()),
        key: args.key,
        concurrency: args.concurrency,
        limit: args
            .records
            .map_or(Limit::Duration(args.duration), Limit::Records),
        server_pid: args.server_pid,
    };
    let payloads = args.payload.build();
    let report = tokio::runtime::Runtime::new()?.block_on(send::run(&config, payloads))?;
    print_send_report(&config, args.payload.gzip, &report);
    if args.payload.json {
        println!("{}", send_json(&config, args.payload.gzip, &report));
    }
    Ok(())
}

fn print_send_report(config: &SendConfig, gzip: bool, r: &SendReport) {
    let (signal, protocol) = (config.signal.name(), protocol_name(config.protocol));
    let gzip = if gzip { "+gzip" } else { "" };
    println!(
        "{signal} over {protocol}{gzip}: {} records in {:.2} s = {:.0} records/s",
        r.records,
        r.seconds,
        r.records_per_sec()
    );
    println!(
        "ack latency p50 {:.2} ms, p99 {:.2} ms over {} batches; throttled {}, errors {}",
        r.ack_ms(0.5),
        r.ack_ms(0.99),
        r.batches,
        r.throttled,
        r.errors
    );
    if let (Some(cpu), Some(rss)) = (r.server_cpu_seconds, r.server_peak_rss_mb) {
        let per_cpu = r.records as f64 / cpu;
        println!(
            "server: {cpu:.2} CPU s, peak RSS {rss:.1} MB, {per_cpu:.0} records per server CPU second"
        );
    }
}

fn send_json(config: &SendConfig, gzip: bool, r: &SendReport) -> serde_json::Value {
    json!({
        "signal": config.signal.name(),
        "protocol": protocol_name(config.protocol),
        "gzip": gzip,
        "records": r.records,
        "seconds": r.seconds,
        "records_per_sec": r.records_per_sec(),
        "ack_p50_ms": r.ack_ms(0.5),
        "ack_p99_ms": r.ack_ms(0.99),
        "throttled": r.throttled,
        "errors": r.errors,
        "server_cpu_seconds": r.server_cpu_seconds,
        "server_peak_rss_mb": r.server_peak_rss_mb,
        "records_per_server_cpu_second": r.server_cpu_seconds.map(|cpu| r.records as f64 / cpu),
    })
}

fn decode_command(args: &DecodeArgs) {
    let p = &args.payload;
    let rate = decode_baseline(p.signal, &p.build(), args.seconds, args.stage);
    let gzip = if p.gzip { "+gzip" } else { "" };
    let stage = match args.stage {
        Stage::Decode => "decode",
        Stage::Pipeline => "pipeline",
    };
    println!(
        "{stage} {}{gzip}, batches of {}: {rate:.0} records/s",
        p.signal.name(),
        p.batch
    );
    if p.json {
        let line = json!({"mode": stage, "signal": p.signal.name(), "gzip": p.gzip, "batch": p.batch, "records_per_sec": rate});
        println!("{line}");
    }
}

fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Grpc => "grpc",
        Protocol::Http => "http",
    }
}

/// Parses `20s`, `500ms`, `2m`, `1h` or a plain number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}"))?;
    let seconds = match unit.trim() {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" | "min" => number * 60.0,
        "h" => number * 3600.0,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} (use ms, s, m or h)"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn records_conflict_with_duration() {
        let parse =
            |args: &[&str]| Cli::try_parse_from([&["otelhouse-loadgen", "send"], args].concat());
        assert!(parse(&["--records", "10"]).is_ok());
        assert!(parse(&["--records", "10", "--duration", "5s"]).is_err());
    }
}
