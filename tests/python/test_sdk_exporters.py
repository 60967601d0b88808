"""The official OpenTelemetry Python SDK exporters against a real server:
gRPC (gzip), HTTP/protobuf plain and HTTP/protobuf gzip, each run under its
own service.name. Every export request the SDK sends is also kept (as
OTLP/JSON) so the stored rows can be checked column by column against it."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field

import grpc
import pytest
import requests
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.metrics import Observation
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ResourceProto
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import (ExplicitBucketHistogramAggregation,
                                            ExponentialBucketHistogramAggregation, View)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from helpers import IDENTITY, assert_row, expected_rows, fmt_ts, now_ns, one_match, proto_to_json

MINUTE = 60 * 10**9

# name -> (protocol, compression, authorization header form)
TRANSPORTS = {
    "grpc-gzip": ("grpc", "gzip", "plain"),
    "http-protobuf": ("http", "none", "bearer"),
    "http-protobuf-gzip": ("http", "gzip", "plain"),
}

LOG_ATTRS = {"user.id": "u-42", "retry.count": 3, "latency.ratio": 0.25, "cache.hit": False,
             "tags": ["alpha", "beta"], "codes": [200, 503]}
SPAN_ATTRS = {"http.request.method": "POST", "http.response.status_code": 502, "retry.ratio": 0.75,
              "cache.hit": True, "tags": ["x", "y"], "codes": [1, 2], "weights": [0.5, 1.5],
              "flags": [True, False]}


def make_exporters(server, transport: str) -> dict:
    protocol, compression, auth = TRANSPORTS[transport]
    key = server.ingestion_key
    headers = {"authorization": f"Bearer {key}" if auth == "bearer" else key}
    if protocol == "grpc":
        opts = dict(endpoint=f"http://{server.otlp_grpc}", insecure=True, headers=headers,
                    compression=grpc.Compression.Gzip, timeout=10)
        return {"logs": GrpcLogExporter(**opts), "traces": GrpcSpanExporter(**opts),
                "metrics": GrpcMetricExporter(**opts)}
    comp = HttpCompression.Gzip if compression == "gzip" else HttpCompression.NoCompression
    url = server.otlp_http + "/v1/"
    return {"logs": HttpLogExporter(endpoint=url + "logs", headers=headers, compression=comp, timeout=10),
            "traces": HttpSpanExporter(endpoint=url + "traces", headers=headers, compression=comp, timeout=10),
            "metrics": HttpMetricExporter(endpoint=url + "metrics", headers=headers, compression=comp,
                                          timeout=10)}


ENCODERS = {"logs": encode_logs, "traces": encode_spans, "metrics": encode_metrics}


def record_exports(exporter, signal: str, sent: list) -> None:
    """Wrap exporter.export to keep (request as OTLP/JSON, export result)."""
    original = exporter.export

    def export(batch, *args, **kwargs):
        result = original(batch, *args, **kwargs)
        sent.append((proto_to_json(ENCODERS[signal](batch)), result))
        return result

    exporter.export = export


@dataclass
class SdkRun:
    transport: str
    service: str
    tag: str  # one alphanumeric token in every log body and span name
    started: int
    sent: dict = field(default_factory=lambda: {"logs": [], "traces": [], "metrics": []})
    spans: dict = field(default_factory=dict)  # name -> finished SDK span

    def payloads(self, signal: str) -> list[dict]:
        return [payload for payload, _ in self.sent[signal]]

    def expected(self, signal: str) -> list[dict]:
        return [row for p in self.payloads(signal) for row in expected_rows(signal, p)]

    def window(self) -> dict:
        return {"from_": self.started - MINUTE, "to": now_ns() + MINUTE}


def emit_logs(run: SdkRun, provider: LoggerProvider, tracer) -> None:
    logger = provider.get_logger("e2e.logs", "1.2.3", attributes={"scope.kind": "e2e"})
    t0 = time.time_ns() - 10**9
    logger.emit(timestamp=t0, severity_number=SeverityNumber.WARN, severity_text="WARNING",
                body=f"cache miss {run.tag} for user", attributes=LOG_ATTRS)
    with tracer.start_as_current_span(f"log parent {run.tag}") as span:
        run.spans["log parent"] = span
        logger.emit(timestamp=t0 + 1_000_000, severity_number=SeverityNumber.ERROR, severity_text="ERROR",
                    body=f"payment failed {run.tag}", attributes={"order.id": 1001})
    logger.emit(timestamp=t0 + 2_000_000, severity_number=SeverityNumber.ERROR, severity_text="ERROR",
                body={"event": "refund", "amount": 12.5, "tag": run.tag}, event_name="e2e.refund")
    # no timestamp: stored Timestamp falls back to the observed time
    logger.emit(severity_number=SeverityNumber.INFO, severity_text="INFO", body=f"heartbeat {run.tag}")


def emit_spans(run: SdkRun, tracer) -> None:
    with tracer.start_as_current_span(f"linked job {run.tag}") as linked:
        pass
    with tracer.start_as_current_span(f"POST /checkout {run.tag}", kind=SpanKind.SERVER,
                                      attributes=SPAN_ATTRS) as parent:
        parent.add_event("cache.miss", {"cache.key": "user:42", "attempt": 2})
        with tracer.start_as_current_span(
                f"charge card {run.tag}", kind=SpanKind.CLIENT, attributes={"peer.service": "bank"},
                links=[Link(linked.get_span_context(), {"link.reason": "retry-of"})]) as child:
            time.sleep(0.005)
            child.set_status(Status(StatusCode.ERROR, "card declined"))
        parent.set_status(Status(StatusCode.OK))
    run.spans.update({"linked": linked, "parent": parent, "child": child})


def emit_metrics(meter) -> None:
    requests_counter = meter.create_counter("e2e.requests", unit="{request}", description="Requests served")
    requests_counter.add(3, {"route": "/a", "code": 200})
    requests_counter.add(4, {"route": "/a", "code": 200})
    requests_counter.add(1, {"route": "/b", "code": 500})
    depth = meter.create_up_down_counter("e2e.queue.depth", unit="{job}")
    depth.add(10, {"queue": "q1"})
    depth.add(-3, {"queue": "q1"})
    meter.create_observable_gauge("e2e.temperature", unit="Cel",
                                  callbacks=[lambda _options: [Observation(21.5, {"sensor": "s1"})]])
    latency = meter.create_histogram("e2e.latency", unit="ms")
    size = meter.create_histogram("e2e.payload.size", unit="By")
    for v in (5, 50, 500, 5000):
        latency.record(v, {"route": "/a"})
    for v in (1, 2, 3, 4, 8):
        size.record(v, {"route": "/a", "cached": True})


@pytest.fixture(scope="module", params=list(TRANSPORTS))
def sdk_run(request, server) -> SdkRun:
    transport = request.param
    tag = f"E2E{secrets.token_hex(4).upper()}{transport.replace('-', '').upper()}"
    run = SdkRun(transport, f"e2e-sdk-{transport}", tag, now_ns())
    resource = Resource.create({"service.name": run.service, "service.version": "1.0.0",
                                "team.owner": "payments", "host.cores": 2})
    exporters = make_exporters(server, transport)
    for signal, exporter in exporters.items():
        record_exports(exporter, signal, run.sent[signal])

    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(exporters["traces"]))
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(exporters["logs"]))
    reader = PeriodicExportingMetricReader(exporters["metrics"], export_interval_millis=3_600_000)
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader], views=[
        View(instrument_name="e2e.latency", aggregation=ExplicitBucketHistogramAggregation([10, 100, 1000])),
        View(instrument_name="e2e.payload.size", aggregation=ExponentialBucketHistogramAggregation(max_size=20)),
    ])
    tracer = tracer_provider.get_tracer("e2e.traces", "4.5.6")

    emit_logs(run, logger_provider, tracer)
    emit_spans(run, tracer)
    emit_metrics(meter_provider.get_meter("e2e.metrics", "7.8.9"))

    flushed = [tracer_provider.force_flush(), logger_provider.force_flush(), meter_provider.force_flush()]
    tracer_provider.shutdown()
    logger_provider.shutdown()
    meter_provider.shutdown()
    assert all(flushed), f"force_flush failed: {flushed}"
    return run


def hex_ids(span) -> tuple[str, str]:
    ctx = span.get_span_context()
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def test_exports_are_acknowledged(sdk_run):
    for signal, sent in sdk_run.sent.items():
        assert sent, f"no {signal} export happened"
        results = [result.name for _, result in sent]
        assert set(results) == {"SUCCESS"}, f"{signal} export results: {results}"


def test_logs(server, sdk_run):
    expected = sdk_run.expected("logs")
    assert len(expected) == 4
    mine = lambda r: r.get("ServiceName") == sdk_run.service  # noqa: E731
    rows = server.wait_rows("/api/v1/search", signal="logs", q=sdk_run.tag.lower(), where=mine,
                            count=len(expected), **sdk_run.window())
    assert len(rows) == len(expected), rows
    for exp in expected:
        assert_row(one_match(rows, exp, IDENTITY["logs"]), exp)

    stamps = [r["Timestamp"] for r in rows]
    assert stamps == sorted(stamps, reverse=True), "rows are not newest first"
    by_body = {r["Body"]: r for r in rows}

    warn = by_body[f"cache miss {sdk_run.tag} for user"]
    assert (warn["SeverityText"], warn["SeverityNumber"]) == ("WARNING", 13)
    assert (warn["TraceId"], warn["SpanId"]) == ("", "")
    assert warn["LogAttributes"]["retry.count"] == "3"
    assert warn["LogAttributes"]["latency.ratio"] == "0.25"
    assert warn["LogAttributes"]["cache.hit"] == "false"
    assert json.loads(warn["LogAttributes"]["tags"]) == ["alpha", "beta"]
    assert json.loads(warn["LogAttributes"]["codes"]) == [200, 503]
    assert warn["ScopeName"] == "e2e.logs" and warn["ScopeVersion"] == "1.2.3"
    assert warn["ScopeAttributes"] == {"scope.kind": "e2e"}
    assert warn["ResourceAttributes"]["service.name"] == sdk_run.service
    assert warn["ResourceAttributes"]["team.owner"] == "payments"
    assert warn["ResourceAttributes"]["host.cores"] == "2"

    in_span = by_body[f"payment failed {sdk_run.tag}"]
    assert (in_span["SeverityText"], in_span["SeverityNumber"]) == ("ERROR", 17)
    assert (in_span["TraceId"], in_span["SpanId"]) == hex_ids(sdk_run.spans["log parent"])
    assert in_span["TraceFlags"] == int(sdk_run.spans["log parent"].get_span_context().trace_flags)

    [structured] = [r for r in rows if r["EventName"] == "e2e.refund"]
    assert json.loads(structured["Body"]) == {"event": "refund", "amount": 12.5, "tag": sdk_run.tag}

    # from/to also accept RFC 3339; limit keeps the newest rows
    w = sdk_run.window()
    rfc = server.api_get("/api/v1/search", signal="logs", q=sdk_run.tag, from_=fmt_ts(w["from_"]),
                         to=fmt_ts(w["to"]))["rows"]
    assert sorted(r["Body"] for r in rfc if mine(r)) == sorted(by_body)
    limited = server.api_get("/api/v1/search", signal="logs", q=sdk_run.tag, limit=2, **w)["rows"]
    assert [r["Timestamp"] for r in limited] == stamps[:2]


def test_traces(server, sdk_run):
    parent, child, linked = (sdk_run.spans[k] for k in ("parent", "child", "linked"))
    trace_id, parent_id = hex_ids(parent)
    rows = server.wait_rows(f"/api/v1/traces/{trace_id}", count=2)
    assert len(rows) == 2, rows
    for exp in (e for e in sdk_run.expected("traces") if e["TraceId"] == trace_id):
        assert_row(one_match(rows, exp, IDENTITY["traces"]), exp)

    by_id = {r["SpanId"]: r for r in rows}
    p, c = by_id[parent_id], by_id[hex_ids(child)[1]]
    assert (p["ParentSpanId"], c["ParentSpanId"]) == ("", parent_id)
    assert (p["SpanKind"], c["SpanKind"]) == ("Server", "Client")
    assert (p["StatusCode"], c["StatusCode"], c["StatusMessage"]) == ("Ok", "Error", "card declined")
    assert c["Duration"] > 0 and c["Duration"] == child.end_time - child.start_time
    assert p["Duration"] == parent.end_time - parent.start_time
    assert p["ServiceName"] == sdk_run.service and p["ScopeName"] == "e2e.traces"
    assert p["SpanAttributes"]["http.response.status_code"] == "502"
    assert p["SpanAttributes"]["retry.ratio"] == "0.75" and p["SpanAttributes"]["cache.hit"] == "true"
    assert json.loads(p["SpanAttributes"]["flags"]) == [True, False]
    assert json.loads(p["SpanAttributes"]["weights"]) == [0.5, 1.5]
    assert p["Events.Name"] == ["cache.miss"]
    assert p["Events.Attributes"] == [{"cache.key": "user:42", "attempt": "2"}]
    assert (c["Links.TraceId"], c["Links.SpanId"]) == ([hex_ids(linked)[0]], [hex_ids(linked)[1]])
    assert c["Links.Attributes"] == [{"link.reason": "retry-of"}]

    # search: case-insensitive match on the span name
    found = server.wait_rows("/api/v1/search", signal="traces", q=sdk_run.tag.lower(), count=4,
                             where=lambda r: r.get("ServiceName") == sdk_run.service, **sdk_run.window())
    names = {r["SpanName"] for r in found}
    assert names == {s.name for s in sdk_run.spans.values()}, names


METRIC_CHECKS = {
    # name -> (point attributes, MetricType, expected columns)
    "e2e.requests": ({"route": "/a", "code": "200"}, "sum",
                     {"Value": 7, "IsMonotonic": True, "AggregationTemporality": 2}),
    "e2e.queue.depth": ({"queue": "q1"}, "sum", {"Value": 7, "IsMonotonic": False}),
    "e2e.temperature": ({"sensor": "s1"}, "gauge", {"Value": 21.5}),
    "e2e.latency": ({"route": "/a"}, "histogram",
                    {"Count": 4, "Sum": 5555, "Min": 5, "Max": 5000, "BucketCounts": [1, 1, 1, 1],
                     "ExplicitBounds": [10, 100, 1000]}),
    "e2e.payload.size": ({"route": "/a", "cached": "true"}, "exponential_histogram",
                         {"Count": 5, "Sum": 18, "Min": 1, "Max": 8, "ZeroCount": 0}),
}


def test_metrics(server, sdk_run):
    expected = sdk_run.expected("metrics")
    for name in METRIC_CHECKS:
        mine = [e for e in expected if e["MetricName"] == name]
        assert mine, f"SDK exported no {name}"
        rows = server.wait_rows("/api/v1/metrics", name=name, count=len(mine),
                                where=lambda r: r.get("ServiceName") == sdk_run.service, **sdk_run.window())
        for exp in mine:
            assert_row(one_match(rows, exp, IDENTITY["metrics"]), exp)

        attrs, metric_type, columns = METRIC_CHECKS[name]
        row = next(r for r in rows if r["Attributes"] == attrs)
        assert row["MetricType"] == metric_type
        assert {k: row[k] for k in columns} == columns

    # the View really produced base-2 exponential buckets (their columns were compared above)
    exp_hist = next(e for e in expected if e["MetricName"] == "e2e.payload.size")
    assert exp_hist["MetricType"] == "exponential_histogram" and sum(exp_hist["PositiveBucketCounts"]) == 5


# --------------------------------------------------------------------------- authentication

def _log_request(body: str) -> ExportLogsServiceRequest:
    return ExportLogsServiceRequest(resource_logs=[ResourceLogs(
        resource=ResourceProto(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="e2e-auth"))]),
        scope_logs=[ScopeLogs(log_records=[LogRecord(time_unix_nano=now_ns(),
                                                     body=AnyValue(string_value=body))])])])


def test_wrong_ingestion_key_is_refused(server):
    token = f"unauth{secrets.token_hex(6)}"
    request = _log_request(f"must not be stored {token}")
    payload = request.SerializeToString()

    for headers in ({"authorization": "wrong-key"}, {"authorization": "Bearer wrong-key"}, {}):
        r = requests.post(f"{server.otlp_http}/v1/logs", data=payload, timeout=10,
                          headers={"Content-Type": "application/x-protobuf", **headers})
        assert r.status_code == 401, f"{headers}: {r.status_code} {r.text}"
    r = server.post_otlp("logs", proto_to_json(request), key="wrong-key")
    assert r.status_code == 401, r.text

    with grpc.insecure_channel(server.otlp_grpc) as channel:
        stub = LogsServiceStub(channel)
        for metadata in ([("authorization", "wrong-key")], [("authorization", "Bearer wrong-key")], None):
            with pytest.raises(grpc.RpcError) as err:
                stub.Export(request, metadata=metadata, timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, (metadata, err.value)

        window = {"from_": now_ns() - MINUTE, "to": now_ns() + MINUTE}
        assert server.rows_after_settling("/api/v1/search", signal="logs", q=token, **window) == []

        # control: the same request with the right key is stored exactly once
        stub.Export(request, metadata=[("authorization", server.ingestion_key)], timeout=10)
    rows = server.wait_rows("/api/v1/search", signal="logs", q=token, **window)
    assert [r["Body"] for r in rows] == [f"must not be stored {token}"]
