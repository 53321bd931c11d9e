"""YOLOTrainingJobs on the real sandbox, as the integration tests drive them: apply a job,
read it back, wait for a phase or for its pods to run, finish its pods through kwok with a
trainer summary; and the job that really trains (end to end) on a generated dataset."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opfixtures import summary

from yolofit.sandbox.testing import finish_pod

GiB = 2**30


def job_yaml(name: str, namespace: str, model: str = "yolov8n", nodes: int = 2,
             per_node: int = 4, **spec: Any) -> str:
    body = {"apiVersion": "yolofit.io/v1alpha1", "kind": "YOLOTrainingJob",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"model": model, "data": "/data/coco8.yaml",
                     "gpus": {"nodes": nodes, "perNode": per_node}, **spec}}
    return json.dumps(body)


def apply(kubectl: Callable[..., Any], text: str, check: bool = True) -> Any:
    result = kubectl("apply", "-o", "json", "-f", "-", input=text, check=check)
    return json.loads(result.stdout) if result.returncode == 0 else result


def get_job(kubectl: Callable[..., Any], ns: str, name: str) -> dict[str, Any]:
    return json.loads(kubectl("get", "ytj", "-n", ns, name, "-o", "json").stdout)


def phase_is(kubectl: Callable[..., Any], ns: str, name: str, phase: str) -> Callable[[], Any]:
    def check() -> Any:
        job = get_job(kubectl, ns, name)
        return job if (job.get("status") or {}).get("phase") == phase else None
    return check


def pods_of(kube: Any, ns: str, job: str) -> list[Any]:
    return sorted(kube.list_namespaced_pod(ns, label_selector=f"yolofit.io/job={job}").items,
                  key=lambda p: p.metadata.name)


def running_pods(kube: Any, ns: str, job: str, n: int) -> Callable[[], Any]:
    def check() -> Any:
        pods = pods_of(kube, ns, job)
        live = [p for p in pods if p.metadata.deletion_timestamp is None]
        return live if len(live) == n and all(
            p.status.phase == "Running" for p in live) else None
    return check


def finish_all(kube: Any, ns: str, job: str, peak: int = 3 * GiB) -> None:
    for i, pod in enumerate(pods_of(kube, ns, job)):
        finish_pod(kube, ns, pod.metadata.name, 0, message=summary(i, peak + i))


def bound(kube: Any, ns: str, job: str) -> list[str]:
    return [p.metadata.name for p in pods_of(kube, ns, job) if p.spec.node_name]


def gang_waits(kubectl: Any, kube: Any, ns: str, job: str, nodes: int) -> Callable[[], Any]:
    """The job is Queued with all its pods created and none of them bound."""
    def check() -> Any:
        j = get_job(kubectl, ns, job)
        pods = pods_of(kube, ns, job)
        ok = (j.get("status") or {}).get("phase") == "Queued" and len(pods) == nodes
        return j if ok and not bound(kube, ns, job) else None
    return check


def training_job(name: str, namespace: str, data: Path, out: Path, epochs: int) -> str:
    """A 2 x 1-GPU yolov8n job on a generated dataset (nc=80, imgsz 640: the profiles of
    conftest.profile_dir) that `yolofit train` really runs, on CPU, writing into `out`."""
    return job_yaml(name, namespace, nodes=2, per_node=1, data=str(data), classes=80,
                    imgsz=640, epochs=epochs, nbs=8, outputDir=str(out),
                    args={"warmup_epochs": 0, "seed": 0, "plots": False})
