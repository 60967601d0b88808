#!/usr/bin/env python3
"""A ClickHouse HTTP interface in front of the real ClickHouse engine, run in-process by chdb.

For tests only: the Rust tests start it as a subprocess and talk to it as they
would to a ClickHouse server's HTTP port.

    python tests/support/chdb_front.py --data-dir DIR [--port 0] [--user NAME:PASSWORD ...]
                                       [--max-lifetime SECONDS] [--no-stdin-watch] [--verbose]

It listens on 127.0.0.1 only and prints exactly one line, `LISTENING <port>`, to
stdout once it is ready (stdout is then pointed at /dev/null). It stops by itself
when its stdin reaches EOF (unless --no-stdin-watch), on SIGTERM/SIGINT, or after
--max-lifetime seconds (default 1800). Tables live in DIR (a persistent chdb
session), so a front restarted on the same DIR sees the same data.
Needs: chdb-core 26.9.0 (engine 26.9.2.1); optional zstandard, lz4, clickhouse-cityhash
(see tests/python/requirements.txt).

Implemented (as ClickHouse 26.9 does it, src/Server/HTTPHandler.cpp and friends):
- `GET /ping` and `GET /` without a query -> `Ok.\\n`; other paths -> 404.
- Query text from the `query` URL parameter and/or the request body; when both are
  given they are joined with a newline, so `?query=INSERT INTO t FORMAT RowBinary`
  plus a body of rows works. `INSERT ... FORMAT <fmt>` data (any input format chdb
  has: RowBinary, Native, ArrowStream, Parquet, JSONEachRow, CSV, ...) is streamed
  into the engine with chdb's send_insert; `INSERT ... VALUES` and INSERT ... SELECT
  run as ordinary statements. Empty insert data -> 108 NO_DATA_TO_INSERT.
- Query parameters: `param_<name>` URL arguments bind `{name:Type}` placeholders
  through chdb's native `params=` (no text substitution). As in ClickHouse, values
  are in the *escaped* text form (backslash escapes: `\\\\`, `\\n`, `\\t`, `\\0`, ...);
  a missing parameter is 456 UNKNOWN_QUERY_PARAMETER, an unparsable one 457.
- `database` URL parameter or `X-ClickHouse-Database` header; `default_format` URL
  parameter or `X-ClickHouse-Format` request header (default TabSeparated); the
  statement's own FORMAT clause wins. Response headers: X-ClickHouse-Format,
  X-ClickHouse-Query-Id (the `query_id` parameter, else a new UUID),
  X-ClickHouse-Summary (read/written rows and bytes, result rows/bytes, elapsed_ns,
  from chdb's counters), X-ClickHouse-Timezone, X-ClickHouse-Server-Display-Name.
- Every other URL parameter is a ClickHouse setting for that request only (applied
  with SET, name checked, value sent as an escaped string literal, and reset
  afterwards), e.g. max_execution_time, max_rows_to_read, read_overflow_mode,
  max_result_rows, result_overflow_mode, insert_deduplication_token, async_insert,
  date_time_input_format. Unknown setting -> 115 UNKNOWN_SETTING.
- readonly: requests other than POST run with readonly=2, and a `readonly` URL
  parameter is honoured; a writing statement is then refused with 164 READONLY.
  Enforced by the front (chdb's classify_query), not by the engine setting,
  because the engine cannot leave readonly mode once in it.
- One statement per request (several -> 62 SYNTAX_ERROR, as ClickHouse).
  A standalone SET statement succeeds and has no effect, like SET in a ClickHouse
  HTTP request without session_id; USE is checked and undone.
- Authentication, when --user was given: X-ClickHouse-User/X-ClickHouse-Key
  headers, HTTP Basic, or `user`/`password` URL parameters (mixing them is refused,
  as ClickHouse does). Failure -> 516 AUTHENTICATION_FAILED with HTTP 403, which
  is what ClickHouse answers. Without --user every request is accepted.
  Privileges/grants are NOT enforced (one in-process engine, no access control).
- Errors: the ClickHouse form: HTTP status from ClickHouse's
  exceptionCodeToHTTPStatus (syntax error 400, unknown table/identifier 404,
  timeout 408, auth 403, others 500), header X-ClickHouse-Exception-Code, body
  `Code: N. DB::Exception: <message>. (NAME) (version 26.9.2.1 (chdb-core 26.9.0))`.
- Compression: request Content-Encoding gzip, deflate, xz, bz2, and zstd/lz4 when
  the zstandard/lz4 modules are present; response compression with
  `enable_http_compression=1` and Accept-Encoding (same order of preference as
  ClickHouse: gzip, deflate, xz, zstd, lz4, bz2). ClickHouse's native block
  compression: `decompress=1` (request body; LZ4, ZSTD or NONE blocks, CityHash128
  checksum verified) and `compress=1` (response; LZ4 blocks, or ZSTD when
  network_compression_method=zstd). Needs lz4 + clickhouse-cityhash (+ zstandard).
- Chunked request bodies, Expect: 100-continue, HTTP/1.1 keep-alive.

Not implemented:
- Sessions (`session_id`, `session_timeout`, `session_check`, `close_session`
  are accepted and ignored: every request is sessionless), `role`, `quota_key`.
- Progress headers and streaming: results are buffered and sent whole with a
  Content-Length, so `send_progress_in_http_headers`,
  `http_headers_progress_interval_ms`, `wait_end_of_query`, `buffer_size`,
  `http_response_buffer_size`, `cancel_http_readonly_queries_on_client_close` are
  accepted and ignored (a query is never cancelled when the client goes away).
  There are no mid-stream exceptions (X-ClickHouse-Exception-Tag) as nothing streams.
- HTTPS with --tls-cert/--tls-key (and client certificates with --tls-client-ca),
  by Python's ssl module rather than ClickHouse's <openSSL> section.
- Brotli and snappy Content-Encoding; external tables (multipart/form-data);
  parameters in the form body; /replicas_status, /play, /dashboard;
  custom http_handlers; `stacktrace`.
- Query parameters inside the statement part of an `INSERT ... FORMAT` whose data
  is not UTF-8 text (chdb's streaming insert takes no parameters; with text data
  the whole request runs as one statement and parameters work).
- Engine calls are serialised by one lock: one query at a time.
"""

