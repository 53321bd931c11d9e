"""The reconcile pass against a fake API (fakekube.py, which records every request body):
without webhooks it plans like the webhook does, a second pass (or a restarted operator)
creates nothing twice, gangs are placed whole or not at all, and children are the job's
only by owner UID."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest
from fakekube import POD_GROUPS_SERVED, FakeKube
from opfixtures import make_profiles

from yolofit.operator import gang_shell
from yolofit.operator.fleet import FleetNode
from yolofit.operator.reconcile import Reconciler
from yolofit.operator.state import World

T4 = {"nvidia.com/gpu.product": "Tesla-T4", "nvidia.com/gpu.memory": "15360"}
JOBS = "/apis/yolofit.io/v1alpha1/namespaces/ns/yolotrainingjobs"
PODS = "/api/v1/namespaces/ns/pods"


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def job_body(name: str, uid: str, nodes: int = 2, per_node: int = 1,
             created: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    return {"apiVersion": "yolofit.io/v1alpha1", "kind": "YOLOTrainingJob",
            "metadata": {"name": name, "namespace": "ns", "uid": uid, "generation": 1,
                         "creationTimestamp": created},
            "spec": {"model": "yolov8n", "data": "/d.yaml",
                     "gpus": {"nodes": nodes, "perNode": per_node}}}


def setup(tmp_path: Path, nodes: int = 2, gpus: int = 4, served: dict[str, Any] | None = None
          ) -> tuple[World, FakeKube, Reconciler, list[tuple[str, str]]]:
    world = World(store=make_profiles(tmp_path))
    world.set_nodes([FleetNode(f"t4-{i}", T4, gpus) for i in range(nodes)])
    api = FakeKube(served)
    events: list[tuple[str, str]] = []
    r = Reconciler(world, api, lambda b, t, reason, m: events.append((reason, m)),  # type: ignore[arg-type]
                   lambda key, ns: asyncio.sleep(0, None))
    if served:
        run(r.gangs.discover())
    return world, api, r, events


def sync_pods(world: World, api: FakeKube, job: str) -> None:
    """What the watch would deliver: the fake apiserver's pods of `job` into the cache."""
    world.pods.pop(("ns", job), None)
    for path, obj in api.objects.items():
        if path.startswith(PODS + "/") and obj["metadata"]["labels"]["yolofit.io/job"] == job:
            world.pods[("ns", job)][obj["metadata"]["name"]] = obj


def bind(api: FakeKube, job: str, nodes: list[str]) -> None:
    """The scheduler bound the job's pods (one per node) and they run."""
    for i, node in enumerate(nodes):
        pod = api.objects[f"{PODS}/{job}-worker-{i}"]
        pod["spec"]["nodeName"] = node
        pod["status"] = {"phase": "Running"}
        api.bound_pods.append(pod)


