"""OTLP/HTTP JSON ingestion, checked column by column against the official
examples (tests/fixtures/otlp-examples) and a project-authored payload with
every metric kind (tests/fixtures/otlp-extra)."""

from __future__ import annotations

import copy
import secrets

import pytest

from helpers import (FIXTURES, IDENTITY, assert_row, count_items, expected_rows, load_fixture,
                     now_ns, one_match, rejected_count, search_token, shift_timestamps)

HOUR = 3600 * 10**9
MS = 10**6

CASES = [
    pytest.param("otlp-examples/logs.json", "logs", id="logs"),
    pytest.param("otlp-examples/events.json", "logs", id="events"),
    pytest.param("otlp-examples/trace.json", "traces", id="trace"),
    pytest.param("otlp-examples/metrics.json", "metrics", id="metrics"),
    pytest.param("otlp-extra/metrics-all-kinds.json", "metrics", id="metrics-all-kinds"),
]


def window(expected: list[dict], column: str) -> dict:
    """from/to (unix ns) just around the expected rows' timestamps."""
    stamps = [e[column].ns for e in expected]
    return {"from_": min(stamps) - MS, "to": max(stamps) + MS}


def fetch_rows(server, signal: str, expected: list[dict], **wait) -> list[dict]:
    """Every stored row the API returns for the expected rows' items."""
    rows: list[dict] = []
    if signal == "logs":
        for service in {e["ServiceName"] for e in expected}:
            mine = [e for e in expected if e["ServiceName"] == service]
            rows += server.wait_rows("/api/v1/search", signal="logs", q=search_token(mine[0]["Body"].text()),
                                     where=lambda r: r.get("ServiceName") == service, count=len(mine),
                                     **window(mine, "Timestamp"), **wait)
    elif signal == "traces":
        for trace_id in {e["TraceId"] for e in expected}:
            n = sum(e["TraceId"] == trace_id for e in expected)
            rows += server.wait_rows(f"/api/v1/traces/{trace_id}", count=n, **wait)
    else:
        for name in {e["MetricName"] for e in expected}:
            mine = [e for e in expected if e["MetricName"] == name]
            rows += server.wait_rows("/api/v1/metrics", name=name, count=len(mine),
                                     where=lambda r: r.get("ServiceName") == mine[0]["ServiceName"],
                                     **window(mine, "TimeUnix"), **wait)
    return rows


@pytest.mark.parametrize("fixture,signal", CASES)
def test_example_is_stored_column_by_column(server, fixture, signal):
    payload = shift_timestamps(load_fixture(FIXTURES / fixture), now_ns() - HOUR)
    r = server.post_otlp(signal, payload)
    assert r.status_code == 200, r.text
    assert rejected_count(r.json() if r.content else {}, signal) == 0, r.text

    expected = expected_rows(signal, payload)
    assert expected, "fixture has no items"
    rows = fetch_rows(server, signal, expected)
    assert len(rows) == len(expected)
    for exp in expected:
        assert_row(one_match(rows, exp, IDENTITY[signal]), exp)


def test_all_metric_kinds_are_covered():
    kinds = {e["MetricType"] for f in ("otlp-examples/metrics.json", "otlp-extra/metrics-all-kinds.json")
             for e in expected_rows("metrics", load_fixture(FIXTURES / f))}
    assert kinds == {"gauge", "sum", "histogram", "exponential_histogram", "summary"}


@pytest.mark.parametrize("fixture,signal", CASES)
def test_records_older_than_retention_are_rejected_as_partial_success(server, fixture, signal):
    payload = load_fixture(FIXTURES / fixture)  # timestamps from 2018
    r = server.post_otlp(signal, payload)
    assert r.status_code == 200, r.text
    body = r.json()
    assert rejected_count(body, signal) == count_items(signal, payload), body
    assert body["partialSuccess"].get("errorMessage"), body

    expected = expected_rows(signal, payload)
    if signal == "logs":
        rows = server.rows_after_settling("/api/v1/search", signal="logs",
                                          q=search_token(expected[0]["Body"].text()),
                                          **window(expected, "Timestamp"))
    elif signal == "traces":
        rows = server.rows_after_settling("/api/v1/search", signal="traces",
                                          q=search_token(expected[0]["SpanName"]),
                                          **window(expected, "Timestamp"))
    else:
        rows = [r for name in {e["MetricName"] for e in expected}
                for r in server.rows_after_settling("/api/v1/metrics", name=name, settle=0.5,
                                                    **window(expected, "TimeUnix"))]
    assert rows == []