from __future__ import annotations

import argparse
import ssl
import base64
import bz2
import gzip
import hmac
import io
import json
import lzma
import os
import re
import signal
import struct
import sys
import threading
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import chdb
from chdb import _chdb

try:
    import zstandard
except ImportError:  # optional
    zstandard = None
try:
    import lz4.block as lz4_block
    import lz4.frame as lz4_frame
except ImportError:  # optional
    lz4_block = lz4_frame = None
try:
    from clickhouse_cityhash.cityhash import CityHash128
except ImportError:  # optional
    CityHash128 = None

DISPLAY_NAME = "chdb-front"
VERSION_SUFFIX = f"(version {chdb.engine_version} (chdb-core {chdb.__version__}))"

# URL parameters that are not settings (ClickHouse's reserved names, plus what the
# front consumes itself).
RESERVED_PARAMS = {
    "query", "database", "default_format", "query_id", "user", "password", "quota_key",
    "compress", "decompress", "stacktrace", "role", "buffer_size", "wait_end_of_query",
    "session_id", "session_timeout", "session_check", "close_session", "client_protocol_version",
}
# Real settings the front reads itself instead of handing them to the engine.
FRONT_SETTINGS = {"readonly", "enable_http_compression", "http_zlib_compression_level",
                  "network_compression_method", "network_zstd_compression_level"}
# Real settings that mean nothing in-process (results are buffered, nothing
# streams, a query is never cancelled by the client going away): accepted, ignored.
IGNORED_SETTINGS = {"send_progress_in_http_headers", "http_headers_progress_interval_ms",
                    "cancel_http_readonly_queries_on_client_close", "http_response_buffer_size",
                    "http_wait_end_of_query", "add_http_cors_header"}

SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# ClickHouse's exceptionCodeToHTTPStatus (src/Server/HTTP/exceptionCodeToHTTPStatus.cpp),
# by error name; names are resolved to codes by the engine at start.
STATUS_BY_NAME = {
    401: ["REQUIRED_PASSWORD"],
    403: ["UNKNOWN_USER", "WRONG_PASSWORD", "AUTHENTICATION_FAILED", "SET_NON_GRANTED_ROLE",
          "ACCESS_DENIED"],
    400: ["BAD_ARGUMENTS", "CANNOT_COMPILE_REGEXP", "CANNOT_PARSE_TEXT",
          "CANNOT_PARSE_ESCAPE_SEQUENCE", "CANNOT_PARSE_QUOTED_STRING", "CANNOT_PARSE_DATE",
          "CANNOT_PARSE_DATETIME", "CANNOT_PARSE_NUMBER", "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING",
          "CANNOT_PARSE_IPV4", "CANNOT_PARSE_IPV6", "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
          "CANNOT_PARSE_UUID", "DUPLICATE_COLUMN", "ILLEGAL_COLUMN", "UNKNOWN_ELEMENT_IN_AST",
          "UNKNOWN_TYPE_OF_AST_NODE", "THERE_IS_NO_COLUMN", "TOO_DEEP_AST", "TOO_BIG_AST",
          "UNEXPECTED_AST_STRUCTURE", "SYNTAX_ERROR", "INCORRECT_DATA", "TYPE_MISMATCH",
          "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE"],
    404: ["UNKNOWN_TABLE", "UNKNOWN_FUNCTION", "UNKNOWN_IDENTIFIER", "UNKNOWN_TYPE",
          "UNKNOWN_STORAGE", "UNKNOWN_DATABASE", "UNKNOWN_SETTING", "UNKNOWN_DIRECTION_OF_SORTING",
          "UNKNOWN_AGGREGATE_FUNCTION", "UNKNOWN_FORMAT", "UNKNOWN_DATABASE_ENGINE",
          "UNKNOWN_TYPE_OF_QUERY", "UNKNOWN_ROLE"],
    413: ["QUERY_IS_TOO_LARGE"],
    501: ["NOT_IMPLEMENTED"],
    503: ["SOCKET_TIMEOUT", "CANNOT_OPEN_FILE", "CANNOT_SCHEDULE_TASK"],
    411: ["HTTP_LENGTH_REQUIRED"],
    408: ["TIMEOUT_EXCEEDED"],
    415: ["UNSUPPORTED_MEDIA_TYPE"],
}

