"""The deployment files in deploy/ meet the production checklist
(shared/design/security-checklist.md). No Docker engine or cluster runs
here, so they are checked by parsing; the settings they give otelhouse are
checked by the real binary (`serve --print-config`)."""

from __future__ import annotations

import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

from conftest import otelhouse_binary

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
CLICKHOUSE_PORTS = {8123, 8443, 9000, 9440, 9004, 9005, 9009, 9363, 27017, 13133, 8888, 24225}
SECRETISH = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$", re.I)


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def published(service: dict) -> set[int]:
    ports = set()
    for p in service.get("ports", []):
        text = str(p["published"] if isinstance(p, dict) else p)
        ports.add(int(text.split(":")[-2] if text.count(":") >= 1 else text))
    return ports


def test_dockerfile_is_multistage_distroless_nonroot_and_auditable():
    text = (DEPLOY / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert len(froms) >= 2, "multi-stage"
    assert froms[-1].startswith("gcr.io/distroless/") and froms[-1].endswith(":nonroot"), froms[-1]
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    assert "cargo auditable build" in text
    assert "--locked" in text
    final = text[text.rfind("FROM "):]
    assert not re.search(r"^(RUN|ADD)\b", final, re.M), "nothing runs in the final stage (no shell there)"
    assert re.search(r'^ENTRYPOINT \["/usr/local/bin/otelhouse"\]', final, re.M), "exec form entrypoint"
    assert not re.search(r"^ENV\s+\S*(PASSWORD|SECRET)", text, re.M), "no secrets baked in"


def test_compose_publishes_only_otlp_and_ui():
    services = compose()["services"]
    assert published(services["otelhouse"]) == {4317, 4318, 8080}
    for name, svc in services.items():
        assert not published(svc) & CLICKHOUSE_PORTS, f"{name} publishes an internal port (NET-1)"
    assert "ports" not in services["clickhouse"], "ClickHouse is never published"
    nets = compose()["networks"]
    assert nets["internal"]["internal"] is True
    assert services["clickhouse"]["networks"] == ["internal"]


def test_compose_services_are_hardened():
    for name, svc in compose()["services"].items():
        assert svc.get("read_only") is True, f"{name}: read_only (IMG-2)"
        assert svc.get("cap_drop") == ["ALL"], f"{name}: cap_drop ALL"
        assert "no-new-privileges:true" in svc.get("security_opt", []), name
        assert svc.get("tmpfs"), f"{name}: a tmpfs for /tmp with a read-only root"
    assert compose()["services"]["otelhouse"]["user"].split(":")[0] != "0"


def test_compose_has_no_inline_credentials():
    doc = compose()
    for name, svc in doc["services"].items():
        env = svc.get("environment", {})
        for key, value in (env.items() if isinstance(env, dict) else (e.split("=", 1) for e in env)):
            if SECRETISH.search(key) or key.endswith(("_CERT", "_KEY")):
                assert str(value).startswith("/run/secrets/") or key.endswith("_FILE"), \
                    f"{name}: {key} must point at a secret file (SEC-2), not hold a value"
    for secret in doc["secrets"].values():
        assert set(secret) == {"file"} and secret["file"].startswith("./secrets/")
    ignored = (DEPLOY / ".gitignore").read_text().split()
    assert "secrets/" in ignored and "clickhouse.env" in ignored


def test_compose_settings_pass_the_startup_gate_inputs(tmp_path):
    """The binary accepts the compose command and environment as given."""
    svc = compose()["services"]["otelhouse"]
    env = {k: str(v) for k, v in svc["environment"].items()}
    env["OTELHOUSE_DATA_DIR"] = str(tmp_path)
    out = subprocess.run([str(otelhouse_binary()), *svc["command"], "--print-config"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert 'otlp_grpc_addr = "0.0.0.0:4317"' in out.stdout
    assert 'cert = "/run/secrets/otelhouse_tls_cert"' in out.stdout
    assert "allow_plaintext_behind_proxy = false" in out.stdout


def clickhouse_xml(name: str) -> ET.Element:
    return ET.parse(DEPLOY / "clickhouse" / name).getroot()


def test_clickhouse_server_is_tls_only_with_strict_verification_and_audit():
    root = clickhouse_xml("config.d/otelhouse.xml")
    for port in ("http_port", "tcp_port", "mysql_port", "postgresql_port", "interserver_http_port"):
        assert root.find(port).get("remove") == "1", f"{port} must be removed (CH-2)"
    assert root.findtext("https_port") == "8443" and root.findtext("tcp_port_secure") == "9440"
    for side in ("server", "client"):
        s = root.find(f"openSSL/{side}")
        assert s.findtext("verificationMode") == "strict", f"{side}: verificationMode strict (TLS-4)"
        assert {"sslv2", "sslv3", "tlsv1", "tlsv1_1"} <= set(s.findtext("disableProtocols").split(","))
        assert s.findtext("invalidCertificateHandler/name") == "RejectCertificateHandler"
    assert root.find("query_log") is not None and root.find("session_log") is not None, "CH-9"


def test_clickhouse_users_have_hashed_passwords_and_default_is_local_only():
    root = clickhouse_xml("users.d/otelhouse.xml")
    users = root.find("users")
    for user in users:
        for bad in ("password", "no_password", "plaintext_password", "double_sha1_password",
                    "password_double_sha1_hex"):
            assert user.find(bad) is None, f"{user.tag}: {bad} (CH-3, CH-4)"
        h = user.find("password_sha256_hex")
        assert h is not None and h.get("from_env") and not (h.text or "").strip(), \
            f"{user.tag}: sha256 hash from the environment, none inline (SEC-2)"
        nets = [ip.text for ip in user.findall("networks/ip")]
        assert nets and "::/0" not in nets and "0.0.0.0/0" not in nets, f"{user.tag}: networks (CH-5)"
    default = users.find("default")
    assert sorted(ip.text for ip in default.findall("networks/ip")) == ["127.0.0.1", "::1"]
    assert default.findtext("access_management") == "0"
    assert root.findtext("profiles/readonly_limits/readonly") == "1"


def k8s() -> list[dict]:
    docs = []
    for f in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(f.read_text()) if d]
    return docs


def kind(k: str) -> list[dict]:
    return [d for d in k8s() if d.get("kind") == k]


def test_kubernetes_namespace_enforces_restricted_pod_security():
    (ns,) = kind("Namespace")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_kubernetes_pods_meet_the_restricted_standard():
    (sts,) = kind("StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    for c in pod["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"]["drop"] == ["ALL"]
        env = {e["name"]: e.get("value") for e in c["env"]}
        # Secret-looking variables hold file paths, never values (SEC-2).
        assert all(not SECRETISH.search(k) or (v or "").startswith("/") for k, v in env.items()), env
        assert env["OTELHOUSE_TLS_CERT"] and env["OTELHOUSE_TLS_KEY"], "TLS on: the listeners are public"
    for v in pod["volumes"]:
        if "secret" in v:
            assert v["secret"]["defaultMode"] & 0o007 == 0, f"{v['name']}: not world-readable"


def test_kubernetes_network_policy_denies_by_default():
    policies = {p["metadata"]["name"]: p for p in kind("NetworkPolicy")}
    deny = policies["default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    allow = policies["otelhouse"]["spec"]
    ports = {p["port"] for rule in allow["ingress"] for p in rule["ports"]}
    assert ports == {4317, 4318, 8080}
    (svc,) = kind("Service")
    assert svc["spec"]["type"] == "ClusterIP"


def test_kubernetes_secrets_come_from_uncommitted_files():
    kust = yaml.safe_load((DEPLOY / "kubernetes" / "kustomization.yaml").read_text())
    files = {f for g in kust["secretGenerator"] for f in g["files"]}
    assert files == {"tls.crt", "tls.key", "session-secret"}
    ignored = (DEPLOY / ".gitignore").read_text().split()
    assert all(f"kubernetes/{f}" in ignored for f in files)
    assert not kind("Secret"), "no Secret with data in the repository"
