"""tests/support/chdb_front.py: a ClickHouse HTTP interface over the in-process
ClickHouse engine of chdb, which the Rust tests use in place of a ClickHouse
server. Checked here with plain HTTP, the way any ClickHouse client talks."""

from __future__ import annotations

import gzip
import io
import json
import re
import struct
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import lz4.block
import pyarrow as pa
import pytest
import requests
import zstandard
from clickhouse_cityhash.cityhash import CityHash128

FRONT = Path(__file__).resolve().parents[2] / "tests" / "support" / "chdb_front.py"
ERROR_BODY = re.compile(r"^Code: (\d+)\. DB::Exception: .*\. \(([A-Z0-9_]+)\) \(version 26\.9[^\n]*\)\n$", re.S)


class Front:
    def __init__(self, data_dir: Path, *args: str):
        self.data_dir = data_dir
        self.proc = subprocess.Popen(
            [sys.executable, str(FRONT), "--data-dir", str(data_dir), "--max-lifetime", "300", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = self.proc.stdout.readline().decode()
        if not line.startswith("LISTENING "):
            self.proc.kill()
            raise AssertionError(f"no LISTENING line: {line!r} {self.proc.stderr.read().decode()[-3000:]}")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}/"
        self.http = requests.Session()

    def post(self, body: bytes | str | None = None, **params) -> requests.Response:
        return self.http.post(self.url, params=params, data=body, timeout=20)

    def get(self, **params) -> requests.Response:
        return self.http.get(self.url, params=params, timeout=20)

    def ok(self, sql: str, **params) -> bytes:
        r = self.post(sql, **params)
        assert r.status_code == 200, r.text
        return r.content

    def stop(self) -> int:
        """Close stdin, which must make the front exit by itself."""
        self.http.close()
        if self.proc.poll() is None:
            self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=15)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.proc.stdout.close()
            self.proc.stderr.close()


@pytest.fixture(scope="module")
def front(tmp_path_factory):
    f = Front(tmp_path_factory.mktemp("chdb") / "data")
    yield f
    f.stop()


def exception(r: requests.Response) -> tuple[int, str]:
    """The ClickHouse error of a response: (code, name); checks its form."""
    assert r.status_code != 200, r.text
    m = ERROR_BODY.match(r.text)
    assert m, f"not a ClickHouse error body: {r.text!r}"
    assert r.headers["X-ClickHouse-Exception-Code"] == m[1]
    return int(m[1]), m[2]


def escaped(value: str) -> str:
    """A query-parameter value in ClickHouse's escaped text form (what clients send)."""
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def row_binary_string(raw: bytes) -> tuple[bytes, bytes]:
    n, shift, i = 0, 0, 0
    while True:
        b = raw[i]
        n |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            break
        shift += 7
    return raw[i:i + n], raw[i + n:]


# --------------------------------------------------------------------------- basics

def test_ping_root_and_unknown_path(front):
    assert front.http.get(front.url + "ping").content == b"Ok.\n"
    r = front.http.get(front.url)
    assert (r.status_code, r.content) == (200, b"Ok.\n")
    assert front.http.get(front.url + "nope").status_code == 404


def test_select_in_url_in_body_and_both(front):
    r = front.get(query="SELECT 1, 'a'")
    assert (r.status_code, r.content) == (200, b"1\ta\n")
    assert r.headers["X-ClickHouse-Format"] == "TabSeparated"
    uuid.UUID(r.headers["X-ClickHouse-Query-Id"])
    assert front.post("SELECT 2").content == b"2\n"
    # URL part first, then a newline, then the body: one statement.
    assert front.post("3, 4", query="SELECT 1,").content == b"1\t3\t4\n"
    r = front.post("SELECT 5", query_id="my-query-1")
    assert r.headers["X-ClickHouse-Query-Id"] == "my-query-1"


