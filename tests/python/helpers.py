"""Helpers shared by the end-to-end tests.

The central piece is `expected_rows(signal, payload)`: it turns an OTLP/JSON
request (a fixture file, or what an SDK exporter sent, via `proto_to_json`)
into the rows the otelhouse API must return, using the ClickStack column
names of shared/design/schema.md. Values that need a comparison rule rather
than equality are wrapped in small marker classes (`Ts`, `Attrs`, `Body`)
and checked by `assert_row`.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from google.protobuf.json_format import MessageToDict

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "tests" / "fixtures"

SPAN_KINDS = ["Unspecified", "Internal", "Server", "Client", "Producer", "Consumer"]
STATUS_CODES = ["Unset", "Ok", "Error"]
ENUM_NAMES = {
    "SEVERITY_NUMBER_": ["UNSPECIFIED", "TRACE", "TRACE2", "TRACE3", "TRACE4", "DEBUG", "DEBUG2",
                         "DEBUG3", "DEBUG4", "INFO", "INFO2", "INFO3", "INFO4", "WARN", "WARN2",
                         "WARN3", "WARN4", "ERROR", "ERROR2", "ERROR3", "ERROR4", "FATAL", "FATAL2",
                         "FATAL3", "FATAL4"],
    "SPAN_KIND_": ["UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER"],
    "STATUS_CODE_": ["UNSET", "OK", "ERROR"],
    "AGGREGATION_TEMPORALITY_": ["UNSPECIFIED", "DELTA", "CUMULATIVE"],
}
REJECTED_KEY = {"logs": "rejectedLogRecords", "traces": "rejectedSpans", "metrics": "rejectedDataPoints"}
ID_KEYS = {"traceId", "spanId", "parentSpanId"}

# --------------------------------------------------------------------------- time

_RFC3339_NS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{9})Z$")


def parse_ts(text: str) -> int:
    """API timestamp (RFC 3339, exactly 9 fractional digits, `Z`) -> unix ns."""
    m = _RFC3339_NS.match(text)
    assert m, f"timestamp {text!r} is not RFC 3339 with nanoseconds and Z"
    secs = datetime.strptime(m[1], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    return int(secs) * 1_000_000_000 + int(m[2])


def fmt_ts(ns: int) -> str:
    secs, frac = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(secs, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


def now_ns() -> int:
    return time.time_ns()


def shift_timestamps(payload: dict, earliest_ns: int) -> dict:
    """Copy of payload with every non-zero `*UnixNano` moved by one offset so
    that the earliest becomes `earliest_ns`; strings stay strings."""
    stamps = [int(v) for k, v in _walk_items(payload) if k.endswith("UnixNano") and int(v)]
    offset = earliest_ns - min(stamps)
    out = copy.deepcopy(payload)
    for parent, key in list(_walk_slots(out)):
        v = parent[key]
        if key.endswith("UnixNano") and int(v):
            parent[key] = str(int(v) + offset) if isinstance(v, str) else int(v) + offset
    return out


def _walk_slots(node: Any) -> Iterator[tuple[dict, str]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield node, k
            yield from _walk_slots(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk_slots(v)


def _walk_items(node: Any) -> Iterator[tuple[str, Any]]:
    for parent, key in _walk_slots(node):
        yield key, parent[key]


# --------------------------------------------------------------------------- payloads


def load_fixture(path: Path) -> dict:
    """Parse an OTLP/JSON fixture, repairing the one known upstream defect:
    `"kvlistValue": [...]` (events.json) instead of `{"values": [...]}`."""
    payload = json.loads(path.read_text(encoding="utf-8"))
    for parent, key in list(_walk_slots(payload)):
        if key == "kvlistValue" and isinstance(parent[key], list):
            parent[key] = {"values": parent[key]}
    return payload


def proto_to_json(message) -> dict:
    """Protobuf request -> OTLP/JSON dict (hex ids, integer enums)."""
    d = MessageToDict(message, use_integers_for_enums=True)
    for parent, key in list(_walk_slots(d)):
        if key in ID_KEYS and isinstance(parent[key], str):
            parent[key] = base64.b64decode(parent[key]).hex()
    return d


def count_items(signal: str, payload: dict) -> int:
    return len(list(expected_rows(signal, payload)))


def rejected_count(response_json: dict, signal: str) -> int:
    return int((response_json.get("partialSuccess") or {}).get(REJECTED_KEY[signal], 0))


# --------------------------------------------------------------------------- value forms


def enum_int(value: Any, prefix: str) -> int:
    if isinstance(value, str) and not value.lstrip("-").isdigit():
        return ENUM_NAMES[prefix].index(value.removeprefix(prefix))
    return int(value or 0)


def any_raw(v: dict | None) -> Any:
    """OTLP/JSON AnyValue -> plain Python (bytes for bytesValue, None if empty)."""
    if not v:
        return None
    (kind, x), = v.items()
    if kind == "stringValue":
        return x
    if kind == "boolValue":
        return bool(x)
    if kind == "intValue":
        return int(x)
    if kind == "doubleValue":
        return float(x)
    if kind == "bytesValue":
        return base64.b64decode(x)
    if kind == "arrayValue":
        return [any_raw(i) for i in (x or {}).get("values", [])]
    if kind == "kvlistValue":
        return {kv["key"]: any_raw(kv.get("value")) for kv in (x or {}).get("values", [])}
    raise AssertionError(f"unknown AnyValue kind {kind}")


def kv_map(kvs: list | None) -> dict:
    return {kv["key"]: any_raw(kv.get("value")) for kv in kvs or []}


def jsonable(raw: Any) -> Any:
    """The JSON document an array/kvlist/non-string body must be rendered as."""
    if isinstance(raw, bytes):
        return base64.b64encode(raw).decode()
    if isinstance(raw, list):
        return [jsonable(i) for i in raw]
    if isinstance(raw, dict):
        return {k: jsonable(v) for k, v in raw.items()}
    return raw


def double_forms(x: float) -> set[str]:
    """Accepted string forms of a double: shortest round-trip (`repr`); for
    integral values also without `.0` (the ClickHouse exporter's `5`)."""
    forms = {repr(x)}
    if math.isfinite(x) and x.is_integer():
        forms.add(str(int(x)))
    return forms


def string_form_ok(actual: Any, raw: Any) -> bool:
    """Does a map value match the stored string form of an attribute value?"""
    if not isinstance(actual, str):
        return False
    if raw is None:
        return actual == ""
    if isinstance(raw, bool):
        return actual == ("true" if raw else "false")
    if isinstance(raw, int):
        return actual == str(raw)
    if isinstance(raw, float):
        return actual in double_forms(raw)
    if isinstance(raw, bytes):
        return actual == base64.b64encode(raw).decode()
    if isinstance(raw, str):
        return actual == raw
    try:
        return json.loads(actual) == jsonable(raw)
    except ValueError:
        return False


# --------------------------------------------------------------------------- markers


@dataclass(frozen=True)
class Ts:
    """An RFC 3339 nanosecond timestamp column equal to `ns`."""
    ns: int

    def ok(self, actual: Any) -> bool:
        return isinstance(actual, str) and parse_ts(actual) == self.ns


@dataclass(frozen=True)
class Attrs:
    """A Map column: same keys, each value in its string form."""
    raw: dict

    def ok(self, actual: Any) -> bool:
        return (isinstance(actual, dict) and set(actual) == set(self.raw)
                and all(string_form_ok(actual[k], v) for k, v in self.raw.items()))


@dataclass(frozen=True)
class Body:
    """Body: strings as-is, any other AnyValue as JSON text, absent as ''."""
    raw: Any

    def ok(self, actual: Any) -> bool:
        if self.raw is None or isinstance(self.raw, str):
            return actual == (self.raw or "")
        try:
            return json.loads(actual) == jsonable(self.raw)
        except (TypeError, ValueError):
            return False

    def text(self) -> str:
        return self.raw if isinstance(self.raw, str) else json.dumps(jsonable(self.raw))


def matches(actual: Any, expected: Any) -> bool:
    if isinstance(expected, (Ts, Attrs, Body)):
        return expected.ok(actual)
    if isinstance(expected, list):
        return (isinstance(actual, list) and len(actual) == len(expected)
                and all(matches(a, e) for a, e in zip(actual, expected)))
    if isinstance(expected, bool) or isinstance(actual, bool):
        return actual is expected
    return actual == expected


def assert_row(actual: dict, expected: dict) -> None:
    bad = {k: (actual.get(k, "<missing>"), v) for k, v in expected.items() if not matches(actual.get(k), v)}
    assert not bad, "columns differ (actual, expected):\n" + "\n".join(
        f"  {k}: {a!r}  !=  {e!r}" for k, (a, e) in bad.items()) + f"\nrow: {json.dumps(actual, indent=1)}"


def one_match(rows: list[dict], expected: dict, keys: tuple[str, ...]) -> dict:
    found = [r for r in rows if all(matches(r.get(k), expected[k]) for k in keys)]
    assert len(found) == 1, (f"expected exactly one row with {[(k, expected[k]) for k in keys]}, "
                             f"found {len(found)} among {len(rows)}: {json.dumps(rows, indent=1)[:4000]}")
    return found[0]


# Columns that identify one stored item, per signal (for one_match).
IDENTITY = {
    "logs": ("ServiceName", "Timestamp", "Body"),
    "traces": ("TraceId", "SpanId"),
    "metrics": ("ServiceName", "MetricName", "TimeUnix", "Attributes"),
}

# --------------------------------------------------------------------------- expected rows


def expected_rows(signal: str, payload: dict) -> list[dict]:
    return list({"logs": _log_rows, "traces": _span_rows, "metrics": _metric_rows}[signal](payload))


def _resource_cols(resource_block: dict) -> dict:
    attrs = kv_map((resource_block.get("resource") or {}).get("attributes"))
    return {"ServiceName": attrs.get("service.name", ""), "ResourceAttributes": Attrs(attrs)}


def _scope_cols(scope_block: dict) -> dict:
    scope = scope_block.get("scope") or {}
    return {"ScopeName": scope.get("name", ""), "ScopeVersion": scope.get("version", "")}


def _scope_attr_cols(resource_block: dict, scope_block: dict) -> dict:
    scope = scope_block.get("scope") or {}
    return {"ResourceSchemaUrl": resource_block.get("schemaUrl", ""),
            "ScopeSchemaUrl": scope_block.get("schemaUrl", ""),
            "ScopeAttributes": Attrs(kv_map(scope.get("attributes")))}


def _log_rows(payload: dict) -> Iterator[dict]:
    for rl in payload.get("resourceLogs", []):
        for sl in rl.get("scopeLogs", []):
            for lr in sl.get("logRecords", []):
                ts = int(lr.get("timeUnixNano", 0)) or int(lr.get("observedTimeUnixNano", 0))
                yield {
                    **_resource_cols(rl), **_scope_cols(sl), **_scope_attr_cols(rl, sl),
                    "Timestamp": Ts(ts),
                    "TraceId": lr.get("traceId", "").lower(),
                    "SpanId": lr.get("spanId", "").lower(),
                    "TraceFlags": int(lr.get("flags", 0)) & 0xFF,
                    "SeverityText": lr.get("severityText", ""),
                    "SeverityNumber": enum_int(lr.get("severityNumber"), "SEVERITY_NUMBER_"),
                    "Body": Body(any_raw(lr.get("body"))),
                    "LogAttributes": Attrs(kv_map(lr.get("attributes"))),
                    "EventName": lr.get("eventName", ""),
                }


def _span_rows(payload: dict) -> Iterator[dict]:
    for rs in payload.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for sp in ss.get("spans", []):
                start, end = int(sp.get("startTimeUnixNano", 0)), int(sp.get("endTimeUnixNano", 0))
                events, links, status = sp.get("events", []), sp.get("links", []), sp.get("status") or {}
                yield {
                    **_resource_cols(rs), **_scope_cols(ss),
                    "Timestamp": Ts(start),
                    "TraceId": sp["traceId"].lower(),
                    "SpanId": sp["spanId"].lower(),
                    "ParentSpanId": sp.get("parentSpanId", "").lower(),
                    "TraceState": sp.get("traceState", ""),
                    "SpanName": sp.get("name", ""),
                    "SpanKind": SPAN_KINDS[enum_int(sp.get("kind"), "SPAN_KIND_")],
                    "SpanAttributes": Attrs(kv_map(sp.get("attributes"))),
                    "Duration": end - start,
                    "StatusCode": STATUS_CODES[enum_int(status.get("code"), "STATUS_CODE_")],
                    "StatusMessage": status.get("message", ""),
                    "Events.Timestamp": [Ts(int(e.get("timeUnixNano", 0))) for e in events],
                    "Events.Name": [e.get("name", "") for e in events],
                    "Events.Attributes": [Attrs(kv_map(e.get("attributes"))) for e in events],
                    "Links.TraceId": [lk["traceId"].lower() for lk in links],
                    "Links.SpanId": [lk["spanId"].lower() for lk in links],
                    "Links.TraceState": [lk.get("traceState", "") for lk in links],
                    "Links.Attributes": [Attrs(kv_map(lk.get("attributes"))) for lk in links],
                }


METRIC_KINDS = {"gauge": "gauge", "sum": "sum", "histogram": "histogram",
                "exponentialHistogram": "exponential_histogram", "summary": "summary"}


def _number(dp: dict) -> float | int:
    return int(dp["asInt"]) if "asInt" in dp else float(dp.get("asDouble", 0))


def _point_cols(kind: str, data: dict, dp: dict) -> dict:
    cols: dict[str, Any] = {}
    if kind in ("sum", "histogram", "exponentialHistogram"):
        cols["AggregationTemporality"] = enum_int(data.get("aggregationTemporality"), "AGGREGATION_TEMPORALITY_")
    if kind in ("gauge", "sum"):
        cols["Value"] = _number(dp)
    if kind == "sum":
        cols["IsMonotonic"] = bool(data.get("isMonotonic", False))
    if kind in ("histogram", "exponentialHistogram", "summary"):
        cols["Count"] = int(dp.get("count", 0))
        cols["Sum"] = float(dp.get("sum", 0))
    if kind in ("histogram", "exponentialHistogram"):
        cols.update({k.title(): float(dp[k]) for k in ("min", "max") if k in dp})
    if kind == "histogram":
        cols["BucketCounts"] = [int(c) for c in dp.get("bucketCounts", [])]
        cols["ExplicitBounds"] = [float(b) for b in dp.get("explicitBounds", [])]
    if kind == "exponentialHistogram":
        cols["Scale"] = int(dp.get("scale", 0))
        cols["ZeroCount"] = int(dp.get("zeroCount", 0))
        for side in ("positive", "negative"):
            buckets = dp.get(side) or {}
            cols[f"{side.title()}Offset"] = int(buckets.get("offset", 0))
            cols[f"{side.title()}BucketCounts"] = [int(c) for c in buckets.get("bucketCounts", [])]
    if kind == "summary":
        qs = dp.get("quantileValues", [])
        cols["ValueAtQuantiles.Quantile"] = [float(q.get("quantile", 0)) for q in qs]
        cols["ValueAtQuantiles.Value"] = [float(q.get("value", 0)) for q in qs]
    return cols


def _exemplar_cols(dp: dict) -> dict:
    ex = dp.get("exemplars", [])
    return {"Exemplars.FilteredAttributes": [Attrs(kv_map(e.get("filteredAttributes"))) for e in ex],
            "Exemplars.TimeUnix": [Ts(int(e.get("timeUnixNano", 0))) for e in ex],
            "Exemplars.Value": [_number(e) for e in ex],
            "Exemplars.SpanId": [e.get("spanId", "").lower() for e in ex],
            "Exemplars.TraceId": [e.get("traceId", "").lower() for e in ex]}


def _metric_rows(payload: dict) -> Iterator[dict]:
    for rm in payload.get("resourceMetrics", []):
        for sm in rm.get("scopeMetrics", []):
            for m in sm.get("metrics", []):
                kind = next(k for k in METRIC_KINDS if k in m)
                data = m[kind]
                for dp in data.get("dataPoints", []):
                    start = int(dp.get("startTimeUnixNano", 0))
                    yield {
                        **_resource_cols(rm), **_scope_cols(sm), **_scope_attr_cols(rm, sm),
                        "MetricType": METRIC_KINDS[kind],
                        "MetricName": m["name"],
                        "MetricDescription": m.get("description", ""),
                        "MetricUnit": m.get("unit", ""),
                        "Attributes": Attrs(kv_map(dp.get("attributes"))),
                        "TimeUnix": Ts(int(dp.get("timeUnixNano", 0))),
                        **({"StartTimeUnix": Ts(start)} if start else {}),
                        "Flags": int(dp.get("flags", 0)),
                        "ScopeDroppedAttrCount": int((sm.get("scope") or {}).get("droppedAttributesCount", 0)),
                        **_point_cols(kind, data, dp),
                        **(_exemplar_cols(dp) if kind != "summary" else {}),  # OTLP summaries have none
                    }


def search_token(text: str) -> str:
    """A search term sure to hit `text` under both plain-substring and
    token-based (search-syntax.md) semantics: its longest alphanumeric run."""
    return max(re.findall(r"[A-Za-z0-9]+", text), key=len)