def test_never_launches_a_user_written_spec_plan_and_is_idempotent(tmp_path: Path) -> None:
    world, api, r, events = setup(tmp_path)
    job = job_body("j", "u")
    world.jobs[("ns", "j")] = job
    job["spec"]["plan"] = {"gpuClass": "t4", "nodes": 2, "gpusPerNode": 1, "gpus": 2,
                           "batchPerGpu": 512, "accumulate": 1, "amp": "off", "imgsz": 640}
    run(r.reconcile(("ns", "j")))
    # status.plan is what runs: planned here, not the user's 512 (spec.plan only mirrors
    # it); every request body is recorded, merge patches included.
    (status_patch,) = api.patches(f"{JOBS}/j/status")
    assert status_patch["status"]["admitted"] is True
    assert status_patch["status"]["phase"] == "Admitted"
    assert status_patch["status"]["plan"]["gpuClass"] == "t4"
    assert status_patch["status"]["plan"]["batchPerGpu"] <= 32
    (spec_patch,) = api.patches(f"{JOBS}/j")  # the mirror
    assert spec_patch["spec"]["plan"] == status_patch["status"]["plan"]
    assert api.created() == ["j-ddp", "j", "yolofit-trainer", "j-worker-0", "j-worker-1"]
    assert [e for e, _ in events[:3]] == ["Planned", "Admitted", "Launched"]
    pods = [api.objects[f"{PODS}/j-worker-{i}"] for i in (0, 1)]
    assert all(p["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
               and p["spec"]["automountServiceAccountToken"] is False for p in pods)
    # Gates mode (no PodGroup API served): every pod of the gang waits behind its gate.
    for pod in pods:
        assert pod["spec"]["schedulingGates"] == [{"name": "yolofit.io/gang"}]
        assert pod["metadata"]["ownerReferences"][0]["uid"] == "u"

    # Same observations again (e.g. after a restart): nothing is created twice, and now
    # that the whole gang exists and fits, the gates are lifted (patch bodies recorded).
    api.requests.clear()
    run(r.reconcile(("ns", "j")))
    assert api.created() == []
    for i in (0, 1):
        assert api.patches(f"{PODS}/j-worker-{i}") == [{"spec": {"schedulingGates": None}}]

    # A pass whose pod cache lags (the watch has not delivered the pods yet): the creates
    # answer 409 AlreadyExists, which is not a second launch (no second Launched event).
    world.pods.pop(("ns", "j"), None)
    events.clear()
    run(r.reconcile(("ns", "j")))
    assert api.created()[-2:] == ["j-worker-0", "j-worker-1"]
    assert "Launched" not in [e for e, _ in events]


def test_two_gangs_for_one_pool_one_runs_the_other_waits_queued_without_gpus(
        tmp_path: Path) -> None:
    """Gates mode: two 2-node x 4-GPU jobs, one pool of two 4-GPU nodes. The first gang is
    released; the second keeps every gate, is Queued with what is short, and is released
    when the first one's pods are gone - no partial gang, no deadlock."""
    world, api, r, events = setup(tmp_path, nodes=2, gpus=4)
    for name, uid, ts in (("a", "ua", "2026-01-01T00:00:00Z"), ("b", "ub", "2026-01-01T00:00:01Z")):
        world.put_job(("ns", name), job_body(name, uid, nodes=2, per_node=4, created=ts))
    for _ in range(2):
        for name in ("a", "b"):
            run(r.reconcile(("ns", name)))
            sync_pods(world, api, name)
    a = [api.objects[f"{PODS}/a-worker-{i}"] for i in (0, 1)]
    b = [api.objects[f"{PODS}/b-worker-{i}"] for i in (0, 1)]
    assert all("schedulingGates" not in p["spec"] for p in a)
    assert all(p["spec"]["schedulingGates"] == [{"name": "yolofit.io/gang"}] for p in b)
    status = world.jobs[("ns", "b")]["status"]
    assert status["phase"] == "Queued" and status["admitted"]
    assert "needs 2 nodes with 4 free GPUs each, 0 of 2 have that now" in status["message"]
    assert "after ns/a released ahead of it" in status["message"]
    assert ("GangWaiting", status["message"]) in events

    bind(api, "a", ["t4-0", "t4-1"])  # a runs: its GPUs are now held by bound pods
    sync_pods(world, api, "a")
    run(r.reconcile(("ns", "b")))
    assert world.jobs[("ns", "b")]["status"]["phase"] == "Queued"
    assert "t4-0: 0 free, t4-1: 0 free" in world.jobs[("ns", "b")]["status"]["message"]

    api.bound_pods.clear()  # a's pods finished and are gone
    for i in (0, 1):
        api.objects[f"{PODS}/a-worker-{i}"]["status"] = {"phase": "Succeeded"}
    sync_pods(world, api, "a")
    run(r.reconcile(("ns", "b")))
    assert all("schedulingGates" not in api.objects[f"{PODS}/b-worker-{i}"]["spec"]
               for i in (0, 1))


def test_pod_group_mode_creates_an_owned_gang_and_ungated_members(tmp_path: Path) -> None:
    world, api, r, _ = setup(tmp_path, served=POD_GROUPS_SERVED)
    assert world.pod_groups
    world.put_job(("ns", "j"), job_body("j", "u", nodes=2, per_node=2))
    run(r.reconcile(("ns", "j")))
    group = api.objects["/apis/scheduling.k8s.io/v1beta1/namespaces/ns/podgroups/j"]
    assert group["spec"] == {"schedulingPolicy": {"gang": {"minCount": 2}}}
    assert group["metadata"]["ownerReferences"][0]["uid"] == "u"
    for i in (0, 1):
        spec = api.objects[f"{PODS}/j-worker-{i}"]["spec"]
        assert spec["schedulingGroup"] == {"podGroupName": "j"}
        assert "schedulingGates" not in spec  # the scheduler holds the gang, not a gate

    # The scheduler cannot place the gang: the job is Queued, saying what is short.
    sync_pods(world, api, "j")
    for p in world.pods[("ns", "j")].values():
        p["status"] = {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."}]}
    api.bound_pods = [{"spec": {"nodeName": "t4-0", "containers": [
        {"resources": {"limits": {"nvidia.com/gpu": "3"}}}]}, "status": {"phase": "Running"}}]
    run(r.reconcile(("ns", "j")))
    status = world.jobs[("ns", "j")]["status"]
    assert status["phase"] == "Queued"
    assert "needs 2 nodes with 2 free GPUs each, 1 of 2 have that now (t4-0: 1 free" in \
        status["message"]


def test_single_pod_jobs_need_no_pod_group(tmp_path: Path) -> None:
    world, api, r, _ = setup(tmp_path, served=POD_GROUPS_SERVED)
    world.put_job(("ns", "one"), job_body("one", "u1", nodes=1))
    run(r.reconcile(("ns", "one")))
    assert [n for n in api.created() if n.startswith("one")] == ["one-ddp", "one",
                                                                  "one-worker-0"]
    assert not [p for p in api.objects if "/podgroups/" in p]
    assert "schedulingGates" not in api.objects[f"{PODS}/one-worker-0"]["spec"]


def test_foreign_labelled_pod_is_not_adopted_and_is_reported(tmp_path: Path) -> None:
    world, api, r, events = setup(tmp_path)
    world.put_job(("ns", "j"), job_body("j", "u", nodes=1))
    # Someone else's pods carry the job's label; one even has the job's first pod name.
    for name in ("j-worker-0", "stray"):
        world.pods[("ns", "j")][name] = {
            "metadata": {"name": name, "namespace": "ns", "uid": f"f-{name}",
                         "labels": {"yolofit.io/job": "j", "yolofit.io/attempt": "0"}},
            "spec": {}, "status": {"phase": "Running"}}
    run(r.reconcile(("ns", "j")))
    status = world.jobs[("ns", "j")]["status"]
    assert status["admitted"] is True  # by quota, not because foreign pods exist
    assert not [p for p in api.created() if p.startswith("j-worker")]  # name taken: waits
    assert "waiting for pods j-worker-0 (not this job's) to go" in status["message"]
    cond = {c["type"]: c for c in status["conditions"]}["ForeignObjects"]
    assert cond["status"] == "True" and "j-worker-0, stray" in cond["message"]
    assert any(e == "ForeignObjects" for e, _ in events)
    assert world.pods_of(("ns", "j")) == {}
    assert ("delete", f"{PODS}/stray") not in api.calls


@pytest.mark.parametrize(("owner", "message", "foreign"), [
    ({"kind": "YOLOTrainingJob", "name": "j", "uid": "old", "controller": True},
     "waiting for Service j of a deleted job of the same name", False),
    ({"kind": "Deployment", "name": "web", "uid": "x", "controller": True},
     "Service j carries the name or label of job j but is not owned by it", True),
])
def test_service_409_is_not_taken_as_mine(tmp_path: Path, owner: dict[str, Any], message: str,
                                          foreign: bool) -> None:
    world, api, r, events = setup(tmp_path)
    api.objects["/api/v1/namespaces/ns/services/j"] = {
        "metadata": {"name": "j", "namespace": "ns", "uid": "s", "ownerReferences": [owner]}}
    world.put_job(("ns", "j"), job_body("j", "u", nodes=2))
    run(r.reconcile(("ns", "j")))
    status = world.jobs[("ns", "j")]["status"]
    assert message in status["message"]
    assert not [p for p in api.created() if p.startswith("j-worker")]
    conds = {c["type"]: c for c in status["conditions"]}
    assert ("ForeignObjects" in conds) is foreign
    # Once the old Service is gone (watch DELETED), the job's own comes.
    del api.objects["/api/v1/namespaces/ns/services/j"]
    world.services.pop(("ns", "j"), None)
    run(r.reconcile(("ns", "j")))
    assert api.objects["/api/v1/namespaces/ns/services/j"]["metadata"]["ownerReferences"][0][
        "uid"] == "u"
    assert [p for p in api.created() if p.startswith("j-worker")] == ["j-worker-0", "j-worker-1"]


def test_service_deleted_out_of_band_is_recreated(tmp_path: Path) -> None:
    world, api, r, _ = setup(tmp_path)
    world.put_job(("ns", "j"), job_body("j", "u", nodes=1))
    run(r.reconcile(("ns", "j")))
    del api.objects["/api/v1/namespaces/ns/services/j"]
    world.services.pop(("ns", "j"))  # the watch's DELETED
    api.requests.clear()
    run(r.reconcile(("ns", "j")))
    assert "j" in api.created()
    assert api.objects["/api/v1/namespaces/ns/services/j"]["metadata"]["ownerReferences"][0][
        "uid"] == "u"


def test_hold_counts_gangs_released_but_not_bound(tmp_path: Path) -> None:
    """The placement check reserves room for gangs already released to the scheduler."""
    assert gang_shell.USAGE_TTL > 0
    world, api, r, _ = setup(tmp_path, nodes=3, gpus=4)
    world.put_job(("ns", "a"), job_body("a", "ua", nodes=2, per_node=4))
    world.put_job(("ns", "b"), job_body("b", "ub", nodes=2, per_node=4,
                                        created="2026-01-01T00:00:01Z"))
    for _ in range(2):
        for name in ("a", "b"):
            run(r.reconcile(("ns", name)))
            sync_pods(world, api, name)
    # a released (unbound yet) takes 2 of 3 nodes: b's 2-node gang must wait.
    assert world.jobs[("ns", "b")]["status"]["phase"] == "Queued"


def test_relist_prunes_jobs_pods_and_services_the_apiserver_no_longer_has(
        tmp_path: Path) -> None:
    """A watch gap (or a standby's pause) hid the deletion of job `gone` and its pods: the
    periodic re-list prunes them and frees their quota; what the list has is kept."""
    from yolofit.operator.handlers import Operator
    from yolofit.operator.settings import OperatorSettings

    op = Operator(OperatorSettings(profile_dir=tmp_path))
    api = FakeKube()
    op.api = api  # type: ignore[assignment]
    w = op.world
    for name, uid in (("gone", "ug"), ("kept", "uk")):
        body = job_body(name, uid, nodes=1)
        body["metadata"]["resourceVersion"] = "5"
        body["status"] = {"phase": "Running", "admitted": True}
        w.put_job(("ns", name), body)
        w.reserved[uid] = ("ns", name)
        w.pods[("ns", name)][f"{name}-worker-0"] = {"metadata": {
            "name": f"{name}-worker-0", "namespace": "ns", "uid": f"p{uid}",
            "resourceVersion": "5", "labels": {"yolofit.io/job": name},
            "ownerReferences": [{"kind": "YOLOTrainingJob", "name": name, "uid": uid,
                                 "controller": True}]}}
        w.services[("ns", name)] = {"metadata": {"name": name, "namespace": "ns",
                                                 "labels": {"yolofit.io/job": name},
                                                 "resourceVersion": "5", "uid": f"s{uid}"}}
    assert w.admitted_gpus("ns") == 2
    listing = {"metadata": {"resourceVersion": "10"}}
    api.served["/apis/yolofit.io/v1alpha1/yolotrainingjobs"] = {
        **listing, "items": [w.jobs[("ns", "kept")]]}
    api.served["/api/v1/pods"] = {**listing, "items": [w.pods[("ns", "kept")]["kept-worker-0"]]}
    api.served["/api/v1/services"] = {**listing, "items": [w.services[("ns", "kept")]]}
    run(op._relist_now())
    assert list(w.jobs) == [("ns", "kept")]
    assert list(w.pods) == [("ns", "kept")] and list(w.services) == [("ns", "kept")]
    assert "ug" not in w.reserved and w.admitted_gpus("ns") == 1
    assert "ug" in w.deleted


def test_deleting_a_job_frees_its_quota_and_admits_the_queued_one_at_once(
        tmp_path: Path) -> None:
    """Issue 14: quota is released on deletion, not only on completion, and the job queued
    behind it is admitted by the same event (no wait for a resync or re-list)."""
    from yolofit.operator.api import GPUCapacityPolicySpec
    from yolofit.operator.handlers import Operator
    from yolofit.operator.settings import OperatorSettings

    op = Operator(OperatorSettings(profile_dir=tmp_path))
    world, api, r, _ = setup(tmp_path, nodes=2, gpus=4)
    op.world, op.api, op.reconciler = world, api, r  # type: ignore[assignment]
    world.set_policy(GPUCapacityPolicySpec.model_validate(
        {"namespaces": [{"namespace": "ns", "maxGpusAdmitted": 4}]}))

    async def scenario() -> None:
        first = job_body("first", "u1", nodes=1, per_node=4)
        await op._on_job({"type": "ADDED", "object": first})
        second = job_body("second", "u2", nodes=1, per_node=4, created="2026-01-01T00:00:01Z")
        await op._on_job({"type": "ADDED", "object": second})
        assert world.jobs[("ns", "second")]["status"]["phase"] == "Queued"
        await op._on_job({"type": "DELETED", "object": first})
        for _ in range(50):
            await asyncio.sleep(0.01)
            if (world.jobs[("ns", "second")].get("status") or {}).get("admitted"):
                break

    run(scenario())
    assert world.admitted_gpus("ns") == 4 and "u1" not in world.reserved
    assert world.jobs[("ns", "second")]["status"]["admitted"] is True
    assert f"{PODS}/second-worker-0" in api.objects


def test_deleting_an_old_attempts_pods_spares_a_newer_pod_of_the_same_name(
        tmp_path: Path) -> None:
    """The cache still shows attempt 0's worker-0 while the apiserver already holds a newer
    worker-0 (same name, new UID): the delete carries the old pod's UID, so only the old pod
    it meant can go."""
    world, api, r, _ = setup(tmp_path)
    world.put_job(("ns", "j"), job_body("j", "u"))
    run(r.reconcile(("ns", "j")))
    sync_pods(world, api, "j")
    world.jobs[("ns", "j")]["status"]["attempt"] = 1  # e.g. a re-plan: attempt 0 must go
    newer = copy.deepcopy(api.objects[f"{PODS}/j-worker-0"])
    newer["metadata"].update(uid="newer", labels={**newer["metadata"]["labels"],
                                                  "yolofit.io/attempt": "1"})
    api.objects[f"{PODS}/j-worker-0"] = newer  # the watch has not told the cache yet
    api.requests.clear()
    run(r.reconcile(("ns", "j")))
    assert {q.path for q in api.requests if q.method == "delete"} == {
        f"{PODS}/j-worker-0", f"{PODS}/j-worker-1"}
    assert api.objects[f"{PODS}/j-worker-0"]["metadata"]["uid"] == "newer"  # spared
    assert f"{PODS}/j-worker-1" not in api.objects  # attempt 0's, gone


def test_a_profiling_job_says_its_place_in_the_trace_queue(tmp_path: Path) -> None:
    """The trace queue's answer (Profiler.ahead) is in the job's status: waiting behind N
    profiles, then tracing (every waiting job is reconciled again when a trace ends)."""
    world, api, r, events = setup(tmp_path)
    asked: list[tuple[str, tuple[str, str]]] = []

    async def start(key: Any, job: tuple[str, str]) -> None:
        asked.append((key.model, job))

    ahead: list[int | None] = [2]
    r.start_profiling = start
    r.profile_queue = lambda key, at_most: ahead[0]
    job = job_body("j", "u", nodes=1)
    job["spec"]["model"] = "yolov8s"  # the store holds yolov8n profiles only
    world.jobs[("ns", "j")] = job
    run(r.reconcile(("ns", "j")))
    st = api.patches(f"{JOBS}/j/status")[-1]["status"]
    assert st["phase"] == "Profiling" and asked == [("yolov8s", ("ns", "j"))]
    assert st["message"].startswith("waiting to trace yolov8s (profile yolov8s|")
    assert st["message"].endswith(": 2 other profiles are traced first (namespaces in turn)")
    writes = len(api.patches(f"{JOBS}/j/status"))
    for n in (40, 25, 11):  # a long queue draining: one message, no status write per trace
        ahead[0] = n
        run(r.reconcile(("ns", "j")))
    assert len(api.patches(f"{JOBS}/j/status")) == writes + 1
    assert api.patches(f"{JOBS}/j/status")[-1]["status"]["message"].endswith(
        ": more than 10 other profiles are traced first (namespaces in turn)")
    ahead[0] = None  # its trace started
    run(r.reconcile(("ns", "j")))
    st = api.patches(f"{JOBS}/j/status")[-1]["status"]
    assert st["phase"] == "Profiling" and st["message"].startswith("tracing yolov8s (profile ")
    assert [c["message"] for c in st["conditions"] if c["type"] == "Profiled"] == [st["message"]]


@pytest.mark.parametrize("rule_queue", [None, "lq"])
def test_a_tenants_queue_label_does_not_swap_the_namespaces_quota(
        tmp_path: Path, rule_queue: str | None) -> None:
    """maxGpusAdmitted is the platform's. A job that picks a Kueue LocalQueue by its own label
    is queued by Kueue *and* held to it; where the rule itself names the queue, the platform
    handed the namespace's quota to Kueue and yolofit admits nothing itself."""
    from yolofit.operator.api import GPUCapacityPolicySpec

    world, api, r, _ = setup(tmp_path, nodes=2, gpus=4)
    world.set_policy(GPUCapacityPolicySpec.model_validate({"namespaces": [
        {"namespace": "ns", "maxGpusAdmitted": 2,
         **({"kueueQueue": rule_queue} if rule_queue else {})}]}))
    for i, name in enumerate(("a", "b")):
        job = job_body(name, f"u-{name}", nodes=1, per_node=2,
                       created=f"2026-01-01T00:00:0{i}Z")
        job["metadata"]["labels"] = {"kueue.x-k8s.io/queue-name": "lq"}
        world.jobs[("ns", name)] = job
        run(r.reconcile(("ns", name)))
    pods = {n for n in api.created() if "-worker-" in n}
    st_b = api.patches(f"{JOBS}/b/status")[-1]["status"]
    if rule_queue is None:  # the label alone: yolofit's 2 GPUs hold, b waits for them
        assert world.admitted_gpus("ns") == 2 and pods == {"a-worker-0"}
        assert st_b["phase"] == "Queued" and "has 2 of 2 GPUs admitted" in st_b["message"]
        pod = api.objects[f"{PODS}/a-worker-0"]
        assert pod["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "lq"  # Kueue's too
    else:  # the platform's rule: Kueue's ClusterQueue quota decides, both gangs go to it
        assert pods == {"a-worker-0", "b-worker-0"} and not st_b.get("admitted")
        assert not world.reserved  # nothing held against maxGpusAdmitted
