"""Webhook TLS made by the project, and the Service-reference registration (in-cluster)."""

from __future__ import annotations

import base64
import ssl
from pathlib import Path
from typing import Any

from cryptography import x509

from yolofit.operator.certs import ensure_certs, service_names
from yolofit.operator.testing import free_port
from yolofit.operator.webhooks import ServiceWebhookServer, TimedWebhookServer


def test_certs_cover_the_names_and_are_reused(tmp_path: Path) -> None:
    names = ["127.0.0.1", "localhost", *service_names("yolofit-webhook", "yolofit-system")]
    certs = ensure_certs(tmp_path, names)
    cert = x509.load_pem_x509_certificate(certs.certfile.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "yolofit-webhook.yolofit-system.svc" in san.get_values_for_type(x509.DNSName)
    ctx = ssl.create_default_context(cafile=str(certs.cafile))  # the CA verifies the cert
    ctx.load_verify_locations(cadata=certs.ca_pem.decode())
    ca_before = certs.ca_pem
    assert ensure_certs(tmp_path, names).ca_pem == ca_before  # restart keeps the caBundle
    assert ensure_certs(tmp_path, [*names, "other.example"]).ca_pem != ca_before


async def _first_config(server: Any) -> dict[str, Any]:
    async def fn(*_: Any, **__: Any) -> Any:
        return {}

    gen = server(fn)
    try:
        return dict(await gen.__anext__())
    finally:
        await gen.aclose()


async def test_service_mode_registers_a_service_reference(tmp_path: Path) -> None:
    certs = ensure_certs(tmp_path, ["127.0.0.1", *service_names("hook", "ops")])
    server = ServiceWebhookServer(service="hook", namespace="ops", addr="127.0.0.1",
                                  port=free_port(), cafile=str(certs.cafile),
                                  certfile=str(certs.certfile), pkeyfile=str(certs.pkeyfile))
    config = await _first_config(server)
    assert config["service"] == {"namespace": "ops", "name": "hook", "port": 443, "path": ""}
    assert base64.b64decode(config["caBundle"]) == certs.ca_pem
    assert "url" not in config


async def test_url_mode_registers_the_loopback_url(tmp_path: Path) -> None:
    certs = ensure_certs(tmp_path, ["127.0.0.1"])
    port = free_port()
    server = TimedWebhookServer(addr="127.0.0.1", host="127.0.0.1", port=port,
                                cafile=str(certs.cafile), certfile=str(certs.certfile),
                                pkeyfile=str(certs.pkeyfile))
    config = await _first_config(server)
    assert config["url"] == f"https://127.0.0.1:{port}"