def test_formats_and_headers(front):
    r = front.post("SELECT number AS n, toString(number) AS s FROM numbers(3) FORMAT JSON")
    assert r.headers["X-ClickHouse-Format"] == "JSON"
    doc = r.json()
    assert doc["data"] == [{"n": "0", "s": "0"}, {"n": "1", "s": "1"}, {"n": "2", "s": "2"}] \
        or doc["data"] == [{"n": 0, "s": "0"}, {"n": 1, "s": "1"}, {"n": 2, "s": "2"}]
    assert doc["rows"] == 3
    r = front.post("SELECT number AS n FROM numbers(2)", default_format="JSONEachRow")
    assert r.headers["X-ClickHouse-Format"] == "JSONEachRow"
    assert [json.loads(line) for line in r.text.splitlines()] == [{"n": 0}, {"n": 1}]
    # The statement's FORMAT clause wins over default_format.
    r = front.post("SELECT 1 AS x FORMAT TabSeparatedWithNames", default_format="JSON")
    assert (r.headers["X-ClickHouse-Format"], r.content) == ("TabSeparatedWithNames", b"x\n1\n")
    summary = json.loads(r.headers["X-ClickHouse-Summary"])
    assert set(summary) == {"read_rows", "read_bytes", "written_rows", "written_bytes",
                            "total_rows_to_read", "result_rows", "result_bytes", "elapsed_ns"}
    assert all(isinstance(v, str) and v.isdigit() for v in summary.values())
    assert summary["result_rows"] == "1"


def test_insert_formats(front):
    front.ok("CREATE TABLE ins (a UInt32, s String) ENGINE = MergeTree ORDER BY a")
    r = front.post(b'{"a":1,"s":"json"}\n{"a":2,"s":"rows"}\n', query="INSERT INTO ins FORMAT JSONEachRow")
    assert r.status_code == 200, r.text
    assert json.loads(r.headers["X-ClickHouse-Summary"])["written_rows"] == "2"
    # RowBinary: bytes that are not UTF-8, and a leading newline/space in the data.
    rb = struct.pack("<I", 10) + b"\x03\xff\n " + struct.pack("<I", 32) + b"\x00"
    assert front.post(rb, query="INSERT INTO ins (a, s) FORMAT RowBinary").status_code == 200
    # The whole request in the body: statement, newline, data.
    assert front.post(b"INSERT INTO ins FORMAT RowBinary\n" + struct.pack("<I", 33) + b"\x01z").status_code == 200
    native = front.ok("SELECT toUInt32(number + 100) AS a, 'native' AS s FROM numbers(3) FORMAT Native")
    assert front.post(native, query="INSERT INTO ins FORMAT Native").status_code == 200
    table = pa.table({"a": pa.array([200, 201], pa.uint32()), "s": ["arrow", "stream"]})
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    r = front.post(sink.getvalue(), query="INSERT INTO ins FORMAT ArrowStream")
    assert r.status_code == 200, r.text
    out = front.ok("SELECT a, s FROM ins ORDER BY a FORMAT RowBinary")
    rows = []
    while out:
        a = struct.unpack_from("<I", out)[0]
        s, out = row_binary_string(out[4:])
        rows.append((a, s))
    assert rows == [(1, b"json"), (2, b"rows"), (10, b"\xff\n "), (32, b""), (33, b"z"),
                    (100, b"native"), (101, b"native"), (102, b"native"), (200, b"arrow"), (201, b"stream")]
    # No data at all is an error, as in ClickHouse.
    assert exception(front.post(b"", query="INSERT INTO ins FORMAT RowBinary")) == (108, "NO_DATA_TO_INSERT")
    # Bad data is the engine's parse error, and the table is unchanged.
    code, _ = exception(front.post(b"\x01", query="INSERT INTO ins FORMAT RowBinary"))
    assert code == 33
    assert front.ok("SELECT count() FROM ins") == b"10\n"


def test_chunked_request_body(front):
    front.ok("CREATE TABLE chunked (a UInt64) ENGINE = MergeTree ORDER BY a")

    def chunks():
        for i in range(5):
            yield b"".join(struct.pack("<Q", i * 100 + j) for j in range(100))
    r = front.http.post(front.url, params={"query": "INSERT INTO chunked FORMAT RowBinary"}, data=chunks(),
                        timeout=20)
    assert r.status_code == 200, r.text
    assert front.ok("SELECT count(), sum(a) FROM chunked") == b"500\t124750\n"