CONTENT_TYPES = {
    "TabSeparated": "text/tab-separated-values; charset=UTF-8",
    "TSV": "text/tab-separated-values; charset=UTF-8",
    "CSV": "text/csv; charset=UTF-8; header=absent",
    "CSVWithNames": "text/csv; charset=UTF-8; header=present",
    "JSONEachRow": "application/x-ndjson; charset=UTF-8",
    "JSONLines": "application/x-ndjson; charset=UTF-8",
    "NDJSON": "application/x-ndjson; charset=UTF-8",
}
BINARY_FORMATS = ("RowBinary", "Native", "Arrow", "Parquet", "ORC", "Avro", "Protobuf",
                  "CapnProto", "MsgPack", "BSONEachRow", "Npy")

NATIVE_NONE, NATIVE_LZ4, NATIVE_ZSTD = 0x02, 0x82, 0x90
NATIVE_BLOCK = 1 << 20  # max_compress_block_size


class FrontError(Exception):
    """A ClickHouse exception: code (number) and message (without the Code: prefix)."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


# ----------------------------------------------------------------------------- SQL lexing

_WORD = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*")


def lex(buf: bytes):
    """Yield (kind, text, start, end, depth) for the tokens of a statement.

    Only as much as the front needs: words, quoted tokens ('...', "...", `...`)
    and single punctuation characters, skipping blanks and comments. Lazy, so a
    caller can stop at the start of INSERT data (which may be binary)."""
    i, n, depth = 0, len(buf), 0
    while i < n:
        c = buf[i]
        if c in b" \t\r\n\f\v":
            i += 1
        elif buf.startswith(b"--", i):
            j = buf.find(b"\n", i)
            i = n if j < 0 else j + 1
        elif buf.startswith(b"/*", i):
            j = buf.find(b"*/", i + 2)
            i = n if j < 0 else j + 2
        elif c in b"'\"`":
            j = i + 1
            while j < n and buf[j] != c:
                j += 2 if buf[j] == 0x5C else 1
            j = min(j + 1, n)
            yield "s", buf[i:j], i, j, depth
            i = j
        else:
            m = _WORD.match(buf, i)
            if m:
                yield "w", m.group(), i, m.end(), depth
                i = m.end()
                continue
            if c in b"([":
                depth += 1
            elif c in b")]":
                depth = max(0, depth - 1)
            yield "p", buf[i:i + 1], i, i + 1, depth
            i += 1


def first_word(buf: bytes) -> bytes:
    for kind, text, *_ in lex(buf):
        return text.upper() if kind == "w" else b""
    return b""


def split_insert(full: bytes):
    """For `INSERT ... FORMAT <fmt><data>`, return (prefix, fmt, data, has_placeholder).

    The data starts after the format name, blanks, and one line break, as in
    ClickHouse's ParserInsertQuery. INSERT ... VALUES and INSERT ... SELECT
    return None: they run as ordinary statements."""
    toks = lex(full)
    first = next(toks, None)
    if first is None or first[0] != "w" or first[1].upper() != b"INSERT":
        return None
    placeholder = False
    for kind, text, start, _end, depth in toks:
        if kind == "p" and text == b"{":
            placeholder = True
        if kind != "w" or depth:
            continue
        word = text.upper()
        if word in (b"SELECT", b"WITH", b"VALUES"):
            return None
        if word == b"FORMAT":
            name = next(toks, None)
            if name is None or name[0] != "w":
                return None
            j = name[3]
            while j < len(full) and full[j] in b" \t\f":
                j += 1
            if j < len(full) and full[j] == 0x0D:
                j += 1
            if j < len(full) and full[j] == 0x0A:
                j += 1
            return full[:start], name[1].decode(), full[j:], placeholder
    return None


def output_format(buf: bytes):
    """The name in a top-level `FORMAT <name>` clause (followed by end, `;` or SETTINGS)."""
    toks = list(lex(buf))
    found = None
    for i, (kind, text, _s, _e, depth) in enumerate(toks):
        if kind == "w" and depth == 0 and text.upper() == b"FORMAT" and i + 1 < len(toks) \
                and toks[i + 1][0] == "w":
            after = toks[i + 2] if i + 2 < len(toks) else None
            if after is None or after[1] == b";" or (after[0] == "w" and after[1].upper() == b"SETTINGS"):
                found = toks[i + 1][1].decode()
    return found


def sql_string(value: str) -> str:
    """A ClickHouse string literal: every backslash, quote and control character escaped."""
    out = ["'"]
    for ch in value:
        if ch == "\\":
            out.append("\\\\")
        elif ch == "'":
            out.append("\\'")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append("\\x%02x" % ord(ch))
        else:
            out.append(ch)
    out.append("'")
    return "".join(out)


def sql_ident(name: str) -> str:
    out = ["`"]
    for ch in name:
        if ch in "\\`":
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append("\\x%02x" % ord(ch))
        else:
            out.append(ch)
    out.append("`")
    return "".join(out)


# ----------------------------------------------------------------------------- the engine

_CODE = re.compile(r"Code:\s*(\d+)\.")
_LEAD = re.compile(r"^(?:\s*Code:\s*\d+\.\s*DB::Exception:\s*)+")
_TRAIL = re.compile(r"(?:\s*\(version [^()]*(?:\([^()]*\))?[^()]*\)|\.?\s*\([A-Z][A-Z0-9_]*\))\s*$")


def engine_error(text: str) -> FrontError:
    """chdb's exception text -> FrontError: the code, and the message without the
    (possibly repeated) `Code: N. DB::Exception:` prefixes and `(NAME) (version ...)` tails."""
    m = _CODE.search(text)
    code = int(m.group(1)) if m else 1001  # STD_EXCEPTION
    msg = _LEAD.sub("", text.strip())
    while True:
        stripped = _TRAIL.sub("", msg)
        if stripped == msg:
            break
        msg = stripped
    return FrontError(code, msg.rstrip())


class Engine:
    """One persistent chdb connection; every call holds `lock`."""

    def __init__(self, path: str):
        self.lock = threading.Lock()
        self.conn = _chdb.connect(path)
        # clickhouse-server's default (chdb turns it on): `garbage` is a syntax error.
        self._run("SET implicit_select = 0")
        tz, db = self._run("SELECT timezone(), currentDatabase()").decode().rstrip("\n").split("\t")
        self.timezone, self.home_db = tz, db
        rows = self._run("SELECT name, value FROM system.settings WHERE changed").decode()
        self.baseline = dict(line.split("\t", 1) for line in rows.splitlines() if "\t" in line)
        rows = self._run("SELECT number, errorCodeToName(number) FROM numbers(5000) "
                         "WHERE errorCodeToName(number) != ''").decode()
        self.code_names = {int(c): n for c, n in (line.split("\t") for line in rows.splitlines())}
        codes = {n: c for c, n in self.code_names.items()}
        self.codes = codes
        self.status = {codes[n]: status for status, names in STATUS_BY_NAME.items()
                       for n in names if n in codes}

    def code(self, name: str) -> int:
        return self.codes[name]

    def _run(self, sql: str, fmt: str = "TabSeparated", params=None):
        try:
            res = self.conn.query(sql, fmt, params=params or {})
        except RuntimeError as e:
            raise engine_error(str(e)) from None
        if res.has_error():
            raise engine_error(res.error_message())
        return res.bytes()

    def close(self):
        self.conn.close()

    # -- one request
    def execute(self, full: bytes, params: dict, settings: list, database, fmt: str, readonly: int):
        """Run one request's statement. Returns (body, out_format, summary)."""
        with self.lock:
            split = split_insert(full)
            if split is not None and split[3]:
                split = None  # placeholders in the INSERT part: run as one statement (text data)
            if split is not None:
                prefix, in_fmt, data, _ = split
                stmt = self._text(prefix)
            else:
                stmt = self._text(full)
            info = self.conn.classify_query(stmt)
            qclass = info["query_class"].name
            if info["statement_count"] > 1:
                raise FrontError(self.code("SYNTAX_ERROR"), "Multi-statements are not allowed")
            word = first_word(stmt.encode())
            writes = split is not None or qclass == "MUTATING" \
                or (qclass == "CONTROL" and word not in (b"SET", b"USE"))
            if readonly and writes:
                raise FrontError(self.code("READONLY"), "Cannot execute query in readonly mode")
            if word == b"SET":
                if readonly == 1:
                    raise FrontError(self.code("READONLY"), "Cannot modify settings in readonly mode")
                # No lasting effect, as SET in a ClickHouse HTTP request without session_id.
                return b"", fmt, summary()
            applied, reset_db = [], word == b"USE"
            try:
                if database:
                    reset_db = True
                    self._run(f"USE {sql_ident(database)}")
                for name, value in settings:
                    self._run(f"SET {name} = {sql_string(value)}")
                    applied.append(name)
                if split is not None:
                    if not data:
                        raise FrontError(self.code("NO_DATA_TO_INSERT"), "No data to insert")
                    return b"", fmt, self._insert(stmt, in_fmt, data)
                started = time.monotonic_ns()
                try:
                    res = self.conn.query(stmt, fmt, params=params)
                except RuntimeError as e:
                    raise engine_error(str(e)) from None
                if res.has_error():
                    raise engine_error(res.error_message())
                body = res.bytes() or b""
                elapsed = int(res.elapsed() * 1e9) or (time.monotonic_ns() - started)
                s = summary(read_rows=res.storage_rows_read(), read_bytes=res.storage_bytes_read(),
                            written_rows=res.rows_written(), written_bytes=res.bytes_written(),
                            result_rows=res.rows_read(), result_bytes=res.bytes_read(),
                            elapsed_ns=elapsed)
                if res.rows_written():
                    s["result_rows"], s["result_bytes"] = s["written_rows"], s["written_bytes"]
                return body, output_format(stmt.encode()) or fmt, s
            finally:
                self._restore(applied, reset_db)

    def _text(self, raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise FrontError(self.code("BAD_ARGUMENTS"),
                             f"The query is not valid UTF-8 (byte {e.start})") from None

    def _insert(self, stmt: str, in_fmt: str, data: bytes) -> dict:
        started = time.monotonic_ns()
        try:
            handle = self.conn.send_insert(stmt, in_fmt)
        except RuntimeError as e:
            raise engine_error(str(e)) from None
        try:
            self.conn.insert_append(handle, data)
            res = self.conn.insert_done(handle)
        except RuntimeError as e:
            try:
                self.conn.insert_cancel(handle)
            except Exception:  # noqa: BLE001 - already failed; the first error matters
                pass
            raise engine_error(str(e)) from None
        rows, nbytes = res.rows_written(), res.bytes_written()
        return summary(written_rows=rows, written_bytes=nbytes, result_rows=rows,
                       result_bytes=nbytes,
                       elapsed_ns=int(res.elapsed() * 1e9) or time.monotonic_ns() - started)

    def _restore(self, applied: list, reset_db: bool):
        """Undo a request's settings and database so nothing leaks to the next one."""
        if applied:
            parts = [f"{n} = {sql_string(self.baseline[n])}" if n in self.baseline else f"{n} = DEFAULT"
                     for n in dict.fromkeys(applied)]
            try:
                self._run("SET " + ", ".join(parts))
            except FrontError as e:
                log(f"restoring settings failed: {e.message}")
        if reset_db:
            try:
                self._run(f"USE {sql_ident(self.home_db)}")
            except FrontError as e:
                log(f"restoring the database failed: {e.message}")


def summary(read_rows=0, read_bytes=0, written_rows=0, written_bytes=0, result_rows=0,
            result_bytes=0, elapsed_ns=0) -> dict:
    # ClickHouse's X-ClickHouse-Summary: every value a string. chdb gives no estimate
    # of the rows to read, so total_rows_to_read is the rows read.
    return {"read_rows": str(read_rows), "read_bytes": str(read_bytes),
            "written_rows": str(written_rows), "written_bytes": str(written_bytes),
            "total_rows_to_read": str(read_rows), "result_rows": str(result_rows),
            "result_bytes": str(result_bytes), "elapsed_ns": str(elapsed_ns)}


# ----------------------------------------------------------------------------- compression

def http_decode(body: bytes, encoding: str, engine: Engine) -> bytes:
    enc = encoding.strip().lower()
    try:
        if enc in ("", "identity", "none"):
            return body
        if enc in ("gzip", "x-gzip"):
            return gzip.decompress(body)
        if enc == "deflate":
            return zlib.decompress(body)
        if enc == "xz":
            return lzma.decompress(body)
        if enc in ("bz2", "bzip2"):
            return bz2.decompress(body)
        if enc == "zstd" and zstandard is not None:
            return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body), read_across_frames=True).read()
        if enc == "lz4" and lz4_frame is not None:
            return lz4_frame.decompress(body)
    except Exception as e:  # noqa: BLE001 - any decoder failure is the client's data
        raise FrontError(engine.code("CANNOT_DECOMPRESS"),
                         f"Cannot decode the request body as {enc}: {e}") from None
    if enc in ("br", "snappy", "zstd", "lz4"):
        raise FrontError(engine.code("NOT_IMPLEMENTED"),
                         f"Content-Encoding {enc} is not supported by this test front")
    raise FrontError(engine.code("BAD_ARGUMENTS"), f"Unknown HTTP Content-Encoding: {encoding}")


