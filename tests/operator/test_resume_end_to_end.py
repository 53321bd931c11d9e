"""End to end on the real sandbox: an OOM in the middle of training is re-planned by the
operator and the relaunch resumes from the checkpoint with the smaller batch.

The operator admits the job and creates its pods; their own command and environment run as
local processes (`yolofit train`, two DDP ranks over gloo on CPU); rank 1 runs out of memory
(injected) in epoch 2; exit codes and summaries go back through kwok. The operator re-plans
(attempt 1, half the batch, twice the accumulation) and relaunches; those pods resume from
attempt 0's last.pt at epoch 2, train epochs 2-3 only, and the job ends Succeeded with both
attempts' outputs on the volume and the resume point in status.results.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from yolofit.sandbox.localrun import log_tail, report_to_pods, start_pods, wait_pods
from yolofit.sandbox.testing import wait_for
from yolofit.trainer.synthetic import make_synthetic_dataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]
EPOCHS = 3


def _running(kube: Any, ns: str, attempt: int) -> list[Any] | None:
    pods = sorted(kube.list_namespaced_pod(ns, label_selector="yolofit.io/job=resumed").items,
                  key=lambda p: p.metadata.name)
    live = [p for p in pods if p.metadata.deletion_timestamp is None]
    ok = len(live) == 2 and all(p.status.phase == "Running" and p.metadata.labels[
        "yolofit.io/attempt"] == str(attempt) for p in live) and len(pods) == 2
    return live if ok else None


def _job(kubectl: Any, ns: str) -> dict[str, Any]:
    return dict(json.loads(kubectl("get", "ytj", "resumed", "-n", ns, "-o", "json").stdout))


def _run(kube: Any, ns: str, attempt: int, workdir: Path, **env: str) -> list[int]:
    pods = wait_for(lambda: _running(kube, ns, attempt), 120,
                    what=f"2 running pods of attempt {attempt}")
    bodies = [kube.api_client.sanitize_for_serialization(p) for p in pods]
    local = start_pods(bodies, workdir, extra_env={"YOLOFIT_DEVICE": "cpu", **env},
                       config_patch={"ddp_timeout_seconds": 30})
    codes = wait_pods(local, timeout=600)
    # The OOM rank's peer is reported first (its "Connection closed by peer" follows from
    # the OOM): the operator waits for the other rank's reason (status.PEER_SETTLE_SECONDS)
    # instead of failing the job for the peer's error. (kwok may still reorder the two.)
    report_to_pods(kube, ns, sorted(local, key=lambda p: p.proc.returncode == 88))
    print("\n".join(log_tail(p, 5) for p in local))
    return codes


def test_oom_mid_training_resumes_from_the_checkpoint(operator: Any, kubectl: Any, kube: Any,
                                                      namespace: str, tmp_path: Path) -> None:
    data = make_synthetic_dataset(tmp_path / "data", n_train=16, n_val=4, imgsz=64, nc=2)
    out = tmp_path / "runs"
    job = {"apiVersion": "yolofit.io/v1alpha1", "kind": "YOLOTrainingJob",
           "metadata": {"name": "resumed", "namespace": namespace},
           "spec": {"model": "yolov8n", "data": str(data), "classes": 2, "imgsz": 64,
                    "epochs": EPOCHS, "nbs": 8, "gpus": {"nodes": 2, "perNode": 1},
                    "outputDir": str(out),
                    "args": {"warmup_epochs": 0, "seed": 0, "plots": False}}}
    kubectl("apply", "-f", "-", input=json.dumps(job))
    # Attempt 0: 16 images / (4 x 2 ranks) = 2 steps per epoch; rank 1 OOMs in epoch 2.
    codes = _run(kube, namespace, 0, tmp_path / "a0", YOLOFIT_INJECT_OOM_AT_STEP="3",
                 YOLOFIT_INJECT_OOM_RANK="1")
    assert codes == [1, 88]
    first = out / "resumed" / "attempt-0"
    kept = {p: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in (first / "results.csv", first / "weights" / "last.pt",
                      first / "weights" / "best.pt")}

    relaunch = str(out / "resumed" / "attempt-1")
    try:
        replanned = wait_for(lambda: ((j := _job(kubectl, namespace))["status"].get(
            "results") or {}).get("path") == relaunch and j, 60, what="the relaunch")["status"]
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {_job(kubectl, namespace)['status']}") from None
    assert replanned["attempt"] == 1
    assert (replanned["plan"]["batchPerGpu"], replanned["plan"]["accumulate"]) == (2, 2)
    results = replanned["results"]
    assert results["resumeFrom"] == str(first / "weights" / "last.pt")
    assert results["resumeEpoch"] == 1  # epoch 1 is saved; attempt 1 starts at epoch 2

    assert _run(kube, namespace, 1, tmp_path / "a1") == [0, 0]
    done = wait_for(lambda: (j := _job(kubectl, namespace))["status"].get("phase")
                    in ("Succeeded", "Failed") and j, 60, what="the job to finish")["status"]
    assert done["phase"] == "Succeeded", done
    results = done["results"]
    assert (results["resumeEpoch"], results["epochsDone"]) == (1, EPOCHS)
    assert results["checkpoint"] == str(out / "resumed" / "attempt-1" / "weights" / "last.pt")
    reports = [json.loads((out / "resumed" / "attempt-1" / "yolofit" / f"rank-{r}.json")
                          .read_text()) for r in (0, 1)]
    for rep in reports:
        assert (rep["start_epoch"], rep["batch_per_rank"], rep["accumulate"]) == (1, 2, 2)
        assert rep["steps"] == (EPOCHS - 1) * 4  # epochs 2 and 3 at batch 2: 4 steps each
    assert reports[0]["model"]["parameters"] == reports[1]["model"]["parameters"]
    # Both attempts' outputs are on the job's volume; attempt 0's are as it left them.
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in kept} == kept
    assert sorted(d.name for d in (out / "resumed").iterdir()) == ["attempt-0", "attempt-1"]