# --------------------------------------------------------------------------- parameters

HOSTILE = [
    "plain",
    "it's",
    "back\\slash\\",
    "'; DROP TABLE canary; --",
    "\\'; DROP TABLE canary; --",
    "nul\x00byte",
    "new\nline\ttab\rcr",
    "quote\" and `tick`",
    "{s:String} {x:Identifier}",
    "unicode é € 😀 \u2028",
    "",
]


def test_params_round_trip_exactly_and_execute_nothing(front):
    front.ok("CREATE TABLE canary (a UInt8) ENGINE = MergeTree ORDER BY a")
    for value in HOSTILE:
        r = front.get(query="SELECT {s:String} FORMAT RowBinary", param_s=escaped(value))
        assert r.status_code == 200, (value, r.text)
        got, rest = row_binary_string(r.content)
        assert (got, rest) == (value.encode(), b""), value
        # Also in the body of a POST, and in a WHERE clause.
        r = front.post("SELECT count() FROM canary WHERE toString(a) = {s:String}", param_s=escaped(value))
        assert r.content == b"0\n", (value, r.text)
    assert front.ok("EXISTS TABLE canary") == b"1\n"
    r = front.get(query="SELECT {n:UInt64} + 1", param_n="1")
    assert r.content == b"2\n"
    code, name = exception(front.get(query="SELECT {n:UInt64}", param_n="1 OR 1=1"))
    assert (code, name) == (457, "BAD_QUERY_PARAMETER")
    assert exception(front.get(query="SELECT {missing:String}")) == (456, "UNKNOWN_QUERY_PARAMETER")
    r = front.get(query="SELECT count() FROM {t:Identifier}", param_t="canary")
    assert r.content == b"0\n"


# --------------------------------------------------------------------------- settings

def test_settings_apply_to_one_request_only(front):
    front.ok("CREATE TABLE big (a UInt64) ENGINE = MergeTree ORDER BY a")
    front.ok("INSERT INTO big SELECT number FROM numbers(1000)")
    r = front.get(query="SELECT sum(a) FROM big", max_rows_to_read="1")
    assert exception(r) == (158, "TOO_MANY_ROWS")
    assert front.get(query="SELECT sum(a) FROM big").content == b"499500\n"
    r = front.get(query="SELECT a FROM big", max_result_rows="10", result_overflow_mode="throw")
    assert exception(r)[1] == "TOO_MANY_ROWS_OR_BYTES"
    assert front.get(query="SELECT count() FROM (SELECT a FROM big)").content == b"1000\n"
    r = front.get(query="SELECT getSetting('max_block_size')", max_block_size="1234")
    assert r.content == b"1234\n"
    assert front.get(query="SELECT getSetting('max_block_size') != 1234").content == b"1\n"
    # A value is a value: it cannot smuggle SQL in.
    r = front.get(query="SELECT 1", max_threads="1; DROP TABLE big")
    assert exception(r)[0] == 27  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
    r = front.get(query="SELECT getSetting('insert_deduplication_token')",
                  insert_deduplication_token="a'b\\c\nd")
    assert r.content == b"a\\'b\\\\c\\nd\n"  # TSV-escaped a'b\c<newline>d
    r = front.get(query="SELECT 1", no_such_setting="1")
    assert (r.status_code, exception(r)) == (404, (115, "UNKNOWN_SETTING"))
    assert exception(front.get(query="SELECT 1", **{"bad name": "1"}))[0] == 115
    # Settings that mean nothing in-process are accepted.
    assert front.get(query="SELECT 1", wait_end_of_query="1", send_progress_in_http_headers="1",
                     cancel_http_readonly_queries_on_client_close="1").content == b"1\n"
    # A SET statement, as in a sessionless ClickHouse request, changes nothing.
    assert front.ok("SET max_block_size = 4321") == b""
    assert front.ok("SET readonly = 1") == b""
    assert front.get(query="SELECT getSetting('max_block_size') != 4321").content == b"1\n"
    assert front.ok("CREATE TABLE after_set (a UInt8) ENGINE = Memory") == b""


