"""A real 2-rank DDP job (CPU, gloo, `yolofit train` as local processes for the kwok pods)
whose rank 1 is stopped mid-epoch with SIGTERM, as a drain does: the rank exits 143, the
operator deletes both ranks and relaunches the gang as attempt 1, which trains to the end.
(Resuming attempt 1 from attempt 0's last.pt is the trainer's side; here: the attempt.)"""

from __future__ import annotations

import json
import re
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from sandboxjobs import get_job, phase_is, pods_of, training_job

from yolofit.sandbox.localrun import LocalPod, log_tail, report_to_pods, start_pods, wait_pods
from yolofit.sandbox.testing import wait_for
from yolofit.trainer.synthetic import make_synthetic_dataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def steps(pod: LocalPod) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{pod.metrics_port}/metrics",
                                    timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return 0.0
    found = re.findall(r"^yolofit_trainer_steps_total(?:\{[^}]*\})? ([0-9.e+]+)$", text, re.M)
    return sum(float(v) for v in found)


def running(kube: Any, ns: str, attempt: int) -> list[Any] | None:
    pods = [p for p in pods_of(kube, ns, "drain") if p.metadata.deletion_timestamp is None]
    ok = len(pods) == 2 and all(p.status.phase == "Running" and p.metadata.labels[
        "yolofit.io/attempt"] == str(attempt) for p in pods)
    return pods if ok else None


def test_a_rank_stopped_mid_epoch_restarts_the_gang(operator: Any, kubectl: Any, kube: Any,
                                                    namespace: str, policy: Any,
                                                    tmp_path: Path) -> None:
    policy([{"namespace": namespace}], failurePolicy={"restartBackoffSeconds": 0})
    data = make_synthetic_dataset(tmp_path / "data", n_train=32, n_val=4, imgsz=64, nc=80)
    kubectl("apply", "-f", "-",
            input=training_job("drain", namespace, data, tmp_path / "runs", epochs=2))
    env = {"YOLOFIT_DEVICE": "cpu"}

    first = wait_for(lambda: running(kube, namespace, 0), 60, what="attempt 0 running")
    local = start_pods([kube.api_client.sanitize_for_serialization(p) for p in first],
                       tmp_path / "attempt-0", extra_env=env)
    try:
        wait_for(lambda: steps(local[1]) >= 1, 300, interval=1.0, what="rank 1 training")
        local[1].proc.send_signal(signal.SIGTERM)  # the drain
        assert local[1].proc.wait(timeout=120) == 143, log_tail(local[1])
        assert json.loads(local[1].message())["exit_reason"] == "terminated"
        report_to_pods(kube, namespace, [local[1]])
        stopped = time.monotonic()
        try:
            second = wait_for(lambda: running(kube, namespace, 1), 60, what="attempt 1")
        except AssertionError as exc:
            pods = [(p.metadata.name, p.metadata.labels, p.status.phase)
                    for p in pods_of(kube, namespace, "drain")]
            raise AssertionError(f"{exc}\n{get_job(kubectl, namespace, 'drain')['status']}"
                                 f"\n{pods}") from None
        print(f"\nGANG-RESTART (real trainer): rank 1 reported 143 -> both ranks of "
              f"attempt 1 Running in {time.monotonic() - stopped:.2f}s")
    finally:  # rank 0's pod was deleted: the kubelet would stop its container
        for p in local:
            if p.proc.poll() is None:
                p.proc.send_signal(signal.SIGTERM)
        wait_pods(local, timeout=60)
    st = get_job(kubectl, namespace, "drain")["status"]
    assert st["attempt"] == 1 and [r["reason"] for r in st["restarts"]] == ["Disrupted"]
    assert "drain-worker-1 exited with code 143" in st["restarts"][0]["message"]

    again = start_pods([kube.api_client.sanitize_for_serialization(p) for p in second],
                       tmp_path / "attempt-1", extra_env=env)
    for p in again:
        assert json.loads(p.env["YOLOFIT_TRAIN_CONFIG"])["attempt"] == 1
    codes = wait_pods(again, timeout=900)
    assert codes == [0, 0], "\n".join(log_tail(p) for p in again)
    report_to_pods(kube, namespace, again)
    done = wait_for(phase_is(kubectl, namespace, "drain", "Succeeded"), 60, what="Succeeded")
    assert [r["exitReason"] for r in done["status"]["measured"]["ranks"]] == ["completed"] * 2