def http_encoding_for(accept: str):
    """ClickHouse's choice among the Accept-Encoding methods (a substring test, in this order)."""
    for name in ("gzip", "deflate", "xz", "zstd", "lz4", "bz2"):
        if name in accept.lower():
            if name == "zstd" and zstandard is None or name == "lz4" and lz4_frame is None:
                continue
            return name
    return None


def http_encode(body: bytes, method: str, level: int) -> bytes:
    if method == "gzip":
        return gzip.compress(body, compresslevel=level, mtime=0)
    if method == "deflate":
        return zlib.compress(body, level)
    if method == "xz":
        return lzma.compress(body)
    if method == "bz2":
        return bz2.compress(body)
    if method == "zstd":
        return zstandard.ZstdCompressor().compress(body)
    if method == "lz4":
        return lz4_frame.compress(body)
    raise AssertionError(method)


def native_available() -> bool:
    return lz4_block is not None and CityHash128 is not None


def _checksum(block: bytes) -> bytes:
    h = CityHash128(block)
    return struct.pack("<QQ", h >> 64, h & 0xFFFFFFFFFFFFFFFF)


def native_compress(data: bytes, method: str = "lz4") -> bytes:
    """ClickHouse compressed blocks: checksum(16) method(1) size_with_header(4) raw_size(4) data."""
    out = bytearray()
    for off in range(0, len(data), NATIVE_BLOCK):
        raw = data[off:off + NATIVE_BLOCK]
        if method == "zstd" and zstandard is not None:
            code, packed = NATIVE_ZSTD, zstandard.ZstdCompressor(level=1).compress(raw)
        elif method == "none":
            code, packed = NATIVE_NONE, raw
        else:
            code, packed = NATIVE_LZ4, lz4_block.compress(raw, store_size=False)
        block = struct.pack("<BII", code, len(packed) + 9, len(raw)) + packed
        out += _checksum(block) + block
    return bytes(out)


