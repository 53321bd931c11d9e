"""Kueue in the sandbox, without running it: the CRDs and webhook configurations read from
Kueue's own module source and rewritten for an off-cluster manager, and its configuration."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import pytest

from yolofit.sandbox import build
from yolofit.sandbox import kueue as sk

needs_go = pytest.mark.skipif(
    shutil.which("go") is None and not any(Path(p).exists() for p in build.GO_FALLBACKS),
    reason="needs the Go toolchain (and the Kueue module in its cache)",
)
URL = "https://127.0.0.1:9999"
CA = b"-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n"


@pytest.fixture(scope="module")
def module() -> Path:
    return sk.module_dir()


@needs_go
def test_module_is_the_pinned_version(module: Path) -> None:
    assert module.name == f"kueue@{sk.KUEUE_VERSION}"


@needs_go
def test_crds_from_source_with_url_conversion(module: Path) -> None:
    docs = sk.crds(module, URL, CA)
    names = {d["metadata"]["name"] for d in docs}
    assert {"workloads.kueue.x-k8s.io", "clusterqueues.kueue.x-k8s.io",
            "resourceflavors.kueue.x-k8s.io", "localqueues.kueue.x-k8s.io"} <= names
    for d in docs:
        conv = d["spec"].get("conversion")
        if d["spec"]["names"]["plural"] in sk.CONVERSION_CRDS:
            cfg = conv["webhook"]["clientConfig"]
            assert cfg == {"url": f"{URL}/convert", "caBundle": base64.b64encode(CA).decode()}
        else:
            assert conv is None or conv.get("strategy") != "Webhook"


@needs_go
def test_webhooks_only_served_paths_as_urls(module: Path) -> None:
    confs = sk.webhook_configurations(module, URL, CA)
    assert [c["metadata"]["name"] for c in confs] == [
        "kueue-mutating-webhook-configuration", "kueue-validating-webhook-configuration"]
    hooks = [h for c in confs for h in c["webhooks"]]
    paths = sorted(h["clientConfig"]["url"].removeprefix(URL) for h in hooks)
    assert "/mutate--v1-pod" in paths and "/validate--v1-pod" in paths
    assert "/mutate-kueue-x-k8s-io-v1beta2-workload" in paths
    assert not any("batch-v1-job" in p or "ray-io" in p for p in paths)  # not run here
    for h in hooks:
        assert "service" not in h["clientConfig"]
        if h["name"] in ("mpod.kb.io", "vpod.kb.io"):
            values = h["namespaceSelector"]["matchExpressions"][0]["values"]
            assert values == ["kube-system", sk.NAMESPACE]


def test_configuration_is_off_cluster() -> None:
    cfg = sk.configuration(sk.KueuePorts(1, 2, 3), Path("/tmp/c"))
    assert cfg["webhook"] == {"port": 1, "host": "127.0.0.1", "certDir": "/tmp/c"}
    assert cfg["health"]["healthProbeBindAddress"] == "127.0.0.1:2"
    assert cfg["internalCertManagement"]["webhookServiceName"] == sk.SERVICE
    assert cfg["integrations"]["frameworks"] == ["pod"]
    assert cfg["leaderElection"] == {"leaderElect": False}


def test_seeded_certificates_pass_the_rotators_checks(tmp_path: Path) -> None:
    from cryptography import x509

    ca_pem, files = sk._seed_certs(tmp_path)
    ca = x509.load_pem_x509_certificate(ca_pem)
    san = ca.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [sk.CA_NAME]
    leaf = x509.load_pem_x509_certificate(files["tls.crt"])
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"{sk.SERVICE}.{sk.NAMESPACE}.svc" in san.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    leaf.verify_directly_issued_by(ca)
    assert (tmp_path / "tls.key").stat().st_mode & 0o077 == 0
