//! The signal (logs or traces) as a parameter: generation, encoding, decoding and
//! wire paths, plus the pre-encoded payload pool and the decode-only baseline.

use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use crate::r#gen::{Generator, log_count, recent_range, span_count};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Signal {
    Logs,
    Traces,
}

impl Signal {
    pub fn name(self) -> &'static str {
        match self {
            Signal::Logs => "logs",
            Signal::Traces => "traces",
        }
    }

    /// OTLP/HTTP path.
    pub fn http_path(self) -> &'static str {
        match self {
            Signal::Logs => "/v1/logs",
            Signal::Traces => "/v1/traces",
        }
    }

    /// OTLP/gRPC method path.
    pub fn grpc_path(self) -> &'static str {
        match self {
            Signal::Logs => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
            Signal::Traces => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        }
    }

    /// Generates one batch of `records` records (log records or spans), protobuf-encoded.
    pub fn encode_batch(
        self,
        generator: &mut Generator,
        records: usize,
        time_range: (u64, u64),
    ) -> Vec<u8> {
        match self {
            Signal::Logs => generator.logs_request(records, time_range).encode_to_vec(),
            Signal::Traces => generator.spans_request(records, time_range).encode_to_vec(),
        }
    }

    /// Decodes a protobuf export request and returns its number of records.
    pub fn decode_count(self, buf: &[u8]) -> Result<usize, prost::DecodeError> {
        Ok(match self {
            Signal::Logs => log_count(&std::hint::black_box(ExportLogsServiceRequest::decode(
                buf,
            )?)),
            Signal::Traces => span_count(&std::hint::black_box(ExportTraceServiceRequest::decode(
                buf,
            )?)),
        })
    }
}

/// One pre-encoded export request: protobuf, gzip-compressed if `gzip`.
#[derive(Clone, Debug)]
pub struct Payload {
    pub body: Bytes,
    pub gzip: bool,
    pub records: usize,
}

impl Payload {
    /// The protobuf bytes, gunzipped into `scratch` when compressed.
    pub fn protobuf<'a>(&'a self, scratch: &'a mut Vec<u8>) -> std::io::Result<&'a [u8]> {
        if !self.gzip {
            return Ok(&self.body);
        }
        scratch.clear();
        GzDecoder::new(&self.body[..]).read_to_end(scratch)?;
        Ok(scratch)
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(data.len() / 4), Compression::default());
    encoder.write_all(data).expect("writing to a Vec");
    encoder.finish().expect("writing to a Vec")
}

/// `count` distinct payloads of `batch` records each, generated from `seed` with
/// timestamps in the last few seconds.
pub fn build_payloads(
    signal: Signal,
    seed: u64,
    count: usize,
    batch: usize,
    gzip: bool,
) -> Vec<Payload> {
    let mut generator = Generator::new(seed);
    let range = recent_range(5);
    (0..count)
        .map(|_| {
            let proto = signal.encode_batch(&mut generator, batch, range);
            let body = if gzip { self::gzip(&proto) } else { proto };
            Payload {
                body: body.into(),
                gzip,
                records: batch,
            }
        })
        .collect()
}

/// What a baseline run does to each payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Stage {
    /// gunzip (if compressed) and protobuf-decode: the decode-only baseline.
    Decode,
    /// Everything the server does to a request before its WAL write:
    /// decode, validate against the default limits, apply the time window,
    /// convert to Arrow rows (otelhouse-otlp; logs through its direct decoder).
    Pipeline,
}

impl Signal {
    fn otelhouse(self) -> otelhouse_otlp::Signal {
        match self {
            Signal::Logs => otelhouse_otlp::Signal::Logs,
            Signal::Traces => otelhouse_otlp::Signal::Traces,
        }
    }
}

fn pipeline_count(signal: Signal, proto: &[u8], limits: &otelhouse_otlp::Limits) -> usize {
    use otelhouse_otlp::{Encoding, OtlpRequest};
    // As the server does: logs and spans try the direct decoder first.
    let direct = match signal {
        Signal::Logs => otelhouse_otlp::fast::logs(proto, limits, 0),
        Signal::Traces => otelhouse_otlp::fast::traces(proto, limits, 0),
    };
    if let Some((batches, rows)) = direct {
        std::hint::black_box(batches);
        return rows;
    }
    let mut request =
        OtlpRequest::decode(signal.otelhouse(), Encoding::Protobuf, proto).expect("decode payload");
    request
        .validate(limits)
        .expect("generated payloads are valid");
    request.apply_window(u64::MAX, 0);
    let batches = std::hint::black_box(request.to_batches());
    batches.iter().map(|(_, b)| b.num_rows()).sum()
}

/// Single-threaded baseline: for about `seconds`, runs `stage` over the
/// payloads round-robin in the calling thread; returns records/s.
///
/// Panics if a payload does not decode.
pub fn decode_baseline(signal: Signal, payloads: &[Payload], seconds: f64, stage: Stage) -> f64 {
    assert!(!payloads.is_empty(), "no payloads to decode");
    let limits = otelhouse_otlp::Limits::default();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let mut scratch = Vec::new();
    let mut records = 0usize;
    for payload in payloads.iter().cycle() {
        let proto = payload.protobuf(&mut scratch).expect("gunzip payload");
        records += match stage {
            Stage::Decode => signal.decode_count(proto).expect("decode payload"),
            Stage::Pipeline => pipeline_count(signal, proto, &limits),
        };
        if Instant::now() >= deadline {
            break;
        }
    }
    records as f64 / start.elapsed().as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_logs_decoder_matches_the_general_path_on_generated_batches() {
        use otelhouse_otlp::{Encoding, Limits, OtlpRequest};
        for p in build_payloads(Signal::Logs, 7, 8, 200, false) {
            let (fast, rows) = otelhouse_otlp::fast::logs(&p.body, &Limits::default(), 0)
                .expect("generated logs take the direct decoder");
            assert_eq!(rows, 200);
            let mut r =
                OtlpRequest::decode(otelhouse_otlp::Signal::Logs, Encoding::Protobuf, &p.body)
                    .unwrap();
            r.validate(&Limits::default()).unwrap();
            assert!(!r.apply_window(u64::MAX, 0).changed());
            assert_eq!(fast, r.to_batches());
        }
    }

    #[test]
    fn payloads_round_trip() {
        for signal in [Signal::Logs, Signal::Traces] {
            for gz in [false, true] {
                let payloads = build_payloads(signal, 1, 3, 50, gz);
                let mut scratch = Vec::new();
                for p in &payloads {
                    assert_eq!(
                        signal
                            .decode_count(p.protobuf(&mut scratch).unwrap())
                            .unwrap(),
                        50
                    );
                }
                for stage in [Stage::Decode, Stage::Pipeline] {
                    assert!(decode_baseline(signal, &payloads, 0.05, stage) > 0.0);
                }
            }
        }
    }
}