def native_decompress(data: bytes, engine: Engine) -> bytes:
    out, pos = bytearray(), 0
    bad = engine.code("CANNOT_DECOMPRESS")
    while pos < len(data):
        if len(data) - pos < 25:
            raise FrontError(bad, "Cannot decompress: truncated compressed block header")
        checksum = data[pos:pos + 16]
        code, size, raw_size = struct.unpack_from("<BII", data, pos + 16)
        block = data[pos + 16:pos + 16 + size]
        if size < 9 or len(block) != size:
            raise FrontError(bad, "Cannot decompress: truncated compressed block")
        if _checksum(block) != checksum:
            raise FrontError(engine.code("CHECKSUM_DOESNT_MATCH"),
                             "Checksum doesn't match: corrupted data")
        packed = block[9:]
        try:
            if code == NATIVE_LZ4:
                out += lz4_block.decompress(packed, uncompressed_size=raw_size)
            elif code == NATIVE_ZSTD and zstandard is not None:
                out += zstandard.ZstdDecompressor().decompress(packed, max_output_size=raw_size)
            elif code == NATIVE_NONE:
                out += packed
            else:
                raise FrontError(bad, f"Unknown compression method: {code:#x}")
        except FrontError:
            raise
        except Exception as e:  # noqa: BLE001
            raise FrontError(bad, f"Cannot decompress: {e}") from None
        pos += 16 + size
    return bytes(out)


