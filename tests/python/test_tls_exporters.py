"""The official OpenTelemetry SDK exporters against otelhouse over TLS with
client certificates (mTLS), using certificates made by `otelhouse certs`.

grpcio brings its own TLS stack (BoringSSL) and `requests` uses OpenSSL, so
this also shows our certificates and listeners work with TLS stacks other
than rustls.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import grpc
import pytest
import requests
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource

from conftest import otelhouse_binary


def run(*args: str) -> str:
    out = subprocess.run([str(otelhouse_binary()), *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"otelhouse {' '.join(args)}: {out.stdout}{out.stderr}"
    return out.stdout


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tls")
    ca_dir = tmp / "ca"
    run("certs", "init-ca", "--ca-dir", str(ca_dir), "--name", "Python Test CA")
    run("certs", "issue", "--ca-dir", str(ca_dir), "--dns", "localhost", "--ip", "127.0.0.1")
    run("certs", "issue", "--ca-dir", str(ca_dir), "--client", "--name", "python-sdk")
    data = tmp / "data"
    creds = json.loads(run("init", "--data-dir", str(data), "--json"))
    log = open(tmp / "otelhouse.log", "wb")
    proc = subprocess.Popen(
        [str(otelhouse_binary()), "serve", "--data-dir", str(data),
         "--otlp-grpc-addr", "127.0.0.1:0", "--otlp-http-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
         "--tls-cert", str(ca_dir / "localhost.crt"), "--tls-key", str(ca_dir / "localhost.key"),
         "--tls-client-ca", str(ca_dir / "ca.crt")],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    log.close()
    deadline = time.monotonic() + 30
    listen = None
    while listen is None:
        assert proc.poll() is None, (tmp / "otelhouse.log").read_text()
        assert time.monotonic() < deadline, "server did not start"
        try:
            listen = json.loads((data / "listen.json").read_text())
        except (OSError, ValueError):
            time.sleep(0.1)
    assert listen["tls"] is True
    yield {"ca_dir": ca_dir, "creds": creds, "listen": listen}
    proc.terminate()
    proc.wait(timeout=30)


def port(addr: str) -> str:
    return addr.rsplit(":", 1)[1]


def send_log(exporter, body: str):
    provider = LoggerProvider(resource=Resource.create({"service.name": "python-tls"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    provider.get_logger("tls-test").emit(body=body, severity_number=SeverityNumber.INFO)
    provider.shutdown()


def search(s, q: str) -> list:
    ca = s["ca_dir"] / "ca.crt"
    url = f"https://localhost:{port(s['listen']['http'])}/api/v1/search"
    r = requests.get(url, params={"signal": "logs", "q": q, "limit": 10}, verify=str(ca), timeout=10,
                     headers={"Authorization": f"Bearer {s['creds']['api_token']}"})
    assert r.status_code == 200, r.text
    return r.json()["rows"]


def wait_for(s, q: str) -> list:
    deadline = time.monotonic() + 5
    while not (rows := search(s, q)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return rows


def test_grpc_exporter_with_client_certificate(tls_server):
    ca_dir = tls_server["ca_dir"]
    creds = grpc.ssl_channel_credentials(
        root_certificates=(ca_dir / "ca.crt").read_bytes(),
        private_key=(ca_dir / "python-sdk.key").read_bytes(),
        certificate_chain=(ca_dir / "python-sdk.crt").read_bytes())
    exporter = GrpcLogExporter(endpoint=f"https://localhost:{port(tls_server['listen']['otlp_grpc'])}",
                               credentials=creds, headers={"authorization": tls_server["creds"]["ingestion_key"]},
                               timeout=10)
    send_log(exporter, "grpc over mtls qx81")
    rows = wait_for(tls_server, "qx81")
    assert [r["Body"] for r in rows] == ["grpc over mtls qx81"]
    assert rows[0]["ServiceName"] == "python-tls"


def test_http_exporter_with_client_certificate(tls_server, monkeypatch):
    # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a session's
    # `verify` (psf/requests#3829), which would replace the exporter's
    # certificate_file with the system bundle on machines that set them.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    ca_dir = tls_server["ca_dir"]
    url = f"https://localhost:{port(tls_server['listen']['otlp_http'])}/v1/logs"
    exporter = HttpLogExporter(endpoint=url, certificate_file=str(ca_dir / "ca.crt"),
                               client_certificate_file=str(ca_dir / "python-sdk.crt"),
                               client_key_file=str(ca_dir / "python-sdk.key"),
                               headers={"authorization": tls_server["creds"]["ingestion_key"]}, timeout=10)
    send_log(exporter, "http over mtls qx82")
    assert [r["Body"] for r in wait_for(tls_server, "qx82")] == ["http over mtls qx82"]


def test_without_client_certificate_nothing_lands(tls_server, monkeypatch):
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    ca_dir = tls_server["ca_dir"]
    url = f"https://localhost:{port(tls_server['listen']['otlp_http'])}/v1/logs"
    with pytest.raises(requests.exceptions.SSLError):
        requests.post(url, data=b"", verify=str(ca_dir / "ca.crt"), timeout=10,
                      headers={"authorization": tls_server["creds"]["ingestion_key"]})
    exporter = HttpLogExporter(endpoint=url, certificate_file=str(ca_dir / "ca.crt"),
                               headers={"authorization": tls_server["creds"]["ingestion_key"]}, timeout=5)
    send_log(exporter, "no client cert qx83")
    time.sleep(1.5)
    assert search(tls_server, "qx83") == []


def test_openssl_clients_verify_the_server_against_our_ca(tls_server):
    ca = tls_server["ca_dir"] / "ca.crt"
    base = f"https://localhost:{port(tls_server['listen']['http'])}"
    assert requests.get(base + "/healthz", verify=str(ca), timeout=10).status_code == 200
    # 127.0.0.1 is in the certificate's SANs as an IP address.
    assert requests.get(f"https://127.0.0.1:{port(tls_server['listen']['http'])}/healthz",
                        verify=str(ca), timeout=10).status_code == 200
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(base + "/healthz", timeout=10)  # system roots do not know our CA