def test_concurrent_requests_keep_their_own_settings(front):
    errors = []

    def worker(i: int):
        with requests.Session() as http:
            for j in range(10):
                params = {"query": "SELECT getSetting('max_block_size')"}
                want = b"65409\n"  # the default
                if j % 2:
                    params["max_block_size"], want = str(1000 + i), b"%d\n" % (1000 + i)
                r = http.get(front.url, params=params, timeout=20)
                if r.content != want:
                    errors.append((i, j, r.content))
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_database_param_and_use_do_not_leak(front):
    front.ok("CREATE DATABASE other")
    front.ok("CREATE TABLE t_other (a UInt8) ENGINE = MergeTree ORDER BY a", database="other")
    assert front.get(query="SELECT currentDatabase()", database="other").content == b"other\n"
    assert front.get(query="SELECT currentDatabase()").content == b"default\n"
    assert front.ok("EXISTS TABLE other.t_other") == b"1\n"
    assert front.ok("USE other") == b""
    assert front.get(query="SELECT currentDatabase()").content == b"default\n"
    r = front.get(query="SELECT 1", database="missing`db")
    assert exception(r) == (81, "UNKNOWN_DATABASE")


def test_readonly(front):
    r = front.get(query="CREATE TABLE ro_get (a UInt8) ENGINE = Memory")
    assert exception(r) == (164, "READONLY")
    r = front.post("CREATE TABLE ro_post (a UInt8) ENGINE = Memory", readonly="1")
    assert exception(r) == (164, "READONLY")
    assert front.ok("EXISTS TABLE ro_get") == b"0\n"
    assert front.ok("EXISTS TABLE ro_post") == b"0\n"
    front.ok("CREATE TABLE ro (a UInt8) ENGINE = MergeTree ORDER BY a")
    assert exception(front.get(query="INSERT INTO ro VALUES (1)")) == (164, "READONLY")
    r = front.post(b"\x01", query="INSERT INTO ro FORMAT RowBinary", readonly="1")
    assert exception(r) == (164, "READONLY")
    assert front.get(query="SELECT count() FROM ro").content == b"0\n"
    # Multi-statements are refused, so nothing can ride along with a read.
    r = front.get(query="SELECT 1; DROP TABLE ro")
    assert exception(r) == (62, "SYNTAX_ERROR")
    assert front.ok("EXISTS TABLE ro") == b"1\n"
    # readonly is not left behind.
    assert front.ok("INSERT INTO ro VALUES (1)") == b""


def test_errors_have_clickhouse_form(front):
    r = front.post("SELEC 1")
    assert (r.status_code, exception(r)) == (400, (62, "SYNTAX_ERROR"))
    r = front.post("SELECT * FROM no_such_table")
    assert (r.status_code, exception(r)) == (404, (60, "UNKNOWN_TABLE"))
    r = front.post("SELECT no_such_column")
    assert (r.status_code, exception(r)) == (404, (47, "UNKNOWN_IDENTIFIER"))
    r = front.post("SELECT 1 FORMAT NoSuchFormat")
    code, name = exception(r)
    assert (r.status_code, code, name) == (404, 73, "UNKNOWN_FORMAT")
    assert r.text.count("Code:") == 1, r.text
    r = front.post("SELECT throwIf(1, 'boom')")
    assert (r.status_code, exception(r)[1]) == (500, "FUNCTION_THROW_IF_VALUE_IS_NON_ZERO")
    assert "boom" in r.text
    r = front.post("SELECT sleep(1)", max_execution_time="0.1")
    assert (r.status_code, exception(r)) == (408, (159, "TIMEOUT_EXCEEDED"))
    r = front.post(b"")
    assert exception(r)[0] == 62


# --------------------------------------------------------------------------- inserts