# ----------------------------------------------------------------------------- HTTP

def log(msg: str):
    sys.stderr.write(f"chdb_front: {msg}\n")
    sys.stderr.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = DISPLAY_NAME
    sys_version = ""
    timeout = 30  # idle keep-alive connections close after this, as keep_alive_timeout

    engine: Engine = None  # set by main()
    users: dict = {}
    verbose = False

    def version_string(self):
        return DISPLAY_NAME

    def log_message(self, format, *args):  # noqa: A002 - BaseHTTPRequestHandler's name
        if self.verbose:
            log(format % args)

    def do_GET(self):
        self.serve()

    def do_POST(self):
        self.serve()

    def do_PUT(self):
        self.serve()

    def do_DELETE(self):
        self.serve()

    # -- plumbing
    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = bytearray()
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ConnectionError("EOF in chunked body")
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                chunk = self.rfile.read(size)
                if len(chunk) != size:
                    raise ConnectionError("EOF in chunk")
                out += chunk
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if len(body) != length:
            raise ConnectionError("EOF in body")
        return body

    def reply(self, status: int, body: bytes, headers: dict):
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Keep-Alive", f"timeout={self.timeout}")
        self.end_headers()
        self.wfile.write(body)

    def fail(self, err: FrontError, headers: dict, encode=None):
        eng = self.engine
        name = eng.code_names.get(err.code, "UNKNOWN_EXCEPTION")
        body = f"Code: {err.code}. DB::Exception: {err.message}. ({name}) {VERSION_SUFFIX}\n".encode()
        headers = dict(headers)
        headers["Content-Type"] = "text/plain; charset=UTF-8"
        headers["X-ClickHouse-Exception-Code"] = str(err.code)
        if encode:
            body = encode(body, headers)
        self.reply(eng.status.get(err.code, 500), body, headers)

    def credentials(self, qs: dict):
        """(user, password) the way ClickHouse's authenticateUserByHTTP takes them."""
        auth_failed = self.engine.code("AUTHENTICATION_FAILED")

        def mixed(a, b):
            return FrontError(auth_failed, f"Invalid authentication: it is not allowed to use {a} and {b} simultaneously")

        user, key = self.headers.get("X-ClickHouse-User", ""), self.headers.get("X-ClickHouse-Key", "")
        basic = self.headers.get("Authorization")
        in_params = "user" in qs or "password" in qs
        if user or key:
            if basic is not None:
                raise mixed("X-ClickHouse HTTP headers", "Authorization HTTP header")
            if in_params:
                raise mixed("X-ClickHouse HTTP headers", "authentication via parameters")
            if not user:
                raise FrontError(auth_failed, "Got an empty user name from X-ClickHouse HTTP headers")
            return user, key
        if basic is not None:
            if in_params:
                raise mixed("Authorization HTTP header", "authentication via parameters")
            scheme, _, info = basic.strip().partition(" ")
            if scheme.lower() != "basic":
                raise FrontError(auth_failed, f"Invalid authentication: '{scheme}' HTTP Authorization scheme is not supported")
            try:
                user, _, key = base64.b64decode(info.strip(), validate=True).decode("utf-8").partition(":")
            except Exception:  # noqa: BLE001
                raise FrontError(auth_failed, "Invalid authentication: bad Basic credentials") from None
            if not user:
                raise FrontError(auth_failed, "Got an empty user name from Authorization HTTP header")
            return user, key
        user = qs.get("user", "default")
        if not user:
            raise FrontError(auth_failed, "Got an empty user name from authentication via parameters")
        return user, qs.get("password", "")

    def authenticate(self, qs: dict):
        if not self.users:
            return  # no --user: everyone is accepted (privileges are never enforced)
        user, key = self.credentials(qs)
        expected = self.users.get(user)
        if expected is None or not hmac.compare_digest(expected.encode(), key.encode()):
            raise FrontError(self.engine.code("AUTHENTICATION_FAILED"),
                             f"{user}: Authentication failed: password is incorrect, or there is no user with such name")

    # -- a request
    def serve(self):
        eng = self.engine
        query_id = None
        headers = {"X-ClickHouse-Server-Display-Name": DISPLAY_NAME}
        try:
            body = self.read_body()
        except (ValueError, ConnectionError) as e:
            self.close_connection = True
            self.fail(FrontError(eng.code("CANNOT_READ_ALL_DATA"), f"Cannot read the request body: {e}"),
                      headers)
            return
        url = urlsplit(self.path)
        if url.path == "/ping":
            self.reply(200, b"Ok.\n", {"Content-Type": "text/plain; charset=UTF-8"})
            return
        if url.path != "/":
            self.reply(404, f"There is no handle {url.path}\n\nUse / or /ping for health checks.\n"
                       "Send queries from your program with POST method or GET /?query=...\n".encode(),
                       {"Content-Type": "text/plain; charset=UTF-8"})
            return
        try:
            pairs = parse_qsl(url.query, keep_blank_values=True, errors="strict")
        except UnicodeDecodeError:
            self.fail(FrontError(eng.code("BAD_ARGUMENTS"), "URL parameters are not valid UTF-8"), headers)
            return
        qs = {}
        for k, v in pairs:
            qs.setdefault(k, v)
        if self.command == "GET" and "query" not in qs and not body:
            self.reply(200, b"Ok.\n", {"Content-Type": "text/plain; charset=UTF-8"})
            return
        query_id = qs.get("query_id") or str(uuid.uuid4())
        headers["X-ClickHouse-Query-Id"] = query_id
        headers["X-ClickHouse-Timezone"] = eng.timezone
        encode = None
        try:
            self.authenticate(qs)
            body = http_decode(body, self.headers.get("Content-Encoding", ""), eng)
            if qs.get("decompress", "0") not in ("0", "", "false"):
                if not native_available():
                    raise FrontError(eng.code("NOT_IMPLEMENTED"),
                                     "decompress=1 needs the lz4 and clickhouse-cityhash modules")
                body = native_decompress(body, eng)
            params, settings = {}, []
            readonly = 0
            for k, v in pairs:
                if k.startswith("param_"):
                    params.setdefault(k[len("param_"):], v)
                elif k in RESERVED_PARAMS or k in FRONT_SETTINGS or k in IGNORED_SETTINGS or not k:
                    continue
                elif not SETTING_NAME.match(k):
                    raise FrontError(eng.code("UNKNOWN_SETTING"), f"Unknown setting '{k}'")
                else:
                    settings.append((k, v))
            if "readonly" in qs:
                try:
                    readonly = int(qs["readonly"])
                except ValueError:
                    raise FrontError(eng.code("CANNOT_PARSE_NUMBER"),
                                     f"Cannot parse readonly value '{qs['readonly']}'") from None
            if self.command != "POST" and readonly == 0:
                readonly = 2  # ClickHouse's setReadOnlyIfHTTPMethodIdempotent
            encode = self.response_encoder(qs)
            fmt = qs.get("default_format") or self.headers.get("X-ClickHouse-Format") or "TabSeparated"
            database = qs.get("database") or self.headers.get("X-ClickHouse-Database")
            text = qs.get("query", "")
            full = (text.encode() + b"\n" if text else b"") + body
            if not full.strip():
                raise FrontError(eng.code("SYNTAX_ERROR"), "Empty query")
            result, out_fmt, stats = eng.execute(full, params, settings, database, fmt, readonly)
        except FrontError as err:
            if err.code == eng.codes.get("AUTHENTICATION_FAILED"):
                encode = None  # refused before any output is set up
            self.fail(err, headers, encode)
            return
        headers["Content-Type"] = content_type(out_fmt)
        headers["X-ClickHouse-Format"] = out_fmt
        headers["X-ClickHouse-Summary"] = json.dumps(stats, separators=(",", ":"))
        if encode:
            result = encode(result, headers)
        self.reply(200, result, headers)

    def response_encoder(self, qs: dict):
        """The response body's encodings (native blocks inside, HTTP compression outside)."""
        native = qs.get("compress", "0") not in ("0", "", "false")
        if native and not native_available():
            raise FrontError(self.engine.code("NOT_IMPLEMENTED"),
                             "compress=1 needs the lz4 and clickhouse-cityhash modules")
        http = None
        if qs.get("enable_http_compression", "0") not in ("0", "", "false"):
            http = http_encoding_for(self.headers.get("Accept-Encoding", ""))
        if not native and not http:
            return None
        level = int(qs.get("http_zlib_compression_level") or 3)
        method = qs.get("network_compression_method", "lz4").lower()

        def encode(body: bytes, headers: dict) -> bytes:
            if native:
                body = native_compress(body, method)
            if http:
                body = http_encode(body, http, level)
                headers["Content-Encoding"] = http
            return body
        return encode


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client that went away mid-response is not worth a traceback on stderr.
        if Handler.verbose:
            log(f"error serving {client_address}: {sys.exc_info()[1]!r}")


