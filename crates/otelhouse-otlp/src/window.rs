//! The accepted time window, applied before a request reaches the WAL.
//!
//! Records older than the retention cutoff would be dropped by retention right
//! away; we refuse them up front and say so through OTLP partial success, so
//! a client sending stale data learns about it instead of losing it quietly.
//! Records with no timestamp at all get the receive time here, once, so the
//! WAL holds the stamped value and a replay converts to identical rows.

use opentelemetry_proto::tonic::metrics::v1::metric::Data;

use crate::{ExportLogsServiceRequest, ExportMetricsServiceRequest, ExportTraceServiceRequest};

/// What applying the window did to a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Windowed {
    /// Records dropped as older than the retention.
    pub dropped: u64,
    /// Records given the receive time because they had none.
    pub stamped: u64,
}

impl Windowed {
    /// Whether the request differs from what was received.
    pub fn changed(&self) -> bool {
        self.dropped + self.stamped > 0
    }
}

/// Stamps and filters logs.
pub fn logs(req: &mut ExportLogsServiceRequest, now: u64, oldest: u64) -> Windowed {
    let mut w = Windowed::default();
    for sl in req
        .resource_logs
        .iter_mut()
        .flat_map(|rl| rl.scope_logs.iter_mut())
    {
        let before = sl.log_records.len();
        sl.log_records.retain_mut(|lr| {
            if lr.time_unix_nano == 0 && lr.observed_time_unix_nano == 0 {
                lr.observed_time_unix_nano = now;
                w.stamped += 1;
            }
            let t = if lr.time_unix_nano != 0 {
                lr.time_unix_nano
            } else {
                lr.observed_time_unix_nano
            };
            t >= oldest
        });
        w.dropped += (before - sl.log_records.len()) as u64;
    }
    w
}

/// Filters spans by start time.
pub fn traces(req: &mut ExportTraceServiceRequest, oldest: u64) -> Windowed {
    let mut dropped = 0;
    for ss in req
        .resource_spans
        .iter_mut()
        .flat_map(|rs| rs.scope_spans.iter_mut())
    {
        let before = ss.spans.len();
        ss.spans.retain(|s| s.start_time_unix_nano >= oldest);
        dropped += (before - ss.spans.len()) as u64;
    }
    Windowed {
        dropped,
        stamped: 0,
    }
}

/// Stamps and filters data points.
pub fn metrics(req: &mut ExportMetricsServiceRequest, now: u64, oldest: u64) -> Windowed {
    fn keep<P>(
        points: &mut Vec<P>,
        time: impl Fn(&mut P) -> &mut u64,
        now: u64,
        oldest: u64,
        w: &mut Windowed,
    ) {
        let before = points.len();
        points.retain_mut(|p| {
            let t = time(p);
            if *t == 0 {
                *t = now;
                w.stamped += 1;
            }
            *t >= oldest
        });
        w.dropped += (before - points.len()) as u64;
    }
    let mut w = Windowed::default();
    let all = req
        .resource_metrics
        .iter_mut()
        .flat_map(|rm| rm.scope_metrics.iter_mut())
        .flat_map(|sm| sm.metrics.iter_mut());
    for m in all {
        match &mut m.data {
            None => {}
            Some(Data::Gauge(g)) => keep(
                &mut g.data_points,
                |p| &mut p.time_unix_nano,
                now,
                oldest,
                &mut w,
            ),
            Some(Data::Sum(s)) => keep(
                &mut s.data_points,
                |p| &mut p.time_unix_nano,
                now,
                oldest,
                &mut w,
            ),
            Some(Data::Histogram(h)) => keep(
                &mut h.data_points,
                |p| &mut p.time_unix_nano,
                now,
                oldest,
                &mut w,
            ),
            Some(Data::ExponentialHistogram(h)) => keep(
                &mut h.data_points,
                |p| &mut p.time_unix_nano,
                now,
                oldest,
                &mut w,
            ),
            Some(Data::Summary(s)) => keep(
                &mut s.data_points,
                |p| &mut p.time_unix_nano,
                now,
                oldest,
                &mut w,
            ),
        }
    }
    w
}

/// Number of records (log records, spans, data points) in a request.
pub fn count_logs(req: &ExportLogsServiceRequest) -> usize {
    req.resource_logs
        .iter()
        .flat_map(|rl| &rl.scope_logs)
        .map(|sl| sl.log_records.len())
        .sum()
}

pub fn count_spans(req: &ExportTraceServiceRequest) -> usize {
    req.resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum()
}

pub fn count_points(req: &ExportMetricsServiceRequest) -> usize {
    req.resource_metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .map(|m| match &m.data {
            None => 0,
            Some(Data::Gauge(g)) => g.data_points.len(),
            Some(Data::Sum(s)) => s.data_points.len(),
            Some(Data::Histogram(h)) => h.data_points.len(),
            Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
            Some(Data::Summary(s)) => s.data_points.len(),
        })
        .sum()
}
