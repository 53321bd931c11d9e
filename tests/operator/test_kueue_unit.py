"""Kueue integration, pure parts: which jobs Kueue manages, the pod-group transform, what a
Workload means for the job, and the objects rendered from a policy. Table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from yolofit.operator import kueue
from yolofit.operator.api import (
    GPUCapacityPolicySpec,
    KueueStatus,
    Plan,
    YOLOTrainingJobSpec,
    YOLOTrainingJobStatus,
)
from yolofit.operator.kueue_objects import Capacity, PolicyError, flavors, queues
from yolofit.operator.launch import GANG_GATE, build_pod

POLICY = GPUCapacityPolicySpec.model_validate({
    "classes": [{"name": "t4", "nodeSelector": {"nvidia.com/gpu.product": "Tesla-T4"}},
                {"name": "a100-80gb",
                 "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}}],
    "namespaces": [{"namespace": "team-a", "allowedClasses": ["t4"], "maxGpusAdmitted": 8,
                    "kueueQueue": "team-a-gpus"},
                   {"namespace": "team-b"},
                   {"namespace": "*", "maxGpusPerJob": 4}],
})


def job(name: str = "fit", ns: str = "team-b", labels: dict[str, str] | None = None,
        uid: str = "0123abcd-ef45-6789-0000-111122223333") -> dict[str, Any]:
    return {"apiVersion": "yolofit.io/v1alpha1", "kind": "YOLOTrainingJob",
            "metadata": {"name": name, "namespace": ns, "uid": uid, "labels": labels or {}},
            "spec": {"model": "yolov8n", "data": "/d.yaml"}}


@pytest.mark.parametrize(("ns", "labels", "want"), [
    ("team-a", None, "team-a-gpus"),                       # policy rule names the queue
    ("team-b", None, None),                                # rule without kueueQueue
    ("team-b", {kueue.QUEUE_LABEL: "lq"}, "lq"),           # the job's label
    ("team-a", {kueue.QUEUE_LABEL: "other"}, "other"),     # label wins over the rule
    ("elsewhere", None, None),                             # only the * rule
    ("team-b", {kueue.QUEUE_LABEL: ""}, None),             # empty label = not managed
])
def test_queue_name(ns: str, labels: dict[str, str] | None, want: str | None) -> None:
    assert kueue.queue_name(POLICY, ns, job(ns=ns, labels=labels)) == want


def test_group_name_is_per_job_object_and_stable() -> None:
    a = kueue.group_name("fit", "0123abcd-ef45-6789-0000-111122223333")
    assert a == "fit-0123abcd"
    assert kueue.group_name("fit", "99999999-0000") != a  # same name, new object
    assert kueue.job_of_group(a) == ("fit", "0123abcd")
    assert kueue.job_of_group(kueue.group_name("my-job-1", "abcdef01")) == ("my-job-1",
                                                                            "abcdef01")
    assert len(kueue.group_name("x" * 48, "0123abcd-ef45")) <= 63


def plan() -> Plan:
    return Plan(gpu_class="t4", nodes=2, gpus_per_node=4, gpus=8, batch_per_gpu=8,
                accumulate=1, amp="fp16", imgsz=640)


def test_pod_group_labels_annotations_requests_and_gates() -> None:
    body = job(labels={kueue.PRIORITY_LABEL: "high"})
    pod = build_pod(body, YOLOTrainingJobSpec(model="yolov8n", data="/d.yaml"), plan(), 0, 0,
                    {"nvidia.com/gpu.product": "Tesla-T4"}, [], gated=True)
    out = kueue.as_pod_group(pod, queue="lq", group="fit-0123abcd", total=2,
                             priority_class="high", gated_by_plan=True)
    meta = out["metadata"]
    assert meta["labels"][kueue.QUEUE_LABEL] == "lq"
    assert meta["labels"][kueue.GROUP_LABEL] == "fit-0123abcd"
    assert meta["labels"][kueue.PRIORITY_LABEL] == "high"
    assert meta["annotations"][kueue.TOTAL_COUNT] == "2"
    assert meta["annotations"][kueue.GATED_BY] == kueue.PLAN_GATE
    # Kueue's gate replaces yolofit's gang gate; requests come from the plan.
    assert out["spec"]["schedulingGates"] == [{"name": kueue.KUEUE_GATE}]
    assert out["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == "4"
    assert out["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "Tesla-T4"}
    assert pod["spec"]["schedulingGates"] == [{"name": GANG_GATE}]  # input untouched


def test_hook_pod_is_identity_for_unmanaged_jobs_and_gates_only_before_a_workload() -> None:
    hook = kueue.KueueHook()
    pod = {"metadata": {"name": "p"}, "spec": {"schedulingGates": []}}
    assert hook.pod(pod, POLICY, job(ns="team-b"), 2) is pod
    first = hook.pod(pod, POLICY, job(ns="team-a"), 2)
    assert first["metadata"]["annotations"][kueue.GATED_BY] == kueue.PLAN_GATE
    hook.on_workload({"type": "ADDED", "object": workload()}, {})
    again = hook.pod(pod, POLICY, job(ns="team-a"), 2)
    assert kueue.GATED_BY not in again["metadata"]["annotations"]


def cond(type_: str, status: str = "True", reason: str = "", message: str = "") -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


def workload(conds: list[dict[str, str]] | None = None, evictions: int = 0,
             uid: str = "wl-1", gated: str = "", cq: str = "") -> dict[str, Any]:
    status: dict[str, Any] = {"conditions": conds or []}
    if evictions:
        status["schedulingStats"] = {"evictions": [
            {"reason": "Preempted", "underlyingCause": "", "count": evictions}]}
    if cq:
        status["admission"] = {"clusterQueue": cq, "podSetAssignments": [
            {"name": "abc", "flavors": {"nvidia.com/gpu": "t4", "cpu": "t4"}}]}
    meta: dict[str, Any] = {"name": "fit-0123abcd", "namespace": "team-a", "uid": uid}
    if gated:
        meta["annotations"] = {kueue.GATED_BY: gated}
    return {"metadata": meta, "status": status}


PENDING = cond("QuotaReserved", "False", "Pending",
               "couldn't assign flavors to pod set abc: insufficient unused quota for "
               "nvidia.com/gpu in flavor t4, 8 more needed")


@pytest.mark.parametrize(("wl", "phase", "words"), [
    (None, "Queued", "waiting for Kueue to create Workload fit-0123abcd"),
    (workload(gated=kueue.PLAN_GATE), "Queued", "admission gated by yolofit.io/plan"),
    (workload([PENDING]), "Queued", "insufficient unused quota for nvidia.com/gpu in flavor t4"),
    (workload([cond("QuotaReserved"), cond("Admitted", "False", "", "check x pending")],
              cq="team-a"), "Queued", "quota reserved in ClusterQueue team-a; waiting for "
     "admission checks: check x pending"),
    (workload([cond("QuotaReserved"), cond("Admitted")], cq="team-a"), None, ""),
    (workload([cond("Finished")]), None, ""),
])
def test_overlay(wl: dict[str, Any] | None, phase: str | None, words: str) -> None:
    o = kueue.overlay(kueue.workload_view("fit-0123abcd", wl), "lq", 2)
    assert o.phase == phase
    assert words in o.message


def test_workload_view_reads_admission_and_evictions() -> None:
    v = kueue.workload_view("w", workload([cond("QuotaReserved"), cond("Admitted")],
                                          evictions=2, cq="team-a"))
    assert v.admitted and v.quota_reserved and not v.finished
    assert (v.cluster_queue, v.flavors, v.evictions) == ("team-a", ("t4",), 2)


@pytest.mark.parametrize(("seen_uid", "seen", "uid", "now", "new"), [
    ("", 0, "wl-1", 0, 0),         # first sight, never evicted
    ("", 0, "wl-1", 1, 1),         # first sight, already evicted once: answer it
    ("wl-1", 1, "wl-1", 1, 0),     # answered
    ("wl-1", 1, "wl-1", 3, 2),     # two more since
    ("wl-1", 4, "wl-2", 1, 1),     # a new Workload (old one collected): counts from zero
])
def test_new_evictions(seen_uid: str, seen: int, uid: str, now: int, new: int) -> None:
    ks = KueueStatus(workload_uid=seen_uid, evictions=seen)
    view = kueue.workload_view("w", workload(evictions=now, uid=uid))
    assert kueue.new_evictions(ks, view) == new


def test_evicted_answers_each_eviction_once() -> None:
    hook = kueue.KueueHook()
    body = job(ns="team-a")
    st = YOLOTrainingJobStatus(plan=plan(), start_time="2026-01-01T00:00:00Z")
    preempted = [cond("Evicted", "True", "Preempted", "Preempted to accommodate a workload"),
                 cond("Preempted", "True", "InClusterQueue", "Preempted to accommodate a "
                      "workload (UID: x) due to prioritization in the ClusterQueue")]
    hook.on_workload({"type": "MODIFIED", "object": workload([cond("QuotaReserved"),
                                                             cond("Admitted")])}, {})
    assert hook.evicted(st, "lq", body) is None
    hook.on_workload({"type": "MODIFIED", "object": workload(preempted, evictions=1)}, {})
    why = hook.evicted(st, "lq", body)
    assert why is not None and why.startswith("Preempted: ") and "prioritization" in why
    assert st.kueue is not None and st.kueue.restarts == 1
    assert hook.evicted(st, "lq", body) is None  # the same eviction is not answered twice


def test_settle_mirrors_conditions_and_keeps_terminal_phases() -> None:
    hook = kueue.KueueHook()
    hook.on_workload({"type": "ADDED", "object": workload([PENDING])}, {})
    st = YOLOTrainingJobStatus(phase="Admitted", plan=plan())
    hook.settle(st, job(ns="team-a"), POLICY, 1, "t")
    assert st.phase == "Queued" and "8 more needed" in st.message
    assert st.kueue is not None and st.kueue.workload == "fit-0123abcd"
    got = {c.type: (c.status, c.reason) for c in st.conditions}
    assert got["QuotaReserved"] == ("False", "Pending")
    done = YOLOTrainingJobStatus(phase="Succeeded", plan=plan())
    hook.settle(done, job(ns="team-a"), POLICY, 1, "t")
    assert done.phase == "Succeeded"
    unmanaged = YOLOTrainingJobStatus(phase="Admitted", plan=plan())
    hook.settle(unmanaged, job(ns="team-b"), POLICY, 1, "t")
    assert unmanaged.phase == "Admitted" and unmanaged.kueue is None


def test_on_workload_maps_to_the_job_by_group_name_and_uid() -> None:
    hook = kueue.KueueHook()
    jobs = {("team-a", "fit"): job(ns="team-a")}
    assert hook.on_workload({"type": "ADDED", "object": workload()}, jobs) == ("team-a", "fit")
    other = job(ns="team-a", uid="ffffffff-0000")
    assert hook.on_workload({"type": "ADDED", "object": workload()},
                            {("team-a", "fit"): other}) is None
    hook.on_workload({"type": "DELETED", "object": workload()}, jobs)
    assert not hook.view("team-a", "fit-0123abcd").exists


def test_flavors_from_policy_classes() -> None:
    out = flavors(POLICY)
    assert [(f["metadata"]["name"], f["spec"]["nodeLabels"]) for f in out] == [
        ("t4", {"nvidia.com/gpu.product": "Tesla-T4"}),
        ("a100-80gb", {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"})]


@pytest.mark.parametrize(("spec", "words"), [
    ({}, "spec.classes is empty"),
    ({"classes": [{"name": "t4"}]}, "spec.classes[0] (t4): nodeSelector is empty"),
])
def test_flavors_refuse_policies_without_node_labels(spec: dict[str, Any], words: str) -> None:
    with pytest.raises(PolicyError, match=words.replace("[", r"\[").replace("(", r"\(")
                       .replace(")", r"\)")):
        flavors(GPUCapacityPolicySpec.model_validate(spec))


def test_queues_per_team_with_quota_per_allowed_class() -> None:
    cap = {"t4": Capacity(16, 192, 2**40), "a100-80gb": Capacity(16, 192, 2**41)}
    objs = queues(POLICY, cap)
    kinds = [(o["kind"], o["metadata"]["name"]) for o in objs]
    assert kinds == [("ClusterQueue", "team-a"), ("LocalQueue", "team-a-gpus"),
                     ("ClusterQueue", "team-b"), ("LocalQueue", "gpus")]
    team_a = objs[0]["spec"]["resourceGroups"][0]["flavors"]
    assert [f["name"] for f in team_a] == ["t4"]  # allowedClasses
    gpu = {r["name"]: r["nominalQuota"] for r in team_a[0]["resources"]}
    assert gpu == {"cpu": "192", "memory": str(2**40), "nvidia.com/gpu": "8"}  # maxGpusAdmitted
    team_b = objs[2]["spec"]["resourceGroups"][0]["flavors"]
    assert [f["name"] for f in team_b] == ["t4", "a100-80gb"]
    assert team_b[1]["resources"][2]["nominalQuota"] == "16"  # no limit: the fleet's GPUs
    assert objs[1]["metadata"]["namespace"] == "team-a"


def test_max_gpus_admitted_is_not_applied_where_kueue_admits() -> None:
    from yolofit.operator.admission import static_errors

    spec = YOLOTrainingJobSpec(model="yolov8n", data="/d.yaml", gpus={"nodes": 2, "perNode": 8})
    own = GPUCapacityPolicySpec.model_validate(
        {"namespaces": [{"namespace": "ns", "maxGpusAdmitted": 8}]})
    kueue_ns = GPUCapacityPolicySpec.model_validate(
        {"namespaces": [{"namespace": "ns", "maxGpusAdmitted": 8, "kueueQueue": "lq"}]})
    assert any("can never be admitted" in e for e in static_errors("j", "ns", spec, own, {}))
    assert not any("can never be admitted" in e
                   for e in static_errors("j", "ns", spec, kueue_ns, {}))


def test_queues_cover_what_mig_and_hami_pods_request_with_zero_where_nodes_lack_it() -> None:
    """The default sandbox fleet's nodes (deploy/fleet.yaml, as kwok registers them): a MIG
    class's slices and a HAMi class's gpumem are covered resources of the team's queue, so
    Kueue can admit those pods; every flavor lists every covered resource."""
    from yolofit.sandbox.fleet import default_fleet_path, fleet_nodes, load_fleet
    from yolofit.sandbox.kueue import fleet_capacity

    a100 = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    policy = GPUCapacityPolicySpec.model_validate({
        "classes": [{"name": "a100-80gb", "nodeSelector": a100},
                    {"name": "a100-mig-1g", "migProfile": "1g.10gb",
                     "nodeSelector": {**a100, "nvidia.com/mig.config": "all-1g.10gb"}},
                    {"name": "a100-hami", "nodeSelector": a100, "backend": {"kind": "hami"}}],
        "namespaces": [{"namespace": "team-a", "maxGpusAdmitted": 4}]})
    capacity = fleet_capacity(policy, fleet_nodes(load_fleet(default_fleet_path())))
    assert capacity["a100-mig-1g"].gpus == 0  # all-partitioned: no whole GPU left
    assert capacity["a100-mig-1g"].devices == {"nvidia.com/mig-1g.10gb": 56}  # 8 GPUs x 7
    assert capacity["a100-hami"].devices == {"nvidia.com/gpumem": 16 * 81920}  # 2 nodes x 8
    (cq, _lq) = queues(policy, capacity)
    group = cq["spec"]["resourceGroups"][0]
    assert group["coveredResources"] == ["cpu", "memory", "nvidia.com/gpu", "nvidia.com/gpumem",
                                         "nvidia.com/mig-1g.10gb"]
    quota = {f["name"]: {r["name"]: r["nominalQuota"] for r in f["resources"]
                         if r["name"].startswith("nvidia.com/")} for f in group["flavors"]}
    assert quota == {
        "a100-80gb": {"nvidia.com/gpu": "4", "nvidia.com/gpumem": "0",
                      "nvidia.com/mig-1g.10gb": "0"},
        "a100-mig-1g": {"nvidia.com/gpu": "0", "nvidia.com/gpumem": "0",
                        "nvidia.com/mig-1g.10gb": "4"},  # a slice is a GPU of the limit
        "a100-hami": {"nvidia.com/gpu": "4", "nvidia.com/gpumem": str(16 * 81920),
                      "nvidia.com/mig-1g.10gb": "0"}}
    assert all([r["name"] for r in f["resources"]] == group["coveredResources"]
               for f in group["flavors"])
