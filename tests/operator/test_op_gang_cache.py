"""Pure pieces of gang placement, ownership, the converging cache, the queue order and
leadership: table-driven, no API."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from yolofit.estimator.profile import ProfileStore
from yolofit.operator import gang, leadership, ownership
from yolofit.operator.admission import static_errors, suggest_name
from yolofit.operator.api import GPUCapacityPolicySpec, YOLOTrainingJobSpec
from yolofit.operator.fleet import FleetNode, discover
from yolofit.operator.state import World, merge_listing

A100 = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB", "nvidia.com/gpu.memory": "81920"}
T4 = {"nvidia.com/gpu.product": "Tesla-T4", "nvidia.com/gpu.memory": "15360"}


@pytest.mark.parametrize(("demand", "free", "ahead", "fits"), [
    (gang.Demand(2, 8), {"a": 8, "b": 8}, [], True),
    (gang.Demand(2, 8), {"a": 0, "b": 8}, [], False),  # the demo: yolov8x-dense holds a100-0
    (gang.Demand(2, 4), {"a": 8}, [], False),  # one pod per node: 8 free on one node is not 2
    (gang.Demand(1, 4), {"a": 3, "b": 5}, [], True),
    (gang.Demand(2, 4), {"a": 4, "b": 4, "c": 4}, [gang.Demand(2, 4, "x")], False),
    (gang.Demand(1, 4), {"a": 4, "b": 4, "c": 4}, [gang.Demand(2, 4, "x")], True),
    (gang.Demand(2, 4), {"a": 4, "b": 4}, [gang.Demand(3, 4, "too-big")], True),  # waits too
])
def test_check(demand: gang.Demand, free: dict[str, int], ahead: list[gang.Demand],
               fits: bool) -> None:
    assert (gang.check(demand, free, ahead) is None) is fits


def test_place_is_best_fit_and_shortfall_names_the_nodes() -> None:
    assert gang.place(gang.Demand(1, 2), {"big": 8, "small": 2}) == ["small"]
    msg = gang.shortfall(gang.Demand(2, 8), {"a100-0": 0, "a100-1": 8})
    assert msg == ("needs 2 nodes with 8 free GPUs each, 1 of 2 have that now "
                   "(a100-0: 0 free, a100-1: 8 free)")


def test_free_gpus_counts_bound_unfinished_pods_of_the_class_only() -> None:
    fleet = [FleetNode("a100-0", A100, 8), FleetNode("a100-1", A100, 8), FleetNode("t4-0", T4, 4)]
    info = discover(fleet)["a100-80gb"]

    def pod(node: str, gpus: str, phase: str = "Running") -> dict[str, Any]:
        return {"spec": {"nodeName": node, "containers": [
            {"resources": {"requests": {"nvidia.com/gpu": gpus}}}]}, "status": {"phase": phase}}

    used = gang.used_by_node([pod("a100-0", "8"), pod("a100-1", "8", "Succeeded"),
                              pod("t4-0", "4"), {"spec": {}, "status": {}}])
    assert used == {"a100-0": 8, "t4-0": 4}
    assert gang.free_gpus(info, fleet, used) == {"a100-0": 0, "a100-1": 8}


def test_join_names_the_group_and_drops_only_the_gang_gate() -> None:
    pod = {"spec": {"schedulingGates": [{"name": "yolofit.io/gang"}, {"name": "other"}]}}
    assert gang.join(pod, "j")["spec"] == {"schedulingGroup": {"podGroupName": "j"},
                                           "schedulingGates": [{"name": "other"}]}


@pytest.mark.parametrize(("doc", "served"), [
    (None, False), ({"resources": [{"name": "workloads"}]}, False),
    ({"resources": [{"name": "podgroups"}, {"name": "podgroups/status"}]}, True)])
def test_served(doc: Any, served: bool) -> None:
    assert gang.served(doc) is served


def test_unschedulable_only_when_nothing_is_bound() -> None:
    cond = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "m"}
    waiting = {"spec": {}, "status": {"conditions": [cond]}}
    assert gang.unschedulable([waiting, {"spec": {}, "status": {}}]) == "m"
    assert gang.unschedulable([waiting, {"spec": {"nodeName": "n"}}]) is None
    assert gang.unschedulable([{"spec": {}, "status": {}}]) is None


def _obj(name: str, uid: str, rv: int, owner: dict[str, Any] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "uid": uid, "resourceVersion": str(rv)}
    if owner:
        meta["ownerReferences"] = [owner]
    return {"metadata": meta}


def test_classify_by_controller_uid() -> None:
    mine = {"kind": "YOLOTrainingJob", "name": "j", "uid": "u", "controller": True}
    old = {"kind": "YOLOTrainingJob", "name": "j", "uid": "old", "controller": True}
    not_controller = {"kind": "YOLOTrainingJob", "name": "j", "uid": "u", "controller": False}
    c = ownership.classify([_obj("a", "1", 1, mine), _obj("b", "2", 1, old),
                            _obj("c", "3", 1), _obj("d", "4", 1, not_controller)], "j", "u")
    assert list(c.owned) == ["a"] and c.leftovers == ["b"] and c.foreign == ["c", "d"]


@pytest.mark.parametrize(("cached", "listed", "list_rv", "deleted", "keys", "pruned"), [
    # deleted while not watching: pruned
    ({"a": _obj("a", "1", 5)}, {}, 10, set(), [], ["a"]),
    # seen by the watch after the list was taken: kept
    ({"a": _obj("a", "1", 12)}, {}, 10, set(), ["a"], []),
    # newer in the list: replaced; new in the list: added
    ({"a": _obj("a", "1", 5)}, {"a": _obj("a", "1", 7), "b": _obj("b", "2", 8)}, 10, set(),
     ["a", "b"], []),
    # same name, new object: the old one is pruned (its quota freed), the new one kept
    ({"a": _obj("a", "1", 5)}, {"a": _obj("a", "9", 9)}, 10, set(), ["a"], ["a"]),
    # a UID the watch saw deleted never comes back from a list taken before
    ({}, {"a": _obj("a", "1", 5)}, 10, {"1"}, [], []),
])
def test_merge_listing(cached: dict[str, Any], listed: dict[str, Any], list_rv: int,
                       deleted: set[str], keys: list[str], pruned: list[str]) -> None:
    merged, gone = merge_listing(cached, listed, list_rv, deleted)
    assert sorted(merged) == keys and gone == pruned
    if "a" in merged and "a" in listed and listed["a"]["metadata"]["uid"] == "9":
        assert merged["a"]["metadata"]["uid"] == "9"


def _job(name: str, phase: str | None, created: str, admitted: bool = False) -> dict[str, Any]:
    status = {"phase": phase, "admitted": admitted} if phase else {}
    return {"metadata": {"name": name, "namespace": "ns", "uid": f"u-{name}",
                         "creationTimestamp": created},
            "spec": {"gpus": {"nodes": 1, "perNode": 1}}, "status": status}


def test_finished_jobs_leave_memory_and_the_queue_index_holds_only_waiting(
        tmp_path: Path) -> None:
    w = World(store=ProfileStore(tmp_path, shipped=None))
    w.put_job(("ns", "big"), _job("big", "Queued", "2026-01-01T00:00:00Z"))
    w.put_job(("ns", "small"), _job("small", "Queued", "2026-01-01T00:00:05Z"))
    w.put_job(("ns", "run"), _job("run", "Running", "2026-01-01T00:00:01Z", admitted=True))
    w.put_job(("other", "x"), _job("x", "Queued", "2025-01-01T00:00:00Z"))
    w.pods[("ns", "done")]["done-worker-0"] = {"metadata": {"name": "done-worker-0"}}
    w.put_job(("ns", "done"), _job("done", "Succeeded", "2026-01-01T00:00:00Z"))
    assert ("ns", "done") not in w.jobs and ("ns", "done") not in w.pods
    assert w.finished[("ns", "done")] == ("u-done", "Succeeded")
    assert w.waiting == {("ns", "big"), ("ns", "small"), ("other", "x")}
    # FIFO per namespace: the small job waits behind the big one; the big one behind none.
    assert w.older_waiting(("ns", "small"), "2026-01-01T00:00:05Z") == ("ns", "big")
    assert w.older_waiting(("ns", "big"), "2026-01-01T00:00:00Z") is None
    assert w.older_waiting(("ns", "new"), "2026-01-01T00:00:09Z") == ("ns", "big")
    w.forget(("ns", "big"), "u-big")
    assert w.older_waiting(("ns", "small"), "2026-01-01T00:00:05Z") is None
    assert "u-big" in w.deleted
    w.put_job(("ns", "big"), _job("big", "Queued", "2026-01-01T00:00:00Z"))  # stale replay
    assert ("ns", "big") not in w.jobs


@pytest.mark.parametrize(("status", "leads"), [
    (None, True),
    ({"me": {"priority": 5, "lifetime": 60, "lastseen": "NOW"}}, True),
    ({"me": {"priority": 5}, "other": {"priority": 3, "lifetime": 60, "lastseen": "NOW"}}, True),
    ({"me": {"priority": 5}, "other": {"priority": 9, "lifetime": 60, "lastseen": "NOW"}}, False),
    ({"me": {"priority": 5}, "other": {"priority": 5, "lifetime": 60, "lastseen": "NOW"}}, False),
    ({"me": {"priority": 5}, "other": {"priority": 9, "lifetime": 60, "lastseen": "OLD"}}, True),
])
def test_leading(status: dict[str, Any] | None, leads: bool) -> None:
    now = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
    stamps = {"NOW": now.isoformat(), "OLD": (now - dt.timedelta(minutes=5)).isoformat()}
    for info in (status or {}).values():
        if "lastseen" in info:
            info["lastseen"] = stamps[info["lastseen"]]
    assert leadership.leading(status, "me", 5, now) is leads


@pytest.mark.parametrize(("name", "ok"), [
    ("yolo-v8", True), ("a", True), ("yolo.v8", False), ("8yolo", False), ("yolo-", False),
    ("Yolo", False)])
def test_job_names_must_name_a_service(name: str, ok: bool) -> None:
    classes = discover([FleetNode("t4-0", T4, 4)])
    spec = YOLOTrainingJobSpec.model_validate({"model": "yolov8n", "data": "/d.yaml"})
    errors = [e for e in static_errors(name, "ns", spec, GPUCapacityPolicySpec(), classes)
              if e.startswith("metadata.name")]
    assert (not errors) is ok
    if not ok:
        assert "DNS-1035 label" in errors[0] and repr(suggest_name(name)) in errors[0]


def test_suggested_names_are_valid() -> None:
    from yolofit.operator.admission import SERVICE_NAME
    for name in ("yolo.v8", "8yolo", "YOLO__x", "-", "a.b.c"):
        assert SERVICE_NAME.fullmatch(suggest_name(name)), name


def test_a_stale_event_never_brings_a_finished_job_back() -> None:
    """Seen on the sandbox: a late watch event (phase Running) of a job that had just
    Succeeded put it back in memory without its pods, and the next pass relaunched them."""
    from yolofit.estimator.profile import ProfileStore
    from yolofit.operator.state import World

    w = World(store=ProfileStore.of([]))
    meta = {"name": "j", "namespace": "ns", "uid": "u1"}
    w.put_job(("ns", "j"), {"metadata": meta, "status": {"phase": "Succeeded"}})
    w.put_job(("ns", "j"), {"metadata": meta, "status": {"phase": "Running"}})
    assert ("ns", "j") not in w.jobs and w.finished_uid(("ns", "j"), "u1")
    other = {**meta, "uid": "u2"}  # a new job of the same name is cached as usual
    w.put_job(("ns", "j"), {"metadata": other, "status": {"phase": "Pending"}})
    assert ("ns", "j") in w.jobs
