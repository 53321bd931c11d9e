"""The reconcile pass against a fake API: without webhooks it plans like the webhook does,
and a second pass (or a restarted operator) creates nothing twice."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from opfixtures import make_profiles

from yolofit.operator.fleet import FleetNode
from yolofit.operator.reconcile import Reconciler
from yolofit.operator.state import World

T4 = {"nvidia.com/gpu.product": "Tesla-T4", "nvidia.com/gpu.memory": "15360"}


class FakeKube:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.objects: dict[str, Any] = {}

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        self.calls.append(("create", f"{path}/{body['metadata']['name']}"))
        key = f"{path}/{body['metadata']['name']}"
        if key in self.objects:
            return None
        self.objects[key] = body
        return body

    async def merge_patch(self, path: str, patch: dict[str, Any]) -> Any:
        self.calls.append(("patch", path))
        return None

    async def delete(self, path: str) -> bool:
        self.calls.append(("delete", path))
        return True


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_never_launches_a_user_written_spec_plan_and_is_idempotent(tmp_path: Path) -> None:
    world = World(store=make_profiles(tmp_path))
    world.set_nodes([FleetNode(f"t4-{i}", T4, 4) for i in range(2)])
    job = {"apiVersion": "yolofit.io/v1alpha1", "kind": "YOLOTrainingJob",
           "metadata": {"name": "j", "namespace": "ns", "uid": "u", "generation": 1},
           "spec": {"model": "yolov8n", "data": "/d.yaml", "gpus": {"nodes": 2, "perNode": 1}}}
    world.jobs[("ns", "j")] = job
    api = FakeKube()
    events: list[str] = []
    r = Reconciler(world, api, lambda b, t, reason, m: events.append(reason),  # type: ignore[arg-type]
                   lambda key: asyncio.sleep(0, None))
    job["spec"]["plan"] = {"gpuClass": "t4", "nodes": 2, "gpusPerNode": 1, "gpus": 2,
                           "batchPerGpu": 512, "accumulate": 1, "amp": "off", "imgsz": 640}
    run(r.reconcile(("ns", "j")))
    assert ("patch", "/apis/yolofit.io/v1alpha1/namespaces/ns/yolotrainingjobs/j") in api.calls
    # status.plan is what runs: planned here, not the user's 512 (spec.plan only mirrors it)
    assert job["status"]["plan"]["gpuClass"] == "t4"
    assert job["status"]["plan"]["batchPerGpu"] <= 32
    created = [c for c in api.calls if c[0] == "create"]
    assert [c[1].rsplit("/", 1)[1] for c in created] == [
        "j", "j-ddp", "yolofit-trainer", "j-worker-0", "j-worker-1"]
    assert events[:3] == ["Planned", "Admitted", "Launched"]
    pods = [api.objects[f"/api/v1/namespaces/ns/pods/j-worker-{i}"] for i in (0, 1)]
    assert all(p["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
               and p["spec"]["automountServiceAccountToken"] is False for p in pods)
    # Gang: the first pod waits behind its gate; the pod that completes the gang has none.
    assert pods[0]["spec"]["schedulingGates"] == [{"name": "yolofit.io/gang"}]
    assert "schedulingGates" not in pods[1]["spec"]
    status = job["status"]
    assert status["admitted"] and status["phase"] == "Admitted"

    # Same observations again (e.g. after a restart): nothing is created twice, and now
    # that the whole gang exists the remaining gate is lifted.
    api.calls.clear()
    run(r.reconcile(("ns", "j")))
    assert [c for c in api.calls if c[0] == "create"] == []
    assert ("patch", "/api/v1/namespaces/ns/pods/j-worker-0") in api.calls
