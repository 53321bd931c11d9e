"""Table-driven tests of the pure core: policy, admission, launch, status, feedback."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from opfixtures import pol, spec, summary

from yolofit.estimator.profile import ProfileStore
from yolofit.operator import admission, feedback, launch, policy
from yolofit.operator.api import GPUCapacityPolicySpec, Plan, YOLOTrainingJobSpec
from yolofit.operator.fleet import FleetNode, discover, node_from_object
from yolofit.operator.status import PodView, pod_view, set_condition, summarize

GiB = 2**30
T4 = {"nvidia.com/gpu.product": "Tesla-T4", "nvidia.com/gpu.memory": "15360"}
A100 = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB", "nvidia.com/gpu.memory": "81920"}
NODES = [FleetNode(f"t4-{i}", T4, 4) for i in range(4)] + [
    FleetNode(f"a100-{i}", A100, 8) for i in range(2)]


# --- fleet & policy -------------------------------------------------------------------------

def test_discover_groups_nodes_by_product_smallest_first() -> None:
    classes = discover(NODES)
    assert list(classes) == ["t4", "a100-80gb"]
    t4 = classes["t4"]
    assert (t4.nodes, t4.gpus_per_node, t4.total_gpus) == (4, 4, 16)
    assert classes["a100-80gb"].node_selector == {"nvidia.com/gpu.product": A100[
        "nvidia.com/gpu.product"]}


def test_node_from_object_reads_allocatable_and_skips_cpu_nodes() -> None:
    gpu = {"metadata": {"name": "n", "labels": T4}, "status": {"allocatable": {
        "nvidia.com/gpu": "4"}}}
    assert node_from_object(gpu) == FleetNode("n", T4, 4)
    assert node_from_object({"metadata": {"name": "cpu", "labels": {}}}) is None


@pytest.mark.parametrize(("policy_kw", "names"), [
    ({}, ["t4", "a100-80gb"]),
    ({"preference": ["a100-80gb"]}, ["a100-80gb", "t4"]),
    ({"classes": [{"name": "big", "nodeSelector": {"nvidia.com/gpu.product":
                                                   A100["nvidia.com/gpu.product"]},
                   "usableMemory": "70GiB"}]}, ["big"]),
])
def test_effective_classes(policy_kw: dict[str, Any], names: list[str]) -> None:
    assert list(policy.effective_classes(pol(**policy_kw), NODES)) == names


def test_policy_class_overrides_memory_and_headroom() -> None:
    p = pol(classes=[{"name": "t4", "nodeSelector": {"nvidia.com/gpu.product": "Tesla-T4"},
                      "headroomPercent": 20, "tolerations": [{"key": "x", "operator": "Exists"}]},
                     {"name": "a100-80gb", "nodeSelector": {"nvidia.com/gpu.product":
                                                            A100["nvidia.com/gpu.product"]},
                      "usableMemory": "70GiB"}])
    classes = policy.effective_classes(p, NODES)
    assert classes["t4"].gpu.headroom == pytest.approx(0.2)
    assert classes["a100-80gb"].gpu.budget_bytes == 70 * GiB
    assert {"key": "x", "operator": "Exists"} in classes["t4"].tolerations


@pytest.mark.parametrize(("rules", "ns", "allowed"), [
    ([], "a", ["t4", "a100-80gb"]),
    ([{"namespace": "a", "allowedClasses": ["t4"]}], "a", ["t4"]),
    ([{"namespace": "a", "allowedClasses": ["t4"]}], "b", ["t4", "a100-80gb"]),
    ([{"namespace": "*", "allowedClasses": ["a100-80gb"]}], "b", ["a100-80gb"]),
])
def test_allowed_classes(rules: list[dict[str, Any]], ns: str, allowed: list[str]) -> None:
    p = pol(namespaces=rules)
    assert policy.allowed_classes(p, ns, policy.effective_classes(p, NODES)) == allowed


@pytest.mark.parametrize(("limit", "used", "job", "ok"), [
    (None, 100, 8, True), (8, 0, 8, True), (8, 4, 8, False), (8, 4, 4, True), (0, 0, 1, False),
])
def test_quota(limit: int | None, used: int, job: int, ok: bool) -> None:
    rule = pol(namespaces=[{"namespace": "a", "maxGpusAdmitted": limit}]).namespaces[0]
    assert policy.quota_allows(rule, used, job) is ok


def test_margin_shrinks_the_budget_proportionally() -> None:
    gpu = discover(NODES)["t4"].gpu
    assert policy.with_margin(gpu, 0.25).budget_bytes == pytest.approx(gpu.budget_bytes / 1.25,
                                                                       rel=1e-6)
    assert policy.with_margin(gpu, 0.0) is gpu


# --- admission ------------------------------------------------------------------------------

def decide(store: ProfileStore, s: YOLOTrainingJobSpec, p: GPUCapacityPolicySpec | None = None,
           ns: str = "team-a", **kw: Any) -> admission.Decision:
    p = p or pol()
    return admission.decide("job", ns, s, p, policy.effective_classes(p, NODES), store, **kw)


def test_fits_on_the_first_class_in_preference_order(store: ProfileStore) -> None:
    d = decide(store, spec(gpus={"nodes": 2, "perNode": 4}))
    assert d.plan is not None and not d.errors
    assert (d.plan.gpu_class, d.plan.gpus, d.plan.amp) == ("t4", 8, "fp16")
    assert d.plan.batch_per_gpu * d.plan.gpus * d.plan.accumulate == 64
    assert d.plan.predicted_device_bytes <= d.plan.usable_bytes
    assert d.plan.estimate.endswith("GiB")


@pytest.mark.parametrize(("s", "p", "fragment"), [
    (spec(model="yolov8x", gpus={"nodes": 1, "perNode": 1}),
     pol(namespaces=[{"namespace": "team-a", "allowedClasses": ["t4"]}]),
     "the largest class allowed in namespace team-a (t4) has"),
    (spec(model="yolov8x"), pol(namespaces=[{"namespace": "team-a", "allowedClasses": ["t4"]}]),
     "it would fit on a100-80gb"),
    (spec(gpu_class="a100-80gb"), pol(namespaces=[{"namespace": "team-a",
                                                   "allowedClasses": ["t4"]}]),
     "spec.gpuClass: class 'a100-80gb' is not allowed in namespace team-a (allowed: t4)"),
    (spec(gpu_class="v100"), None, "spec.gpuClass: unknown class 'v100'"),
    (spec(gpus={"nodes": 4, "perNode": 8}), pol(namespaces=[{"namespace": "team-a",
                                                             "maxGpusPerJob": 16}]),
     "spec.gpus: 4 x 8 = 32 GPUs exceeds the 16 GPUs per job allowed in namespace team-a"),
    (spec(gpus={"nodes": 1, "perNode": 16}), None, "no allowed class has 1 nodes with 16 GPUs"),
    (spec(args={"mosiac": 1}), None, "spec.args.mosiac"),
])
def test_refusals_name_the_field_and_numbers(store: ProfileStore, s: YOLOTrainingJobSpec,
                                             p: GPUCapacityPolicySpec | None,
                                             fragment: str) -> None:
    d = decide(store, s, p)
    assert d.plan is None and d.refused
    assert fragment in "; ".join(d.errors)


def test_missing_profile_is_not_an_error(store: ProfileStore) -> None:
    d = decide(store, spec(model="yolov8s"))
    assert d.missing is not None and d.missing.model == "yolov8s" and not d.errors


def test_learned_margin_lowers_the_batch(store: ProfileStore) -> None:
    s = spec(nbs=512, gpus={"nodes": 1, "perNode": 1})
    plain = decide(store, s).plan
    careful = decide(store, s, margins={"team-a|yolov8n|t4": 0.5}).plan
    elsewhere = decide(store, s, margins={"team-b|yolov8n|t4": 0.5}).plan
    assert plain is not None and careful is not None and elsewhere is not None
    assert careful.batch_per_gpu < plain.batch_per_gpu and careful.margin == 0.5
    # Margins are per namespace: team-b's OOMs do not shrink team-a's plans.
    assert elsewhere.batch_per_gpu == plain.batch_per_gpu and elsewhere.margin == 0


# --- launch ---------------------------------------------------------------------------------

JOB = {"apiVersion": "yolofit.io/v1alpha1", "kind": "YOLOTrainingJob",
       "metadata": {"name": "j", "namespace": "ns", "uid": "u-1"}}
PLAN = Plan(gpu_class="t4", nodes=2, gpus_per_node=4, gpus=8, batch_per_gpu=8, accumulate=1,
            amp="fp16", imgsz=640, predicted_device_bytes=4 * GiB)


def test_pods_are_deterministic_gated_and_carry_the_ddp_env() -> None:
    s = spec(gpus={"nodes": 2, "perNode": 4})
    pods = [launch.build_pod(JOB, s, PLAN, r, 0, {"p": "t4"}, [{"key": "g"}]) for r in (0, 1)]
    assert pods == [launch.build_pod(JOB, s, PLAN, r, 0, {"p": "t4"}, [{"key": "g"}])
                    for r in (0, 1)]
    assert [p["metadata"]["name"] for p in pods] == ["j-worker-0", "j-worker-1"]
    p1 = pods[1]
    assert p1["spec"]["schedulingGates"] == [{"name": "yolofit.io/gang"}]
    assert p1["spec"]["hostname"] == "j-worker-1" and p1["spec"]["subdomain"] == "j"
    assert p1["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    c = p1["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["MASTER_ADDR"] == env["PET_MASTER_ADDR"] == "j-worker-0.j.ns.svc"
    assert (env["WORLD_SIZE"], env["RANK"], env["PET_NNODES"], env["PET_NPROC_PER_NODE"]) == (
        "8", "1", "2", "4")
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "4"
    cfg = json.loads(env["YOLOFIT_TRAIN_CONFIG"])
    assert (cfg["batch_per_gpu"], cfg["accumulate"], cfg["amp"], cfg["job"]) == (8, 1, "fp16", "j")
    svc = launch.build_service(JOB)
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"]


# --- status ---------------------------------------------------------------------------------

def view(rank: int, phase: str, code: int | None = None, message: str = "") -> PodView:
    return PodView(f"j-worker-{rank}", rank, 0, phase, False, "n", code, message)


@pytest.mark.parametrize(("pods", "phase", "reason", "oom"), [
    ([view(0, "Pending")], "Admitted", "WaitingForPods", False),
    ([view(0, "Running"), view(1, "Pending")], "Admitted", "WaitingForPods", False),
    ([view(0, "Running"), view(1, "Running")], "Running", "AllPodsRunning", False),
    ([view(0, "Succeeded"), view(1, "Running")], "Running", "AllPodsRunning", False),
    ([view(0, "Succeeded", 0), view(1, "Succeeded", 0)], "Succeeded", "Completed", False),
    ([view(0, "Running"), view(1, "Failed", 88)], "Failed", "OutOfMemory", True),
    ([view(0, "Failed", 2, summary(0, 0, "data-missing", "no /d.yaml"))], "Failed",
     "DataMissing", False),
    ([view(0, "Failed", 1, "Traceback ... boom")], "Failed", "TrainerFailed", False),
])
def test_summarize(pods: list[PodView], phase: str, reason: str, oom: bool) -> None:
    out = summarize(pods, PLAN)
    assert (out.phase, out.reason, out.oom) == (phase, reason, oom)


def test_a_failed_rank_waits_for_its_running_peers_before_the_job_fails() -> None:
    """Rank 0 dies of a collective's "Connection closed by peer" because rank 1 ran out of
    GPU memory, and the kubelets report rank 0 first: the job is not failed for rank 0's
    error while rank 1 may yet report (PEER_SETTLE_SECONDS from rank 0's finish); rank 1's
    OOM then re-plans it. A rank that never reports does not hold the job longer, and one
    that failed on its own fails the job at once."""
    peer = "RuntimeError: Connection closed by peer"
    first = dataclasses.replace(view(0, "Failed", 1, peer), finished_at=1000.0)
    out = summarize([first, view(1, "Running")], PLAN, now=1010.0)
    assert (out.phase, out.reason, out.oom, out.recheck) == ("Running", "RankFailed", False,
                                                             20.0)
    assert out.message.startswith("j-worker-0 exited with code 1") and "30s" in out.message
    out = summarize([first, view(1, "Failed", 88)], PLAN, now=1011.0)
    assert (out.phase, out.reason, out.oom) == ("Failed", "OutOfMemory", True)
    out = summarize([first, view(1, "Running")], PLAN, now=1031.0)  # the window passed
    assert (out.phase, out.reason, out.recheck) == ("Failed", "TrainerFailed", None)
    out = summarize([first, view(1, "Failed", 1, peer)], PLAN, now=1001.0)  # all reported
    assert (out.phase, out.reason) == ("Failed", "TrainerFailed")
    out = summarize([view(0, "Failed", 1, peer), view(1, "Running")], PLAN, now=1001.0)
    assert out.phase == "Failed"  # no finish time known: decided at once, as before
    own = dataclasses.replace(view(0, "Failed", 1, summary(0, 0, "error", "loss is NaN")),
                              finished_at=1000.0)
    out = summarize([own, view(1, "Running")], PLAN, now=1001.0)  # its own error: at once
    assert (out.phase, out.reason) == ("Failed", "TrainerFailed")


def test_failed_message_carries_the_trainer_message() -> None:
    out = summarize([view(0, "Failed", 2, summary(0, 0, "data-missing", "no /d.yaml"))], PLAN)
    assert "no /d.yaml" in out.message and "exited with code 2" in out.message


def test_pod_view_reads_termination_and_gates() -> None:
    pod = {"metadata": {"name": "j-worker-1", "labels": {"yolofit.io/rank": "1",
                                                         "yolofit.io/attempt": "2"}},
           "spec": {"schedulingGates": [{"name": "yolofit.io/gang"}]},
           "status": {"phase": "Failed", "containerStatuses": [{"state": {"terminated": {
               "exitCode": 88, "message": "{}", "finishedAt": "2026-12-02T04:10:01Z"}}}]}}
    v = pod_view(pod)
    assert (v.rank, v.attempt, v.gated, v.exit_code, v.message) == (1, 2, True, 88, "{}")
    assert v.finished_at == 1796184601.0


def test_condition_transition_time_moves_only_on_status_change() -> None:
    c = set_condition([], "Admitted", "False", "QuotaExceeded", "m", 1, "t1")
    c = set_condition(c, "Admitted", "False", "QuotaExceeded", "m2", 1, "t2")
    assert c[0].last_transition_time == "t1" and c[0].message == "m2"
    c = set_condition(c, "Admitted", "True", "QuotaReserved", "", 1, "t3")
    assert c[0].last_transition_time == "t3" and len(c) == 1


# --- feedback -------------------------------------------------------------------------------

@pytest.mark.parametrize(("message", "ok"), [
    (summary(1, 5 * GiB), True), ("not json", False), ("", False), ("[1]", False),
])
def test_parse_summary(message: str, ok: bool) -> None:
    r = feedback.parse_summary(message, 0, "p")
    assert (r is not None) is ok
    if r:
        [rank] = r.ranks
        assert (rank.rank, rank.device_total_bytes, rank.pod) == (1, 5 * GiB, "p")


def test_measured_max_and_relative_error() -> None:
    reports = [feedback.parse_summary(summary(i, (4 + i) * GiB), i) for i in range(2)]
    m = feedback.measured([r for rep in reports if rep for r in rep.ranks], 4 * GiB)
    assert m is not None and m.max_peak_bytes == 5 * GiB and m.relative_error == 0.25
    host = feedback.parse_summary(summary(0, GiB, kind="host-rss"), 0)
    assert host is not None
    hm = feedback.measured(host.ranks, 4 * GiB)
    assert hm is not None and hm.relative_error is None and "host RSS" in hm.max_peak


@pytest.mark.parametrize(("batch", "gpus", "planned", "ckpt", "new_batch", "new_acc", "new_ckpt"), [
    (16, 2, None, False, 8, 4, False),     # halve; 8*2*4 = 64
    (19, 2, None, False, 8, 4, False),     # largest divisor of 64/2 below 19//2
    (16, 2, 12, False, 8, 4, False),       # the planner's smaller batch caps it, exact divisor
    (1, 1, None, False, 1, 64, True),      # batch 1: checkpointing
])
def test_next_plan_keeps_the_effective_batch(batch: int, gpus: int, planned: int | None,
                                             ckpt: bool, new_batch: int, new_acc: int,
                                             new_ckpt: bool) -> None:
    old = PLAN.model_copy(update={"batch_per_gpu": batch, "gpus": gpus,
                                  "accumulate": feedback.accumulate_for(64, batch, gpus)})
    p = old.model_copy(update={"batch_per_gpu": planned}) if planned else None
    r = feedback.next_plan(old, p, 64, allow_checkpointing=True)
    assert r.plan is not None
    assert (r.plan.batch_per_gpu, r.plan.accumulate, r.plan.checkpointing) == (
        new_batch, new_acc, new_ckpt)


def test_next_plan_gives_up_at_batch_1_with_checkpointing() -> None:
    old = PLAN.model_copy(update={"batch_per_gpu": 1, "checkpointing": True})
    assert feedback.next_plan(old, None, 64, True).plan is None


def test_margins_round_trip_through_a_configmap() -> None:
    m = {"ns|yolov8n|t4": {"margin": 0.2, "observations": 2, "seen": ["u/0", "u/1"]}}
    assert feedback.decode_margins(feedback.encode_margins(m)) == m
    assert feedback.decode_margins({"margins.json": "garbage"}) == {}
    assert feedback.update_margin(0.0, 10 * GiB, 0) == 0.1
    assert feedback.update_margin(0.0, 10 * GiB, 13 * GiB) == pytest.approx(0.25)  # bounded
    assert feedback.update_margin(0.0, 10 * GiB, 12 * GiB) == pytest.approx(0.25)
    assert feedback.update_margin(0.9, 10 * GiB, 0) == 1.0
