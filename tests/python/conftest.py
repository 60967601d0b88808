"""Starts one real otelhouse server for the test session.

Binary: $OTELHOUSE_BIN, else $CARGO_TARGET_DIR/debug/otelhouse with
CARGO_TARGET_DIR defaulting to ~/.cache/otelhouse-target. A missing binary is
a test error, never a skip: CI must not pass without running the server.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import requests

STARTUP_TIMEOUT = 30.0
VISIBILITY_TIMEOUT = 5.0  # spec: visible within 1 s of acknowledgement; be generous


def otelhouse_binary() -> Path:
    if os.environ.get("OTELHOUSE_BIN"):
        path = Path(os.environ["OTELHOUSE_BIN"])
    else:
        target = os.environ.get("CARGO_TARGET_DIR") or os.path.expanduser("~/.cache/otelhouse-target")
        path = Path(target) / "debug" / "otelhouse"
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"otelhouse binary not found at {path}: build it first (`cargo build`) or set "
                    f"OTELHOUSE_BIN / CARGO_TARGET_DIR", pytrace=False)
    return path


@dataclass
class Server:
    data_dir: Path
    proc: subprocess.Popen
    creds: dict
    stderr_path: Path
    listen: dict = field(default_factory=dict)

    # -- addresses and keys
    @property
    def http(self) -> str:
        return f"http://{self.listen['http']}"

    @property
    def otlp_http(self) -> str:
        return f"http://{self.listen['otlp_http']}"

    @property
    def otlp_grpc(self) -> str:
        return self.listen["otlp_grpc"]

    @property
    def ingestion_key(self) -> str:
        return self.creds["ingestion_key"]

    def stderr_tail(self, n: int = 200) -> str:
        try:
            return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-n:])
        except OSError as e:
            return f"<no stderr: {e}>"

    # -- query API
    def api_get(self, path: str, **params: Any) -> dict:
        """GET an API path; `from_=` stands for `from`; None params are dropped."""
        query = {k.rstrip("_"): v for k, v in params.items() if v is not None}
        r = requests.get(self.http + path, params=query, timeout=10,
                         headers={"Authorization": f"Bearer {self.creds['api_token']}"})
        assert r.status_code == 200, f"GET {path} {query} -> {r.status_code}: {r.text[:2000]}"
        return r.json()

    def wait_rows(self, path: str, *, where: Callable[[dict], bool] = lambda r: True,
                  count: int = 1, timeout: float = VISIBILITY_TIMEOUT, **params: Any) -> list[dict]:
        """Poll until at least `count` rows satisfy `where`; return those rows."""
        deadline = time.monotonic() + timeout
        while True:
            rows = [r for r in self.api_get(path, **params)["rows"] if where(r)]
            if len(rows) >= count or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(rows) >= count, f"{path} {params}: wanted {count} rows, got {len(rows)}: {rows}"
        return rows

    def rows_after_settling(self, path: str, *, where: Callable[[dict], bool] = lambda r: True,
                            settle: float = 1.5, **params: Any) -> list[dict]:
        """For 'nothing was stored' checks: wait past the visibility delay, then query once."""
        time.sleep(settle)
        return [r for r in self.api_get(path, **params)["rows"] if where(r)]

    # -- ingestion
    def post_otlp(self, signal: str, body: bytes | dict, *, key: str | None = "default",
                  content_type: str = "application/json") -> requests.Response:
        headers = {"Content-Type": content_type}
        if key == "default":
            key = self.ingestion_key
        if key is not None:
            headers["authorization"] = key
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        return requests.post(f"{self.otlp_http}/v1/{signal}", data=data, headers=headers, timeout=10)


_RUNNING: list[Server] = []


def _start(binary: Path, data_dir: Path) -> Server:
    init = subprocess.run([str(binary), "init", "--data-dir", str(data_dir), "--json"],
                          capture_output=True, text=True, timeout=60)
    if init.returncode != 0:
        pytest.fail(f"`otelhouse init` exited {init.returncode}:\n{init.stderr}", pytrace=False)
    try:
        creds = json.loads(init.stdout)
    except ValueError:
        pytest.fail(f"`otelhouse init --json` printed no JSON object:\n{init.stdout}", pytrace=False)
    missing = {"admin_email", "admin_password", "ingestion_key", "api_token"} - set(creds)
    assert not missing, f"`otelhouse init --json` output lacks {missing}: {creds}"

    stderr_path = data_dir.parent / "otelhouse.log"  # stderr and stdout
    stderr = open(stderr_path, "wb")
    proc = subprocess.Popen(
        [str(binary), "serve", "--data-dir", str(data_dir), "--otlp-grpc-addr", "127.0.0.1:0",
         "--otlp-http-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"],
        stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr)
    stderr.close()
    server = Server(data_dir, proc, creds, stderr_path)
    _RUNNING.append(server)

    deadline = time.monotonic() + STARTUP_TIMEOUT
    listen_file = data_dir / "listen.json"

    def fail(why: str):
        _stop(server)
        pytest.fail(f"otelhouse serve {why}; stderr:\n{server.stderr_tail()}", pytrace=False)

    while not server.listen:
        if proc.poll() is not None:
            fail(f"exited with {proc.returncode} before writing listen.json")
        if time.monotonic() > deadline:
            fail(f"wrote no {listen_file} within {STARTUP_TIMEOUT:.0f}s")
        try:
            server.listen = json.loads(listen_file.read_text())
        except (OSError, ValueError):  # not there yet, or half written
            time.sleep(0.1)
    assert {"otlp_grpc", "otlp_http", "http"} <= set(server.listen), f"listen.json: {server.listen}"

    while True:
        try:
            if requests.get(server.http + "/readyz", timeout=2).status_code == 200:
                return server
        except requests.RequestException:
            pass
        if proc.poll() is not None:
            fail(f"exited with {proc.returncode} before /readyz answered 200")
        if time.monotonic() > deadline:
            fail(f"/readyz not 200 within {STARTUP_TIMEOUT:.0f}s")
        time.sleep(0.2)


def _stop(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()
    if server in _RUNNING:
        _RUNNING.remove(server)


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    binary = otelhouse_binary()
    data_dir = tmp_path_factory.mktemp("otelhouse") / "data"
    data_dir.mkdir()
    srv = _start(binary, data_dir)
    yield srv
    _stop(srv)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the server's stderr to every failing test's report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for srv in _RUNNING:
            report.sections.append((f"otelhouse output ({srv.stderr_path})", srv.stderr_tail()))