def test_insert_deduplication_token(front):
    front.ok("CREATE TABLE dedup (a UInt32) ENGINE = MergeTree ORDER BY a "
             "SETTINGS non_replicated_deduplication_window = 1000")
    q = "INSERT INTO dedup FORMAT RowBinary"
    block = struct.pack("<II", 1, 2)
    for _ in range(2):
        r = front.post(block, query=q, insert_deduplication_token="batch-1")
        assert r.status_code == 200, r.text
    assert front.ok("SELECT count() FROM dedup") == b"2\n"
    # Same token, other data: still the same insert as far as ClickHouse knows.
    assert front.post(struct.pack("<I", 3), query=q, insert_deduplication_token="batch-1").status_code == 200
    assert front.ok("SELECT count() FROM dedup") == b"2\n"
    assert front.post(block, query=q, insert_deduplication_token="batch-2").status_code == 200
    assert front.ok("SELECT count() FROM dedup") == b"4\n"
    # The token did not stay behind for the next request.
    assert front.post(struct.pack("<I", 7), query=q).status_code == 200
    assert front.ok("SELECT count() FROM dedup") == b"5\n"


# --------------------------------------------------------------------------- compression

def test_gzip_request_and_response(front):
    front.ok("CREATE TABLE gz (a UInt32, s String) ENGINE = MergeTree ORDER BY a")
    rows = b"".join(b'{"a":%d,"s":"row %d"}\n' % (i, i) for i in range(100))
    r = front.http.post(front.url, params={"query": "INSERT INTO gz FORMAT JSONEachRow"},
                        data=gzip.compress(rows), headers={"Content-Encoding": "gzip"}, timeout=20)
    assert r.status_code == 200, r.text
    r = front.http.post(front.url, params={"enable_http_compression": "1"},
                        data="SELECT count(), sum(a) FROM gz", headers={"Accept-Encoding": "gzip"},
                        timeout=20, stream=True)
    assert r.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(r.raw.read()) == b"100\t4950\n"
    # Without enable_http_compression the response is plain whatever the client accepts.
    r = front.http.post(front.url, data="SELECT 1", headers={"Accept-Encoding": "gzip"}, timeout=20)
    assert "Content-Encoding" not in r.headers and r.content == b"1\n"
    # An error is compressed like the result would have been.
    r = front.http.post(front.url, params={"enable_http_compression": "1"}, data="SELEC 1",
                        headers={"Accept-Encoding": "gzip"}, timeout=20)
    assert r.headers["Content-Encoding"] == "gzip" and exception(r)[0] == 62


def test_zstd_request_and_response(front):
    zstd = zstandard
    r = front.http.post(front.url, data=zstd.ZstdCompressor().compress(b"SELECT 42"),
                        params={"enable_http_compression": "1"},
                        headers={"Content-Encoding": "zstd", "Accept-Encoding": "zstd"}, timeout=20, stream=True)
    assert r.status_code == 200
    assert r.headers["Content-Encoding"] == "zstd"
    assert zstd.ZstdDecompressor().stream_reader(io.BytesIO(r.raw.read())).read() == b"42\n"


def native_blocks(data: bytes, method: int = 0x82) -> bytes:
    """ClickHouse's compressed blocks, written here independently of the front."""
    packed = lz4.block.compress(data, store_size=False) if method == 0x82 else data
    block = struct.pack("<BII", method, 9 + len(packed), len(data)) + packed
    h = CityHash128(block)
    return struct.pack("<QQ", h >> 64, h & (2**64 - 1)) + block


def read_native_blocks(raw: bytes) -> bytes:
    out = b""
    while raw:
        method, size, usize = struct.unpack_from("<BII", raw, 16)
        block = raw[16:16 + size]
        h = CityHash128(block)
        assert raw[:16] == struct.pack("<QQ", h >> 64, h & (2**64 - 1)), "checksum"
        assert method == 0x82
        out += lz4.block.decompress(block[9:], uncompressed_size=usize)
        raw = raw[16 + size:]
    return out


