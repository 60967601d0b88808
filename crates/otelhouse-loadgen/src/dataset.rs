//! The benchmark dataset shared by every storage benchmark: logs and spans
//! spread evenly over a time window (default: 10 M logs and 2 M spans over
//! the 24 h before `end`), from one generator so logs carry the trace ids
//! of spans generated just before them, with a rare token planted in a few
//! log bodies for full-text searches.
//!
//! On disk: `<dir>/dataset.json` (the spec and counts) and one file per
//! signal (`logs.batches`, `traces.batches`) of frames
//! `[u32 records][u32 length][gzip'd protobuf export request]`, in time order.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use bytes::Bytes;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::Generator;
use crate::signal::{Payload, Signal, gzip};

/// The token planted in every `rare_every`-th log body. No template or
/// generated value contains it.
pub const RARE_TOKEN: &str = "qzxrare7";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Spec {
    pub logs: usize,
    pub spans: usize,
    pub hours: u64,
    /// End of the window, unix nanoseconds.
    pub end: u64,
    pub seed: u64,
    /// Records per export request.
    pub batch: usize,
    /// One log body in this many gets [`RARE_TOKEN`].
    pub rare_every: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub spec: Spec,
    pub log_batches: usize,
    pub span_batches: usize,
    /// Log records whose body holds [`RARE_TOKEN`].
    pub rare_logs: usize,
    /// A trace id (hex) that has spans and logs, for trace lookups.
    pub sample_trace_id: String,
}

fn file_name(signal: Signal) -> &'static str {
    match signal {
        Signal::Logs => "logs.batches",
        Signal::Traces => "traces.batches",
    }
}

fn write_frame(out: &mut impl Write, records: usize, protobuf: &[u8]) -> std::io::Result<()> {
    let body = gzip(protobuf);
    out.write_all(&(records as u32).to_le_bytes())?;
    out.write_all(&(body.len() as u32).to_le_bytes())?;
    out.write_all(&body)
}

/// Generates the dataset into `dir` (created if missing).
pub fn write(dir: &Path, spec: &Spec) -> anyhow::Result<Summary> {
    anyhow::ensure!(
        spec.batch > 0 && spec.hours > 0,
        "batch and hours must be positive"
    );
    std::fs::create_dir_all(dir)?;
    let mut logs_out = BufWriter::new(File::create(dir.join(file_name(Signal::Logs)))?);
    let mut spans_out = BufWriter::new(File::create(dir.join(file_name(Signal::Traces)))?);
    let mut g = Generator::new(spec.seed);
    let log_batches = spec.logs.div_ceil(spec.batch);
    let span_batches = spec.spans.div_ceil(spec.batch);
    let window = spec.hours * 3_600_000_000_000;
    let start = spec.end - window;
    // The window is cut into one slice per log batch; span batches are
    // spread over the same slices, each generated just before the logs of
    // its slice so those logs can carry its trace ids.
    let slices = log_batches.max(span_batches).max(1);
    let slice = window / slices as u64;
    let (mut logs_left, mut spans_left) = (spec.logs, spec.spans);
    let (mut spans_done, mut logs_done) = (0usize, 0usize);
    let mut rare_logs = 0;
    let mut log_index = 0usize;
    let mut sample_trace_id = String::new();
    for k in 0..slices {
        let range = (start + k as u64 * slice, start + (k as u64 + 1) * slice - 1);
        while spans_done * slices < (k + 1) * span_batches && spans_left > 0 {
            let n = spec.batch.min(spans_left);
            let req = g.spans_request(n, range);
            if sample_trace_id.is_empty() && k >= slices / 2 {
                let id = &req.resource_spans[0].scope_spans[0].spans[0].trace_id;
                sample_trace_id = id.iter().map(|b| format!("{b:02x}")).collect();
            }
            write_frame(&mut spans_out, n, &req.encode_to_vec())?;
            spans_left -= n;
            spans_done += 1;
        }
        while logs_done * slices < (k + 1) * log_batches && logs_left > 0 {
            let n = spec.batch.min(logs_left);
            let mut req = g.logs_request(n, range);
            for rl in &mut req.resource_logs {
                for sl in &mut rl.scope_logs {
                    for r in &mut sl.log_records {
                        log_index += 1;
                        if spec.rare_every > 0
                            && log_index.is_multiple_of(spec.rare_every)
                            && let Some(Value::StringValue(body)) =
                                r.body.as_mut().and_then(|b| b.value.as_mut())
                        {
                            body.push(' ');
                            body.push_str(RARE_TOKEN);
                            rare_logs += 1;
                        }
                    }
                }
            }
            write_frame(&mut logs_out, n, &req.encode_to_vec())?;
            logs_left -= n;
            logs_done += 1;
        }
    }
    logs_out.flush()?;
    spans_out.flush()?;
    let summary = Summary {
        spec: spec.clone(),
        log_batches,
        span_batches,
        rare_logs,
        sample_trace_id,
    };
    std::fs::write(
        dir.join("dataset.json"),
        serde_json::to_vec_pretty(&summary)?,
    )?;
    Ok(summary)
}

