"""Denser data than admission assumed, on the real sandbox: a pod ends with the trainer's
`data-denser` summary (exit 3), the operator re-plans the job as a new attempt with the
measured density (not an OOM: no margin learned, no OOM re-plan entry), posts `Replanned`,
and the new attempt runs to the end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from opfixtures import make_profiles
from sandboxjobs import apply, finish_all, get_job, job_yaml, phase_is, pods_of

from yolofit.sandbox.testing import finish_pod, wait_for
from yolofit.trainer.summary import Summary

pytestmark = pytest.mark.integration
MiB = 2**20


@pytest.fixture(scope="module")
def profile_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This module's operator plans with profiles that charge 1 MiB per object per sample,
    so the measured density moves the batch (the shared ones charge 1 KiB)."""
    d = tmp_path_factory.mktemp("dense-profiles")
    make_profiles(d, "yolov8n", fixed_gib=1.0, per_sample_mib=200, per_object_bytes=MiB)
    return d


def margins(kubectl: Any) -> str:
    return str(kubectl("get", "configmap", "-n", "yolofit-system", "yolofit-learned-margins",
                       "--ignore-not-found", "-o", "jsonpath={.data}").stdout)


def attempt_running(kube: Any, ns: str, job: str, attempt: int, n: int) -> Any:
    def check() -> Any:
        live = [p for p in pods_of(kube, ns, job) if p.metadata.deletion_timestamp is None]
        return live if len(live) == n and all(
            p.status.phase == "Running" and p.metadata.labels["yolofit.io/attempt"]
            == str(attempt) for p in live) else None
    return check


def test_denser_data_replans_the_job_and_the_new_attempt_runs(
        operator: Any, kubectl: Any, kube: Any, namespace: str) -> None:
    before = apply(kubectl, job_yaml("dense", namespace, nodes=2, per_node=1))["spec"]["plan"]
    assert before["objectsPerImage"] == 100  # the policy's default: the spec names none
    wait_for(attempt_running(kube, namespace, "dense", 0, 2), 60, what="attempt 0 running")
    wait_for(phase_is(kubectl, namespace, "dense", "Running"), 30, what="job Running")
    learned = margins(kubectl)

    finish_pod(kube, namespace, "dense-worker-1", 3, message=Summary(
        rank=1, exit_reason="data-denser", objects_per_image=412,
        message="the densest training image holds 412 objects").to_json())
    job = wait_for(lambda: (j := get_job(kubectl, namespace, "dense"))["status"].get(
        "attempt") == 1 and j, 60, what="re-plan")
    st = job["status"]
    after = st["plan"]
    assert st["measuredInputs"]["objectsPerImage"] == 412
    assert st["measuredInputs"]["source"] == "dense-worker-1"
    assert after["objectsPerImage"] == 412
    assert after["batchPerGpu"] < before["batchPerGpu"]
    assert [r["cause"] for r in st["replans"]] == ["DataDenser"]  # no OOM re-plan entry
    assert st["replans"][0]["fromBatchPerGpu"] == before["batchPerGpu"]
    assert st.get("restarts", []) == []
    assert margins(kubectl) == learned  # nothing learned from a density

    pods = wait_for(attempt_running(kube, namespace, "dense", 1, 2), 90,
                    what="attempt 1 running")
    for p in pods:
        cfg = json.loads(next(e.value for e in p.spec.containers[0].env
                              if e.name == "YOLOFIT_TRAIN_CONFIG"))
        assert (cfg["batch_per_gpu"], cfg["objects_per_image"]) == (after["batchPerGpu"], 412)
    events = json.loads(kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    replanned = [e for e in events if e["reason"] == "Replanned"]
    assert replanned and replanned[0]["type"] == "Normal"
    assert replanned[0]["message"].startswith("data denser than planned: 412 objects/image "
                                              "measured, plan assumed 100; batch "
                                              f"{before['batchPerGpu']} -> "
                                              f"{after['batchPerGpu']} per GPU")
    assert "OutOfMemoryReplan" not in [e["reason"] for e in events]
    wide = kubectl("get", "ytj", "-n", namespace, "dense", "-o", "wide").stdout.split("\n")
    at = wide[0].index("OBJ/IMG")  # (columns are aligned; EST's value has a space)
    assert wide[1][at:].split()[0] == "412"

    finish_all(kube, namespace, "dense")
    job = wait_for(phase_is(kubectl, namespace, "dense", "Succeeded"), 60, what="Succeeded")
    assert job["status"]["attempt"] == 1 and len(job["status"]["replans"]) == 1
