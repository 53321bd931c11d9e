"""One pod with two GPUs' worth of ranks: `yolofit train` starts a worker per local rank."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from yolofit.sandbox.localrun import wait_pods

from .launch import Job, start_ranks

pytestmark = pytest.mark.slow  # real DDP training: a pod's ranks run as subprocesses


def test_pod_with_two_local_ranks(dataset: Path, tmp_path: Path) -> None:
    job = Job(data=dataset, output=tmp_path / "runs", nodes=1, per_node=2, nbs=8)
    [pod] = start_ranks(job, tmp_path)
    assert pod.env["PET_NPROC_PER_NODE"] == "2" and pod.env["WORLD_SIZE"] == "2"
    assert wait_pods([pod], timeout=300) == [0], pod.output()
    summaries = pod.summary()  # one container, one message: a list of per-rank summaries
    assert [s["rank"] for s in summaries] == [0, 1]
    assert all(s["exit_reason"] == "completed" and s["steps"] == 2 for s in summaries)
    reports = [
        json.loads((tmp_path / "runs" / job.name / "yolofit" / f"rank-{r}.json").read_text())
        for r in (0, 1)
    ]
    assert reports[0]["model"]["parameters"] == reports[1]["model"]["parameters"]
    assert all(r["batch_per_rank"] * r["world_size"] * r["accumulate"] == 8 for r in reports)
