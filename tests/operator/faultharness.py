"""One operator (World + Reconciler) over a recording apiserver (recording_api.py), for the
fault-injection tests (test_op_faults.py) and the re-plan tests (test_op_replan.py): a job
`ns/j` on two 4-GPU t4 nodes, and the pod transitions the kubelet would report."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

from opfixtures import make_profiles
from recording_api import Killed, RecordingApi

from yolofit.operator import feedback, kube
from yolofit.operator.api import FailurePolicy, GPUCapacityPolicySpec, NamespaceRule
from yolofit.operator.fleet import FleetNode
from yolofit.operator.reconcile import Reconciler
from yolofit.operator.state import World

T4 = {"nvidia.com/gpu.product": "Tesla-T4", "nvidia.com/gpu.memory": "15360"}
NS, NAME = "ns", "j"
KEY = (NS, NAME)
JOB = kube.job_path(NS, NAME)


class Harness:
    """One operator (World + Reconciler) over a RecordingApi; `restart()` makes a fresh one
    primed from the apiserver, as a restarted operator is."""

    def __init__(self, store_dir: Path, api: RecordingApi | None = None) -> None:
        self.store_dir = store_dir
        self.api = api or RecordingApi()
        self.events: list[tuple[str, str, str]] = []
        self.wakes: list[float] = []
        self.restart()

    def restart(self) -> None:
        self.world = World(store=make_profiles(self.store_dir))
        self.world.set_nodes([FleetNode(f"t4-{i}", T4, 4) for i in range(2)])
        self.world.set_policy(GPUCapacityPolicySpec(
            namespaces=[NamespaceRule(namespace=NS, max_gpus_admitted=8)],
            failure_policy=FailurePolicy(restart_backoff_seconds=0)))
        cm = self.api.objects.get(kube.configmap_path("yolofit-system",
                                                      "yolofit-learned-margins"))
        self.world.margins.update(feedback.decode_margins((cm or {}).get("data")))
        self.r = Reconciler(self.world, self.api,
                            lambda b, t, reason, m: self.events.append((t, reason, m)),
                            lambda key, ns: asyncio.sleep(0, None))
        self.r._wake_later = lambda key, delay: self.wakes.append(delay)  # type: ignore[method-assign]
        self.sync()

    def sync(self) -> None:
        """What the watches would deliver: the job and its pods as the apiserver has them."""
        job = self.api.objects.get(JOB)
        if job is not None:
            self.world.jobs[KEY] = copy.deepcopy(job)
        self.world.pods[KEY] = copy.deepcopy(self.api.pods(NS))

    def reconcile(self) -> BaseException | None:
        self.sync()
        try:
            asyncio.run(self.r.reconcile(KEY))
            return None
        except (kube.ApiError, Killed) as exc:
            return exc
        finally:
            self.sync()

    def settle(self, passes: int = 6) -> None:
        for _ in range(passes):
            self.reconcile()

    @property
    def status(self) -> dict[str, Any]:
        return dict(self.api.objects[JOB].get("status") or {})

    def reasons(self) -> list[str]:
        return [r for _, r, _ in self.events]


def new_job(api: RecordingApi, nodes: int = 2) -> None:
    api.objects[JOB] = {
        "apiVersion": "yolofit.io/v1alpha1", "kind": "YOLOTrainingJob",
        "metadata": {"name": NAME, "namespace": NS, "uid": "job-uid", "generation": 1,
                     "resourceVersion": "1"},
        "spec": {"model": "yolov8n", "data": "/d.yaml", "gpus": {"nodes": nodes, "perNode": 1}}}


def run_pods(api: RecordingApi) -> None:
    for pod in api.pods(NS).values():
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        pod["status"] = {"phase": "Running", "containerStatuses": [
            {"name": "trainer", "state": {"running": {"startedAt": "2026-12-01T10:00:01Z"}}}]}


def end_pod(api: RecordingApi, name: str, code: int, message: str = "",
            conditions: list[dict[str, Any]] | None = None) -> None:
    pod = api.pods(NS)[name]
    pod["status"] = {"phase": "Failed" if code else "Succeeded",
                     "conditions": conditions or [],
                     "containerStatuses": [{"name": "trainer", "state": {"terminated": {
                         "exitCode": code, "reason": "Error", "message": message}}}]}


def live_pods(api: RecordingApi) -> dict[str, dict[str, Any]]:
    return {n: p for n, p in api.pods(NS).items()
            if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")}


def config_of(pod: dict[str, Any]) -> dict[str, Any]:
    """The trainer's config (YOLOFIT_TRAIN_CONFIG) the pod was made with."""
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    return dict(json.loads(env["YOLOFIT_TRAIN_CONFIG"]))


def running_job(h: Harness) -> dict[str, Any]:
    """Launch the job and bring its pods to Running; returns the plan it runs with."""
    new_job(h.api)
    h.settle(3)
    run_pods(h.api)
    h.sync()
    h.reconcile()
    assert h.status["phase"] == "Running"
    return dict(h.status["plan"])


def kill_and_restart(h: Harness, after: int) -> Harness:
    """SIGKILL the operator right after request number `after`, then a fresh operator primed
    from the apiserver (margins from the ConfigMap) settles."""
    h.api.kill_after(after)
    for _ in range(6):
        if isinstance(h.reconcile(), Killed):
            break
    h.api.restarted()
    h.restart()
    h.settle(6)
    return h