def _span_payload(trace_id: str, span_id: str, parent_id: str, link: tuple[str, str], start: int) -> dict:
    return {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "hexcase.service"}}]},
        "scopeSpans": [{"scope": {"name": "hexcase"}, "spans": [{
            "traceId": trace_id, "spanId": span_id, "parentSpanId": parent_id,
            "name": "hexcase span", "kind": "SPAN_KIND_CONSUMER",
            "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + 1500),
            "status": {"code": "STATUS_CODE_OK"},
            "attributes": [{"key": "payload", "value": {"bytesValue": "3q2+7w=="}}],
            "links": [{"traceId": link[0], "spanId": link[1], "traceState": "k=v"}],
        }]}],
    }]}


def test_upper_case_hex_ids_are_stored_lower_case(server):
    trace_id, span_id, parent_id, link_trace, link_span = (
        secrets.token_hex(n).upper() for n in (16, 8, 8, 16, 8))
    payload = _span_payload(trace_id, span_id, parent_id, (link_trace, link_span), now_ns() - 10**9)
    r = server.post_otlp("traces", payload)
    assert r.status_code == 200, r.text

    [row] = server.wait_rows(f"/api/v1/traces/{trace_id.lower()}")
    assert (row["TraceId"], row["SpanId"], row["ParentSpanId"]) == (
        trace_id.lower(), span_id.lower(), parent_id.lower())
    assert (row["Links.TraceId"], row["Links.SpanId"]) == ([link_trace.lower()], [link_span.lower()])
    [exp] = expected_rows("traces", payload)
    assert exp["SpanKind"] == "Consumer" and exp["StatusCode"] == "Ok"
    assert_row(row, exp)


# --------------------------------------------------------------------------- malformed JSON

def _gauge_payload() -> dict:
    return {"resourceMetrics": [{"scopeMetrics": [{"metrics": [{
        "name": "bad.gauge", "gauge": {"dataPoints": [{"asInt": "12", "timeUnixNano": str(now_ns())}]}}]}]}]}


def _bad_as_int(p):
    p["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["gauge"]["dataPoints"][0]["asInt"] = "12a"


def _no_data(p):
    del p["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["gauge"]


def _short_trace_id(p):
    p["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"] = "ab" * 15


def _bogus_kind(p):
    p["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["kind"] = "SPAN_KIND_BOGUS"


def _valid_span_payload() -> dict:
    return _span_payload(secrets.token_hex(16), secrets.token_hex(8), "", (secrets.token_hex(16),
                         secrets.token_hex(8)), now_ns())


SPAN0 = "resourceSpans[0].scopeSpans[0].spans[0]"
METRIC0 = "resourceMetrics[0].scopeMetrics[0].metrics[0]"


@pytest.mark.parametrize("signal,make,mutate,path_prefix,leaf", [
    pytest.param("metrics", _gauge_payload, _bad_as_int, METRIC0, "asInt", id="bad-asInt"),
    pytest.param("metrics", _gauge_payload, _no_data, METRIC0, "", id="metric-without-data"),
    pytest.param("traces", _valid_span_payload, _short_trace_id, SPAN0, "traceId", id="30-char-traceId"),
    pytest.param("traces", _valid_span_payload, _bogus_kind, SPAN0, "kind", id="unknown-enum-name"),
])
def test_malformed_json_is_rejected_with_field_path(server, signal, make, mutate, path_prefix, leaf):
    good = make()
    bad = copy.deepcopy(good)
    mutate(bad)
    r = server.post_otlp(signal, bad)
    assert r.status_code == 400, f"{r.status_code}: {r.text}"
    body = r.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    assert body.get("field", "").startswith(path_prefix) and body["field"].endswith(leaf), body
    # control: the unmutated payload is accepted
    ok = server.post_otlp(signal, good)
    assert ok.status_code == 200, ok.text