pub fn summary(dir: &Path) -> anyhow::Result<Summary> {
    let path = dir.join("dataset.json");
    let text = std::fs::read(&path).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e} (generate it with `otelhouse-loadgen dataset`)",
            path.display()
        )
    })?;
    Ok(serde_json::from_slice(&text)?)
}

/// The batches of one signal, in time order, as gzip'd payloads.
pub fn read(
    dir: &Path,
    signal: Signal,
) -> anyhow::Result<impl Iterator<Item = anyhow::Result<Payload>> + use<>> {
    let mut input = BufReader::new(File::open(dir.join(file_name(signal)))?);
    Ok(std::iter::from_fn(move || {
        let mut head = [0u8; 8];
        match input.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
            Err(e) => return Some(Err(e.into())),
        }
        let records = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        let len = u32::from_le_bytes(head[4..].try_into().expect("4 bytes")) as usize;
        let mut body = vec![0; len];
        Some(
            input
                .read_exact(&mut body)
                .map_err(Into::into)
                .map(|()| Payload {
                    body: Bytes::from(body),
                    gzip: true,
                    records,
                }),
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_dataset_round_trips_with_its_counts_and_rare_token() {
        let dir = tempfile::tempdir().unwrap();
        let spec = Spec {
            logs: 2_300,
            spans: 700,
            hours: 2,
            end: 1_800_000_000_000_000_000,
            seed: 5,
            batch: 500,
            rare_every: 1_000,
        };
        let summary = write(dir.path(), &spec).unwrap();
        assert_eq!((summary.log_batches, summary.span_batches), (5, 2));
        assert_eq!(summary.rare_logs, 2);
        assert_eq!(summary.sample_trace_id.len(), 32);
        assert_eq!(super::summary(dir.path()).unwrap(), summary);
        let mut scratch = Vec::new();
        let mut logs = 0;
        let mut rare = 0;
        let slice = 2 * 3_600_000_000_000 / 5;
        for (k, p) in read(dir.path(), Signal::Logs).unwrap().enumerate() {
            let p = p.unwrap();
            let req =
                opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest::decode(
                    p.protobuf(&mut scratch).unwrap(),
                )
                .unwrap();
            let times: Vec<u64> = req
                .resource_logs
                .iter()
                .flat_map(|r| &r.scope_logs)
                .flat_map(|s| &s.log_records)
                .map(|r| r.time_unix_nano)
                .collect();
            assert_eq!(times.len(), p.records);
            let min = *times.iter().min().unwrap();
            assert!(
                min >= spec.end - 2 * 3_600_000_000_000 && *times.iter().max().unwrap() < spec.end
            );
            let slice_start = spec.end - 2 * 3_600_000_000_000 + k as u64 * slice;
            assert!(min >= slice_start, "batches come in time order");
            logs += p.records;
            rare += format!("{req:?}").matches(RARE_TOKEN).count();
        }
        assert_eq!((logs, rare), (2_300, 2));
        let spans: usize = read(dir.path(), Signal::Traces)
            .unwrap()
            .map(|p| p.unwrap().records)
            .sum();
        assert_eq!(spans, 700);
    }
}
