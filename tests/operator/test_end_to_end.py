"""End to end on the real sandbox: the operator admits a job and creates its pods; the pods'
own command and environment then run as local processes (`yolofit train`, two DDP ranks over
gloo on CPU, on a generated dataset); their exit codes and termination summaries go back to
the cluster through kwok, and the operator folds them into the job's status."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sandboxjobs import phase_is, running_pods, training_job

from yolofit.sandbox.localrun import log_tail, report_to_pods, start_pods, wait_pods
from yolofit.sandbox.testing import wait_for
from yolofit.trainer.synthetic import make_synthetic_dataset

pytestmark = pytest.mark.integration


def test_pods_train_for_real_and_report_into_the_job(operator: Any, kubectl: Any, kube: Any,
                                                       namespace: str, tmp_path: Path) -> None:
    data = make_synthetic_dataset(tmp_path / "data", n_train=8, n_val=4, imgsz=64, nc=80)
    job = training_job("e2e", namespace, data, tmp_path / "runs", epochs=1)
    applied = json.loads(kubectl("apply", "-o", "json", "-f", "-", input=job).stdout)
    plan = applied["spec"]["plan"]
    assert plan["batchPerGpu"] * 2 * plan["accumulate"] == 8

    pods = wait_for(running_pods(kube, namespace, "e2e", 2), 60, what="2 running pods")
    bodies = [kube.api_client.sanitize_for_serialization(p) for p in pods]
    local = start_pods(bodies, tmp_path / "pods",
                       extra_env={"YOLOFIT_DEVICE": "cpu",
                                  "YOLOFIT_RANK_REPORT_DIR": str(tmp_path / "reports")})
    codes = wait_pods(local, timeout=600)
    assert codes == [0, 0], "\n".join(log_tail(p) for p in local)

    reports = [json.loads((tmp_path / "reports" / f"rank-{r}.json").read_text())
               for r in range(2)]
    # One model trained by both ranks: identical parameters (BatchNorm statistics are
    # per rank, as in Ultralytics' DDP, which does not broadcast buffers).
    assert reports[0]["model"]["parameters"] == reports[1]["model"]["parameters"]
    assert all(loss > 0 for r in reports for loss in r["losses"])
    assert all(r["batch_per_rank"] * r["world_size"] * r["accumulate"] == 8 for r in reports)

    report_to_pods(kube, namespace, local)
    done = wait_for(phase_is(kubectl, namespace, "e2e", "Succeeded"), 60, what="job Succeeded")
    measured = done["status"]["measured"]
    assert [r["rank"] for r in measured["ranks"]] == [0, 1]
    assert all(r["memoryKind"] == "host-rss" and r["exitReason"] == "completed"
               and r["steps"] > 0 for r in measured["ranks"])
    assert measured["maxPeakBytes"] == max(r["deviceTotalBytes"] for r in measured["ranks"])
    assert measured["estimateBytes"] == plan["predictedDeviceBytes"]
    assert measured.get("relativeError") is None  # host RSS is not compared with VRAM
