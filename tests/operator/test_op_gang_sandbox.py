"""Gangs, ownership and the cache on the real sandbox (kube-apiserver, kube-scheduler with
GenericWorkload on, kwok nodes), the operator running as in production.

Pools (deploy/fleet.yaml): a100-80gb and h100-80gb have two 8-GPU nodes each, t4 four
4-GPU nodes. Each test uses its own pool where it fills one, so tests do not wait on each
other's leftovers."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from opfixtures import summary
from sandboxjobs import (
    apply,
    bound,
    finish_all,
    gang_waits,
    get_job,
    job_yaml,
    phase_is,
    pods_of,
    running_pods,
)

from yolofit.sandbox.testing import finish_pod, wait_for

pytestmark = pytest.mark.integration


def test_the_gang_scheduler_is_what_holds_gangs(kubectl: Any) -> None:
    """The sandbox serves PodGroups (GenericWorkload + scheduling.k8s.io/v1beta1)."""
    out = kubectl("api-resources", "--api-group=scheduling.k8s.io", "-o", "name").stdout
    assert "podgroups.scheduling.k8s.io" in out.split()


def test_demo_shape_leaves_no_partial_gang(operator: Any, kubectl: Any, kube: Any,
                                           namespace: str) -> None:
    """As in the demo: an 8-GPU job takes one of the two a100 nodes, then a 2 x 8-GPU job
    pinned to a100 cannot be placed whole. It waits Queued with what is short and no pod of
    it holds a GPU; when the first job ends it is placed whole."""
    apply(kubectl, job_yaml("dense", namespace, nodes=1, per_node=8, gpuClass="a100-80gb"))
    wait_for(running_pods(kube, namespace, "dense", 1), 60, what="dense running")
    started = time.monotonic()
    apply(kubectl, job_yaml("hires", namespace, nodes=2, per_node=8, gpuClass="a100-80gb"))
    job = wait_for(gang_waits(kubectl, kube, namespace, "hires", 2), 60, what="hires Queued")
    msg = job["status"]["message"]
    assert "waits for room on a100-80gb" in msg and "no pod of it holds a GPU" in msg
    assert "1 of 2 have that now" in msg or "the scheduler says" in msg
    group = json.loads(kubectl("get", "podgroups.scheduling.k8s.io", "-n", namespace, "hires",
                               "-o", "json").stdout)
    assert group["spec"]["schedulingPolicy"]["gang"]["minCount"] == 2
    for pod in pods_of(kube, namespace, "hires"):
        assert pod.spec.scheduling_group.pod_group_name == "hires"
    time.sleep(3)  # give the scheduler every chance to bind a part of the gang
    assert bound(kube, namespace, "hires") == []
    print(f"\n[gang] hires queued (not partially placed) {time.monotonic() - started:.1f}s "
          f"after apply")

    finish_all(kube, namespace, "dense")
    released = time.monotonic()
    wait_for(running_pods(kube, namespace, "hires", 2), 90, what="hires placed whole")
    print(f"[gang] hires placed whole {time.monotonic() - released:.1f}s after dense ended")
    assert len({p.spec.node_name for p in pods_of(kube, namespace, "hires")}) == 2
    wait_for(phase_is(kubectl, namespace, "hires", "Running"), 30, what="hires Running")
    finish_all(kube, namespace, "hires")


def test_two_gangs_competing_for_one_pool_never_deadlock(operator: Any, kubectl: Any,
                                                         kube: Any, namespace: str) -> None:
    """Two 2 x 8-GPU jobs at once on the two-node h100 pool: one is placed whole, the other
    waits with nothing bound (no half of each holding a node), then runs after it."""
    started = time.monotonic()
    for name in ("left", "right"):
        apply(kubectl, job_yaml(name, namespace, nodes=2, per_node=8, gpuClass="h100-80gb"))

    def one_runs() -> Any:
        # (A gang's pods bind within moments of each other: a half seen in passing is not a
        # partial gang; one that stays is, and fails the checks below.)
        b = {n: bound(kube, namespace, n) for n in ("left", "right")}
        if sorted(len(v) for v in b.values()) != [0, 2]:
            return None
        return next(n for n, v in b.items() if len(v) == 2)

    first = wait_for(one_runs, 90, what="one gang placed whole")
    print(f"\n[gang] first 2-node gang placed {time.monotonic() - started:.1f}s after apply")
    second = "right" if first == "left" else "left"
    wait_for(running_pods(kube, namespace, first, 2), 60, what=f"{first} running")
    wait_for(gang_waits(kubectl, kube, namespace, second, 2), 60, what=f"{second} Queued")
    for _ in range(6):  # and it stays so: nothing of the second gang holds a node
        assert bound(kube, namespace, second) == [], "partial gang"
        time.sleep(0.5)
    finish_all(kube, namespace, first)
    released = time.monotonic()
    wait_for(running_pods(kube, namespace, second, 2), 90, what=f"{second} placed after")
    print(f"[gang] second gang placed {time.monotonic() - released:.1f}s after the first ended")
    finish_all(kube, namespace, second)
    wait_for(phase_is(kubectl, namespace, second, "Succeeded"), 60, what=f"{second} Succeeded")


def test_foreign_labelled_pod_is_not_adopted(operator: Any, kubectl: Any, kube: Any,
                                             namespace: str) -> None:
    kube.create_namespaced_pod(namespace, {
        "metadata": {"name": "intruder", "labels": {"yolofit.io/job": "solo",
                                                    "yolofit.io/attempt": "0"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}],
                 "schedulingGates": [{"name": "test/hold"}]}})
    apply(kubectl, job_yaml("solo", namespace, nodes=1, per_node=1))
    wait_for(lambda: [p for p in pods_of(kube, namespace, "solo")
                      if p.metadata.name == "solo-worker-0" and p.status.phase == "Running"],
             60, what="the job's own pod running")

    def reported() -> Any:
        conds = {c["type"]: c for c in (get_job(kubectl, namespace, "solo").get("status")
                                        or {}).get("conditions", [])}
        c = conds.get("ForeignObjects")
        return c if c and c["status"] == "True" else None

    cond = wait_for(reported, 30, what="ForeignObjects condition")
    assert "intruder" in cond["message"] and "not adopted" in cond["message"]
    reasons = kubectl("get", "events", "-n", namespace, "-o",
                      "jsonpath={.items[*].reason}").stdout.split()
    assert "ForeignObjects" in reasons
    job = wait_for(phase_is(kubectl, namespace, "solo", "Running"), 30, what="solo Running")
    assert job["status"]["workers"] == ["solo-worker-0"]
    intruder = kube.read_namespaced_pod("intruder", namespace)
    assert intruder.metadata.deletion_timestamp is None and not intruder.metadata.owner_references
    finish_pod(kube, namespace, "solo-worker-0", 0, message=summary(0, 3 * 2**30))
    wait_for(phase_is(kubectl, namespace, "solo", "Succeeded"), 30, what="solo Succeeded")


def test_service_deleted_out_of_band_comes_back(operator: Any, kubectl: Any, kube: Any,
                                                namespace: str) -> None:
    apply(kubectl, job_yaml("rdzv", namespace, nodes=2, per_node=1))
    wait_for(running_pods(kube, namespace, "rdzv", 2), 60, what="pods")
    uid = get_job(kubectl, namespace, "rdzv")["metadata"]["uid"]
    old = kube.read_namespaced_service("rdzv", namespace).metadata.uid
    kubectl("delete", "service", "-n", namespace, "rdzv", "--wait=true")

    def back() -> Any:
        try:
            svc = kube.read_namespaced_service("rdzv", namespace)
        except Exception:  # noqa: BLE001 - 404 until recreated
            return None
        return svc if svc.metadata.uid != old else None

    svc = wait_for(back, 30, what="the Service recreated")
    assert svc.metadata.owner_references[0].uid == uid and svc.spec.cluster_ip == "None"
    finish_all(kube, namespace, "rdzv")


def test_deletion_releases_quota_and_admits_the_queued_job(operator: Any, kubectl: Any,
                                                           kube: Any, namespace: str,
                                                           policy: Any) -> None:
    """Quota is released on deletion (not only on completion): the queued job is admitted
    within seconds, well before the periodic re-list could do it."""
    policy([{"namespace": namespace, "maxGpusAdmitted": 4}])
    apply(kubectl, job_yaml("holder", namespace, nodes=1, per_node=4))
    wait_for(running_pods(kube, namespace, "holder", 1), 60, what="holder running")
    apply(kubectl, job_yaml("waiter", namespace, nodes=1, per_node=4))
    wait_for(phase_is(kubectl, namespace, "waiter", "Queued"), 30, what="waiter Queued")
    kubectl("delete", "ytj", "-n", namespace, "holder", "--wait=false")
    wait_for(running_pods(kube, namespace, "waiter", 1), 20, what="waiter admitted on deletion")
    finish_all(kube, namespace, "waiter")


def test_jobs_deleted_while_stopped_are_pruned_and_their_quota_freed(
        operator: Any, kubectl: Any, kube: Any, namespace: str, policy: Any) -> None:
    policy([{"namespace": namespace, "maxGpusAdmitted": 4}])
    apply(kubectl, job_yaml("ghost", namespace, nodes=1, per_node=4))
    wait_for(running_pods(kube, namespace, "ghost", 1), 60, what="ghost running")
    apply(kubectl, job_yaml("next", namespace, nodes=1, per_node=4))
    wait_for(phase_is(kubectl, namespace, "next", "Queued"), 30, what="next Queued")
    operator.kill()
    try:
        # Deleted while the operator is down: the job, and its pod (by hand, not waiting for
        # the garbage collector).
        kubectl("delete", "ytj", "-n", namespace, "ghost", "--wait=true")
        kubectl("delete", "pod", "-n", namespace, "ghost-worker-0", "--wait=true",
                "--grace-period=0", "--force", "--ignore-not-found")
    finally:
        operator.start()
    wait_for(running_pods(kube, namespace, "next", 1), 60, what="next admitted after restart")
    finish_all(kube, namespace, "next")
    wait_for(phase_is(kubectl, namespace, "next", "Succeeded"), 30, what="next Succeeded")


# --- kill -9 mid-launch --------------------------------------------------------------------


class _SlowPods(BaseHTTPRequestHandler):
    """A validating webhook that allows every pod but holds the creation of `<job>-worker-2`
    for a few seconds: the operator is then mid-launch for certain."""

    delay = 8.0
    seen: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        req = review["request"]
        name = (req.get("object") or {}).get("metadata", {}).get("name", "")
        self.seen.append(name)
        if name.endswith("-worker-2"):
            time.sleep(self.delay)
        body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                           "response": {"uid": req["uid"], "allowed": True}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            pass  # the apiserver gave up on this call (its timeout): nothing to answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def slow_pod_creation(kubectl: Any, namespace: str, tmp_path: Path) -> Iterator[list[str]]:
    import base64

    from yolofit.operator.certs import ensure_certs
    from yolofit.operator.testing import free_port

    certs = ensure_certs(tmp_path / "certs", ["127.0.0.1", "localhost"])
    server = HTTPServer(("127.0.0.1", free_port()), _SlowPods)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(certs.certfile), str(certs.pkeyfile))
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    name = f"slow-pods-{namespace}"
    config = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [{
            "name": "slow-pods.test.yolofit.io", "admissionReviewVersions": ["v1"],
            "sideEffects": "None", "timeoutSeconds": 15, "failurePolicy": "Ignore",
            "clientConfig": {"url": f"https://127.0.0.1:{server.server_port}/",
                             "caBundle": base64.b64encode(certs.cafile.read_bytes()).decode()},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                       "resources": ["pods"]}],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}]}
    kubectl("apply", "-f", "-", input=json.dumps(config))
    _SlowPods.seen, _SlowPods.delay = [], 8.0
    try:
        yield _SlowPods.seen
    finally:
        kubectl("delete", "validatingwebhookconfiguration", name, "--ignore-not-found",
                check=False)
        server.shutdown()


def test_kill_9_mid_launch_leaves_no_partial_state(operator: Any, kubectl: Any, kube: Any,
                                                   namespace: str,
                                                   slow_pod_creation: list[str]) -> None:
    apply(kubectl, job_yaml("crash", namespace, nodes=4, per_node=1))
    wait_for(lambda: "crash-worker-2" in slow_pod_creation, 60, what="worker-2's create")
    operator.kill()  # worker-0 and -1 exist, -2 is in flight (the apiserver drops it with
    # the dead client's connection), -3 was never asked for
    time.sleep(_SlowPods.delay + 2)  # let the scheduler have a go at the partial gang
    pods = pods_of(kube, namespace, "crash")
    names = [p.metadata.name for p in pods]
    assert "crash-worker-3" not in names and len(names) < 4, names  # really mid-launch
    assert not [p.metadata.name for p in pods if p.spec.node_name], "part of the gang bound"
    before = {p.metadata.name: p.metadata.uid for p in pods}
    _SlowPods.delay = 0.0
    operator.start()
    pods = wait_for(running_pods(kube, namespace, "crash", 4), 60, what="4 running pods")
    assert [p.metadata.name for p in pods] == [f"crash-worker-{i}" for i in range(4)]
    for p in pods:  # the pods made before the kill were kept, not replaced or duplicated
        assert before.get(p.metadata.name, p.metadata.uid) == p.metadata.uid
    assert len(kube.list_namespaced_pod(namespace).items) == 4
    assert len(kube.list_namespaced_service(namespace).items) == 1
    finish_all(kube, namespace, "crash")
    try:
        wait_for(phase_is(kubectl, namespace, "crash", "Succeeded"), 60, what="job Succeeded")
    except AssertionError:
        print(json.dumps(get_job(kubectl, namespace, "crash").get("status"), indent=1)[:3000])
        print(operator.log_tail(60))
        raise