def test_native_compression(front):
    front.ok("CREATE TABLE nat (a UInt64) ENGINE = MergeTree ORDER BY a")
    data = b"".join(struct.pack("<Q", i) for i in range(1000))
    body = native_blocks(data[:4000]) + native_blocks(data[4000:], method=0x02)
    r = front.post(body, query="INSERT INTO nat FORMAT RowBinary", decompress="1")
    assert r.status_code == 200, r.text
    r = front.post("SELECT a FROM nat ORDER BY a FORMAT RowBinary", compress="1")
    assert r.status_code == 200, r.text
    assert read_native_blocks(r.content) == data
    bad = bytearray(native_blocks(data[:8]))
    bad[-1] ^= 1
    r = front.post(bytes(bad), query="INSERT INTO nat FORMAT RowBinary", decompress="1")
    assert exception(r) == (40, "CHECKSUM_DOESNT_MATCH")
    assert front.ok("SELECT count() FROM nat") == b"1000\n"


# --------------------------------------------------------------------------- auth, lifetime

def test_auth(tmp_path):
    f = Front(tmp_path / "data", "--user", "alice:s3cr:et", "--user", "bob:pw")
    try:
        assert f.http.get(f.url + "ping").content == b"Ok.\n"
        r = f.post("SELECT 1")
        assert (r.status_code, exception(r)) == (403, (516, "AUTHENTICATION_FAILED"))
        assert r.text.startswith("Code: 516. DB::Exception: default: Authentication failed: password is "
                                 "incorrect, or there is no user with such name. (AUTHENTICATION_FAILED)")
        r = f.post("SELECT 1", user="alice", password="wrong")
        assert exception(r)[0] == 516 and "alice: Authentication failed" in r.text
        assert f.post("SELECT 1", user="alice", password="s3cr:et").content == b"1\n"
        r = f.http.post(f.url, data="SELECT 2", auth=("bob", "pw"), timeout=20)
        assert r.content == b"2\n"
        r = f.http.post(f.url, data="SELECT 3", headers={"X-ClickHouse-User": "bob", "X-ClickHouse-Key": "pw"},
                        timeout=20)
        assert r.content == b"3\n"
        r = f.http.post(f.url, data="SELECT 3", headers={"X-ClickHouse-User": "bob", "X-ClickHouse-Key": "no"},
                        timeout=20)
        assert exception(r)[0] == 516
        # Two ways at once is refused, as ClickHouse does.
        r = f.http.post(f.url, data="SELECT 4", auth=("bob", "pw"), params={"user": "bob", "password": "pw"},
                        timeout=20)
        assert exception(r)[0] == 516 and "simultaneously" in r.text
    finally:
        assert f.stop() == 0


def test_data_survives_a_restart_and_stdin_eof_stops_the_front(tmp_path):
    f = Front(tmp_path / "data")
    f.ok("CREATE TABLE keep (a UInt32, s String) ENGINE = MergeTree ORDER BY a")
    f.post(b'{"a":1,"s":"before"}\n', query="INSERT INTO keep FORMAT JSONEachRow")
    started = time.monotonic()
    assert f.stop() == 0  # closing stdin stops it
    assert time.monotonic() - started < 10
    g = Front(tmp_path / "data")
    try:
        assert g.ok("SELECT a, s FROM keep") == b"1\tbefore\n"
        g.post(b'{"a":2,"s":"after"}\n', query="INSERT INTO keep FORMAT JSONEachRow")
        assert g.ok("SELECT count() FROM keep") == b"2\n"
        g.proc.terminate()  # SIGTERM stops it too
        assert g.proc.wait(timeout=15) == 0
    finally:
        g.stop()


def test_max_lifetime(tmp_path):
    proc = subprocess.Popen([sys.executable, str(FRONT), "--data-dir", str(tmp_path / "d"), "--max-lifetime", "1"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout.readline().startswith(b"LISTENING ")
        assert proc.wait(timeout=15) == 0
        assert proc.stdout.read() == b""  # exactly one line
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdin.close()
        proc.stdout.close()
        proc.wait()
