"""Webhook TLS made by the project, and the admission server: its own thread and loop,
answering while the operator's loop is blocked, and the configurations it registers."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import urllib.request
from pathlib import Path
from typing import Any

from cryptography import x509

from yolofit.estimator.profile import ProfileStore
from yolofit.operator import webhook_config
from yolofit.operator.admission_server import AdmissionServer, latency_summary
from yolofit.operator.api import GPUCapacityPolicySpec
from yolofit.operator.certs import ensure_certs, service_names
from yolofit.operator.testing import free_port
from yolofit.operator.webhooks import Snapshot


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


def post(port: int, ca: Path, path: str, body: Any) -> dict[str, Any]:
    ctx = ssl.create_default_context(cafile=str(ca))
    req = urllib.request.Request(f"https://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
        return dict(json.loads(r.read()))


POLICY_REVIEW = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                 "request": {"uid": "abc", "operation": "CREATE",
                             "object": {"spec": {"classes": [{"name": "t4",
                                                              "memory": "80 gigs"}]}}}}


def test_admission_server_answers_while_the_operator_loop_is_blocked(tmp_path: Path) -> None:
    certs = ensure_certs(tmp_path, ["127.0.0.1"])
    snap = Snapshot(policy=GPUCapacityPolicySpec(), classes={},
                    store=ProfileStore(tmp_path / "p", shipped=None))
    server = AdmissionServer(snap, "127.0.0.1", free_port(), certs.certfile, certs.pkeyfile)
    server.start()
    answered = threading.Event()
    replies: list[dict[str, Any]] = []

    def client() -> None:
        replies.append(post(server.port, certs.cafile, "/validate-policy", POLICY_REVIEW))
        answered.set()

    async def operator_loop() -> bool:
        threading.Thread(target=client, daemon=True).start()
        # Block this loop outright (as a long reconcile or a GIL-free wait would): a review
        # served on it could not be answered until we return.
        return answered.wait(timeout=30)

    try:
        assert asyncio.run(operator_loop()), "no answer while the operator's loop was blocked"
        (reply,) = replies
        assert reply["response"]["uid"] == "abc" and reply["response"]["allowed"] is False
        assert "spec.classes[0].memory" in reply["response"]["status"]["message"]
        server.publish(Snapshot(policy=GPUCapacityPolicySpec(), classes={}, store=snap.store))
        assert server.snapshot is not snap
        assert latency_summary()["count"] >= 1
        bad = urllib.request.Request(f"https://127.0.0.1:{server.port}/validate", data=b"{[",
                                     headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(bad, context=ssl.create_default_context(
                cafile=str(certs.cafile)), timeout=30)
            raise AssertionError("junk body accepted")
        except urllib.error.HTTPError as exc:
            assert exc.code == 400
    finally:
        server.stop()


def test_webhook_configurations_skip_what_they_need_not_see() -> None:
    mutating, validating = webhook_config.webhook_configurations(
        "yolofit.io", b"ca", url="https://127.0.0.1:9443", operator_username="op")
    (plan,) = mutating["webhooks"]
    assert plan["clientConfig"]["url"] == "https://127.0.0.1:9443/mutate"
    assert plan["failurePolicy"] == "Fail"
    assert [c["name"] for c in plan["matchConditions"]] == ["spec-changed", "not-the-operator"]
    assert plan["matchConditions"][1]["expression"] == "request.userInfo.username != 'op'"
    names = {w["name"]: w for w in validating["webhooks"]}
    assert names["policy.yolofit.io"]["rules"][0]["resources"] == ["gpucapacitypolicies"]
    policy, binding = webhook_config.status_policy("s", "it's me")
    assert policy["spec"]["validations"][0]["expression"] == \
        "request.userInfo.username == 'it\\'s me'"
    assert binding["spec"]["policyName"] == "s"