def content_type(fmt: str) -> str:
    if fmt in CONTENT_TYPES:
        return CONTENT_TYPES[fmt]
    if fmt.startswith("JSON"):
        return "application/json; charset=UTF-8"
    if fmt.startswith(BINARY_FORMATS):
        return "application/octet-stream"
    return "text/plain; charset=UTF-8"


# ----------------------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(description="ClickHouse HTTP interface over chdb (for tests)")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--user", action="append", default=[], metavar="NAME:PASSWORD")
    ap.add_argument("--max-lifetime", type=float, default=1800.0, metavar="SECONDS")
    ap.add_argument("--no-stdin-watch", action="store_true",
                    help="do not stop at EOF on stdin (for running by hand)")
    ap.add_argument("--verbose", action="store_true", help="log requests to stderr")
    ap.add_argument("--tls-cert", help="serve HTTPS with this PEM certificate (and --tls-key)")
    ap.add_argument("--tls-key")
    ap.add_argument("--tls-client-ca", help="require client certificates from this CA (mTLS)")
    args = ap.parse_args(argv)

    users = {}
    for spec in args.user:
        name, sep, password = spec.partition(":")
        if not sep or not name:
            ap.error(f"--user wants NAME:PASSWORD, got {spec!r}")
        users[name] = password

    os.makedirs(args.data_dir, exist_ok=True)
    engine = Engine(os.path.abspath(args.data_dir))
    Handler.engine, Handler.users, Handler.verbose = engine, users, args.verbose
    server = Server(("127.0.0.1", args.port), Handler)
    if args.tls_cert:
        # HTTPS like ClickHouse's https_port: the handshake happens at accept;
        # a failed one drops that connection only.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        if args.tls_client_ca:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(args.tls_client_ca)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)

    stopping = threading.Event()

    def stop(reason: str):
        if stopping.is_set():
            return
        stopping.set()
        if args.verbose:
            log(f"stopping: {reason}")
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, lambda *_: stop("SIGTERM"))
    signal.signal(signal.SIGINT, lambda *_: stop("SIGINT"))
    timer = threading.Timer(args.max_lifetime, stop, args=("max lifetime reached",))
    timer.daemon = True
    timer.start()
    if not args.no_stdin_watch:
        def watch_stdin():
            try:
                while sys.stdin.buffer.read1(65536):
                    pass
            except Exception:  # noqa: BLE001 - no usable stdin counts as closed
                pass
            stop("stdin closed")
        threading.Thread(target=watch_stdin, daemon=True).start()

    sys.stdout.write(f"LISTENING {server.server_address[1]}\n")
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # nothing else may reach the parent's pipe
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        if engine.lock.acquire(timeout=10):
            engine.close()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
