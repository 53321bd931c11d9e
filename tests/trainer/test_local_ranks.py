"""One pod with two GPUs' worth of ranks, across the trainer/operator contract.

The operator's reconciler plans the job and builds its pod; that pod's own command and
environment run here (`yolofit train` starts a worker per local rank, gloo on CPU); the real
termination message goes back into the reconciler as the kubelet would report it, and both
ranks' peaks must land in status.measured. One test on both sides of the summary format, so
the trainer's writer and the operator's parser cannot drift apart again.
"""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import pytest

from yolofit.operator import kube
from yolofit.operator.fleet import FleetNode
from yolofit.operator.reconcile import Reconciler
from yolofit.operator.state import World
from yolofit.operator.testing import write_synthetic_profiles
from yolofit.sandbox.localrun import start_pods, wait_pods
from yolofit.trainer.summary import MAX_BYTES, Summary, encode

T4 = {"nvidia.com/gpu.product": "Tesla-T4", "nvidia.com/gpu.memory": "15360"}


class Fake:
    """Just enough of the API for one reconcile: objects by path, nothing else."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        key = f"{path}/{body['metadata']['name']}"
        if key in self.objects:
            return None
        self.objects[key] = copy.deepcopy(body)
        return copy.deepcopy(body)

    async def get(self, path: str, **_: Any) -> dict[str, Any] | None:
        return copy.deepcopy(self.objects.get(path))

    async def merge_patch(self, path: str, patch: dict[str, Any]) -> Any:
        return None

    async def delete(self, path: str, uid: str = "") -> bool:
        return self.objects.pop(path, None) is not None


@pytest.mark.slow
def test_a_two_rank_pod_reports_both_ranks_into_status(dataset: Path, tmp_path: Path) -> None:
    world = World(store=write_synthetic_profiles(tmp_path / "profiles", imgsz=64, nc=2))
    world.set_nodes([FleetNode("t4-0", T4, 4)])
    job = {"apiVersion": "yolofit.io/v1alpha1", "kind": "YOLOTrainingJob",
           "metadata": {"name": "duo", "namespace": "ns", "uid": "uid-duo", "generation": 1},
           "spec": {"model": "yolov8n", "data": str(dataset), "classes": 2, "imgsz": 64,
                    "epochs": 1, "nbs": 8, "gpus": {"nodes": 1, "perNode": 2},
                    "outputDir": str(tmp_path / "runs"),
                    "args": {"warmup_epochs": 0, "seed": 0, "plots": False}}}
    world.jobs[("ns", "duo")] = job
    api = Fake()
    r = Reconciler(world, api, lambda *a: None, lambda key, ns: asyncio.sleep(0, None))  # type: ignore[arg-type]
    r.trust_spec_plan = False
    asyncio.run(r.reconcile(("ns", "duo")))
    pod = api.objects[kube.pods_path("ns", "duo-worker-0")]

    [local] = start_pods([pod], tmp_path / "pod", extra_env={"YOLOFIT_DEVICE": "cpu"})
    assert local.env["PET_NPROC_PER_NODE"] == "2" and local.env["WORLD_SIZE"] == "2"
    assert wait_pods([local], timeout=600) == [0], local.output()
    message = local.message()
    assert len(message.encode()) <= MAX_BYTES and isinstance(json.loads(message), dict)

    # The kubelet's report of the finished pod, as the operator's watch delivers it.
    pod["status"] = {"phase": "Succeeded", "containerStatuses": [{"state": {"terminated": {
        "exitCode": 0, "message": message}}}]}
    world.pods[("ns", "duo")]["duo-worker-0"] = pod
    asyncio.run(r.reconcile(("ns", "duo")))
    status = job["status"]
    assert status["phase"] == "Succeeded", status
    measured = status["measured"]
    ranks = measured["ranks"]
    assert [x["rank"] for x in ranks] == [0, 1] and {x["pod"] for x in ranks} == {"duo-worker-0"}
    assert all(x["deviceTotalBytes"] > 50 * 2**20 and x["steps"] > 0 for x in ranks)
    assert measured["maxPeakBytes"] == max(x["deviceTotalBytes"] for x in ranks)
    # Both local ranks trained one model, each with its own report, in attempt 0's directory.
    attempt = tmp_path / "runs" / "duo" / "attempt-0"
    reports = [json.loads((attempt / "yolofit" / f"rank-{i}.json").read_text()) for i in (0, 1)]
    assert reports[0]["model"]["parameters"] == reports[1]["model"]["parameters"]
    assert all(x["batch_per_rank"] * x["world_size"] * x["accumulate"] == 8 for x in reports)
    assert status["results"]["path"] == str(attempt)


def _worst(rank: int) -> Summary:
    big = 2**53
    return Summary(rank=rank, memory_kind="cuda", peak_allocated_bytes=big,
                   peak_reserved_bytes=big, device_total_bytes=big, steps=big,
                   images_per_second=1e12, exit_reason="oom",
                   message="ü€ out of memory " * 500, attempt=2**31, start_epoch=99999,
                   epochs_done=99999, save_dir="/" + "d" * 4000, resumed_from="/" + "r" * 4000,
                   objects_per_image=10000, objects_per_image_mean=10000,
                   model_found={"model": "y" * 64, "nc": 100000})


@pytest.mark.parametrize("ranks", [1, 2, 8, 16])
def test_a_pod_summary_fits_a_termination_message(ranks: int) -> None:
    """The kubelet keeps 4096 bytes: 16 ranks with the largest numbers, a long non-ASCII
    message and long paths still fit, with every rank's peaks."""
    text = encode([_worst(r) for r in range(ranks)])
    assert len(text.encode()) <= MAX_BYTES < 4096
    data = json.loads(text)
    assert [row[0] for row in data["ranks"]] == list(range(ranks))
    assert data["exit_reason"] == "oom" and data["message"].startswith("ü€ out of memory")
