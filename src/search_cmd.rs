//! `otelhouse search 'level:error service:api' --since 1h`: the search API
//! from a terminal, against a running server (its URL and an API token),
//! printed as a table or as JSON lines.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::Value;

#[derive(Args)]
pub struct SearchArgs {
    /// The search (search syntax: `level:error service:api "conn reset"`); empty: everything.
    #[arg(default_value = "")]
    query: String,
    /// logs or traces
    #[arg(long, default_value = "logs")]
    signal: String,
    /// How far back, e.g. 15m, 1h, 2d [default: 1h unless --from is given]
    #[arg(long, value_parser = humantime::parse_duration)]
    since: Option<Duration>,
    /// Start of the range (RFC 3339 or unix nanoseconds)
    #[arg(long, conflicts_with = "since")]
    from: Option<String>,
    /// End of the range (RFC 3339 or unix nanoseconds) [default: now]
    #[arg(long)]
    to: Option<String>,
    /// At most this many rows (pages are followed with the API's cursor)
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Columns to show, comma-separated (columns, aliases or attribute keys)
    #[arg(long)]
    columns: Option<String>,
    /// Oldest first
    #[arg(long)]
    asc: bool,
    /// One JSON object per line instead of a table
    #[arg(long)]
    json: bool,
    /// The server's API address
    #[arg(long, env = "OTELHOUSE_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// File holding an API token [default: $OTELHOUSE_API_TOKEN]
    #[arg(long, env = "OTELHOUSE_API_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// CA certificate (PEM) to verify an https:// server with (e.g. from `otelhouse certs init-ca`)
    #[arg(long, env = "OTELHOUSE_CA")]
    ca: Option<PathBuf>,
}

/// The token from the file or the environment; never from a flag, which
/// would show up in `ps` and shell history.
fn token(args: &SearchArgs) -> anyhow::Result<String> {
    if let Some(path) = &args.token_file {
        let t = std::fs::read_to_string(path)
            .with_context(|| format!("reading the API token from {}", path.display()))?;
        return Ok(t.trim().to_string());
    }
    match std::env::var("OTELHOUSE_API_TOKEN") {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        _ => bail!(
            "an API token is needed: set OTELHOUSE_API_TOKEN or pass --token-file (create one with `otelhouse tokens create --name cli`)"
        ),
    }
}

fn default_columns(signal: &str) -> &'static [&'static str] {
    if signal == "traces" {
        &[
            "Timestamp",
            "ServiceName",
            "SpanName",
            "Duration",
            "StatusCode",
        ]
    } else {
        &["Timestamp", "ServiceName", "SeverityText", "Body"]
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.replace(['\n', '\t'], " "),
        other => other.to_string(),
    }
}

pub async fn run(args: SearchArgs) -> anyhow::Result<()> {
    let token = token(&args)?;
    let mut client = reqwest::Client::builder().timeout(Duration::from_secs(60));
    if let Some(ca) = &args.ca {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        client = client.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
    }
    let client = client.build()?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let from = match (&args.from, args.since) {
        (Some(f), _) => f.clone(),
        (None, since) => {
            let since = since.unwrap_or(Duration::from_secs(3600));
            now.saturating_sub(since).as_nanos().to_string()
        }
    };
    let columns = args.columns.clone().unwrap_or_else(|| {
        if args.json {
            String::new()
        } else {
            default_columns(&args.signal).join(",")
        }
    });
    let mut cursor: Option<String> = None;
    let mut printed = 0;
    let mut rows_out = Vec::new();
    let mut keys: Vec<String> = Vec::new();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    while printed < args.limit {
        let page = (args.limit - printed).min(1000);
        let mut query: Vec<(&str, String)> = vec![
            ("signal", args.signal.clone()),
            ("q", args.query.clone()),
            ("from", from.clone()),
            ("limit", page.to_string()),
            ("order", if args.asc { "asc" } else { "desc" }.into()),
        ];
        if let Some(to) = &args.to {
            query.push(("to", to.clone()));
        }
        if !columns.is_empty() {
            query.push(("columns", columns.clone()));
        }
        if let Some(c) = &cursor {
            query.push(("cursor", c.clone()));
        }
        let url = format!("{}/api/v1/search", args.url.trim_end_matches('/'));
        let resp = client
            .get(&url)
            .bearer_auth(&token)
            .query(&query)
            .send()
            .await
            .with_context(|| format!("connecting to {}", args.url))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let msg = body["error"].as_str().unwrap_or("no message").to_string();
            if let Some(pos) = body["position"].as_u64() {
                // Point at the spot in the query.
                eprintln!("  {}", args.query);
                eprintln!("  {}^", " ".repeat(pos.saturating_sub(1) as usize));
            }
            bail!("{status}: {msg}");
        }
        let rows = body["rows"].as_array().cloned().unwrap_or_default();
        keys = body["columns"]
            .as_array()
            .map(|c| {
                c.iter()
                    .filter_map(|k| k.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        printed += rows.len();
        if args.json {
            for r in &rows {
                writeln!(out, "{r}")?;
            }
        } else {
            rows_out.extend(rows);
        }
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    if !args.json {
        let cells: Vec<Vec<String>> = rows_out
            .iter()
            .map(|r| keys.iter().map(|k| cell(&r[k])).collect())
            .collect();
        let widths: Vec<usize> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                cells
                    .iter()
                    .map(|c| c[i].chars().count())
                    .chain([k.len()])
                    .max()
                    .unwrap_or(0)
                    .min(if i + 1 == keys.len() { usize::MAX } else { 40 })
            })
            .collect();
        let line = |vals: &[String]| {
            vals.iter()
                .zip(&widths)
                .map(|(v, w)| {
                    let v: String = v.chars().take(*w).collect();
                    format!("{v:<w$}")
                })
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        };
        writeln!(out, "{}", line(&keys))?;
        for c in &cells {
            writeln!(out, "{}", line(c))?;
        }
        eprintln!(
            "{} row{}",
            cells.len(),
            if cells.len() == 1 { "" } else { "s" }
        );
    }
    Ok(())
}
