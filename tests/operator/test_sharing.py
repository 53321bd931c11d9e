"""Table-driven tests of the sharing backends (pure): MIG classes from GFD labels and the
multi-rank rule, DRA claim templates, HAMi and KAI memory arithmetic, pod transforms."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from opfixtures import make_profiles, pol, spec

from yolofit.estimator.gpu import get_gpu_class
from yolofit.estimator.profile import ProfileStore
from yolofit.operator import admission, launch, policy
from yolofit.operator.api import GPUCapacityPolicySpec, YOLOTrainingJobSpec
from yolofit.operator.fleet import FleetNode
from yolofit.operator.sharing import apply as sharing
from yolofit.operator.sharing import dra, hami, kai, mig

MiB, GiB = 2**20, 2**30
A100 = "NVIDIA-A100-SXM4-80GB"
T4 = {"nvidia.com/gpu.product": "Tesla-T4", "nvidia.com/gpu.memory": "15360",
      "nvidia.com/gpu.count": "4"}
WHOLE_A100 = {"nvidia.com/gpu.product": A100, "nvidia.com/gpu.memory": "81920"}
# GFD on an A100-80GB node, device plugin strategy mixed, mig-manager all-balanced-ish.
MIXED = {**WHOLE_A100, "nvidia.com/gpu.count": "8", "nvidia.com/mig.strategy": "mixed",
         "nvidia.com/mig.config": "all-balanced",
         "nvidia.com/mig-1g.10gb.count": "16", "nvidia.com/mig-1g.10gb.memory": "9728",
         "nvidia.com/mig-3g.40gb.count": "8", "nvidia.com/mig-3g.40gb.memory": "40192"}
# strategy single on an A100-40GB: every GPU cut into 7 x 1g.5gb; the label says 4864 MiB.
SINGLE = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb",
          "nvidia.com/gpu.memory": "4864", "nvidia.com/gpu.count": "56",
          "nvidia.com/mig.strategy": "single", "nvidia.com/gpu.family": "ampere"}
NODES = [FleetNode("t4-0", T4, 4), FleetNode("a100-0", WHOLE_A100, 8),
         FleetNode("mixed-0", MIXED, 8), FleetNode("single-0", SINGLE, 56)]


def decide(store: ProfileStore, s: YOLOTrainingJobSpec, p: GPUCapacityPolicySpec | None = None,
           nodes: list[FleetNode] | None = None) -> admission.Decision:
    p = p or pol()
    return admission.decide("job", "team-a", s, p,
                            policy.effective_classes(p, nodes or NODES), store)


# --- MIG ------------------------------------------------------------------------------------

def test_mig_classes_take_memory_from_the_memory_label_not_the_name() -> None:
    classes = policy.effective_classes(pol(), NODES)
    small = classes["a100-40gb-mig-1g.5gb"]
    assert small.gpu.memory_bytes == 4864 * MiB  # "5gb" in the name, 4.75 GiB on the card
    assert (small.sharing.backend, small.sharing.resource) == ("mig", "nvidia.com/gpu")
    assert small.node_selector == {"nvidia.com/gpu.product": SINGLE["nvidia.com/gpu.product"]}
    mixed = classes["a100-80gb-mig-1g.10gb"]
    assert mixed.gpu.memory_bytes == 9728 * MiB and mixed.total_gpus == 16
    assert mixed.sharing.resource == "nvidia.com/mig-1g.10gb"
    assert classes["a100-80gb-mig-3g.40gb"].gpu.memory_bytes == 40192 * MiB
    parent = get_gpu_class("a100-80gb")
    assert mixed.gpu.bf16 and mixed.gpu.cuda_context_bytes == parent.cuda_context_bytes


def test_all_mig_nodes_leave_the_whole_gpu_class() -> None:
    classes = policy.effective_classes(pol(), NODES)
    assert classes["a100-80gb"].nodes == 1  # mixed-0's 8 cards are all slices
    assert not any(n.startswith("nvidia-a100-sxm4-40gb") for n in classes)


@pytest.mark.parametrize(("world", "preference", "expected", "note"), [
    (1, "smallest-first", ["s1", "s3", "t4", "a100"], ""),
    (1, "after-whole-gpus", ["t4", "a100", "s1", "s3"], ""),
    (1, "off", ["t4", "a100"], ""),
    (2, "smallest-first", ["t4", "a100"], "a 2-rank job cannot run on MIG"),
])
def test_mig_order(world: int, preference: str, expected: list[str], note: str) -> None:
    p = pol(classes=[
        {"name": "t4", "nodeSelector": {"nvidia.com/gpu.product": "Tesla-T4"}},
        {"name": "a100", "nodeSelector": {"nvidia.com/gpu.product": A100}},
        {"name": "s3", "nodeSelector": {"nvidia.com/gpu.product": A100}, "migProfile": "3g.40gb"},
        {"name": "s1", "nodeSelector": {"nvidia.com/gpu.product": A100}, "migProfile": "1g.10gb"},
    ], preference=["t4", "a100", "s3", "s1"])
    classes = policy.effective_classes(p, NODES)
    names, why = mig.order(list(classes), classes, world, preference)
    assert names == expected
    assert note in why and ("NCCL" in why) == bool(note)


def test_single_rank_job_gets_the_smallest_slice_that_fits(store: ProfileStore) -> None:
    d = decide(store, spec(gpus={"nodes": 1, "perNode": 1}))
    assert d.plan is not None, d.errors
    # Whatever the smallest fitting slice is, it is the one taken: check against every slice.
    classes = policy.effective_classes(pol(), NODES)
    slices = sorted((c for c in classes.values() if c.sharing.is_mig),
                    key=lambda c: c.gpu.budget_bytes)
    first_fit = next(c.name for c in slices
                     if decide(store, spec(gpus={"nodes": 1, "perNode": 1}, gpuClass=c.name)).plan)
    assert d.plan.gpu_class == first_fit
    assert d.plan.backend == "mig" and d.plan.slice.endswith(classes[first_fit].sharing.profile)
    assert d.plan.requested_bytes == classes[first_fit].gpu.memory_bytes
    assert d.plan.predicted_device_bytes <= classes[first_fit].gpu.budget_bytes


@pytest.mark.parametrize("gpus", [{"nodes": 1, "perNode": 2}, {"nodes": 2, "perNode": 1}])
def test_multi_rank_job_never_gets_a_slice_and_says_why(store: ProfileStore,
                                                        gpus: dict[str, int]) -> None:
    nodes = [*NODES, FleetNode("a100-1", WHOLE_A100, 8), FleetNode("t4-1", T4, 4)]
    d = decide(store, spec(gpus=gpus), nodes=nodes)
    assert d.plan is not None and d.plan.backend == "device-plugin"
    assert "cannot run on MIG" in d.plan.reason and "NCCL" in d.plan.reason
    pinned = decide(store, spec(gpus={"nodes": 1, "perNode": 2}, gpuClass="a100-80gb-mig-3g.40gb"))
    assert pinned.plan is None
    assert "spec.gpuClass: a100-80gb-mig-3g.40gb is a MIG slice and this job has 2 ranks" in (
        pinned.errors[0])


def test_multi_rank_job_with_only_slices_allowed_is_refused_naming_mig(store: ProfileStore
                                                                       ) -> None:
    p = pol(namespaces=[{"namespace": "team-a", "allowedClasses": ["a100-80gb-mig-3g.40gb"]}])
    d = decide(store, spec(gpus={"nodes": 1, "perNode": 2}), p)
    assert d.plan is None and "cannot run on MIG" in d.errors[0]


def test_mig_pod_asks_for_the_slice_resource(store: ProfileStore) -> None:
    p = pol(migPreference="smallest-first")
    classes = policy.effective_classes(p, NODES)
    d = decide(store, spec(gpus={"nodes": 1, "perNode": 1}, gpuClass="a100-80gb-mig-3g.40gb"))
    assert d.plan is not None
    pod = pod_for(d.plan, classes["a100-80gb-mig-3g.40gb"])
    res = pod["spec"]["containers"][0]["resources"]
    assert res["limits"]["nvidia.com/mig-3g.40gb"] == "1" and "nvidia.com/gpu" not in res["limits"]
    assert d.plan.slice == "a100-80gb/3g.40gb"


def pod_for(plan: Any, info: Any, attempt: int = 0) -> dict[str, Any]:
    job = {"metadata": {"name": "job", "namespace": "team-a", "uid": "u"}}
    pod = launch.build_pod(job, spec(), plan, 0, attempt, info.node_selector, info.tolerations)
    return sharing.apply_pod(pod, plan, info, attempt)


# --- HAMi and KAI arithmetic ------------------------------------------------------------------

@pytest.mark.parametrize(("predicted_mib", "headroom", "expected"), [
    (9000, 0.10, 10000),  # 9000 / 0.9
    (9001, 0.10, 10002),  # ceil(10001.1)
    (100, 0.15, 118),  # ceil(117.6)
    (80000, 0.10, 81920),  # capped at the card
])
def test_hami_gpumem_is_prediction_plus_headroom_in_mib(predicted_mib: int, headroom: float,
                                                         expected: int) -> None:
    gpu = get_gpu_class("a100-80gb", headroom)
    assert hami.gpumem_mib(predicted_mib * MiB, gpu) == expected


@pytest.mark.parametrize(("need", "card", "asked", "hundredths"), [
    (8600, 81920, 9012, 11),  # 10.50 % would round down to 10 % = 8192 MiB: ask for 11 %
    (8192, 81920, 8192, 10),  # exactly 10 %: kept whole
    (9011, 81920, 9012, 11),
    (1, 15360, 154, 1),  # KAI's smallest portion is 0.01
    (15360, 15360, 15360, 100),
])
def test_kai_request_survives_the_two_decimal_rounding(need: int, card: int, asked: int,
                                                        hundredths: int) -> None:
    assert kai.request_for(need, card) == (asked, hundredths)
    assert kai.survives(asked, card) >= need


def test_kai_naive_request_can_round_below_the_need() -> None:
    assert kai.survives(8600, 81920) == 8192  # what asking for the need itself would keep


@pytest.mark.parametrize("card", [15360, 40960, 81920, 81559, 143771])
def test_kai_request_is_the_smallest_that_survives(card: int) -> None:
    for need in range(1, card + 1, 997):
        request, _ = kai.request_for(need, card)
        assert kai.survives(request, card) >= need
        # ... and keeps less than one hundredth of the card (plus rounding) above the need.
        assert kai.survives(request, card) - need <= card // 100 + 1


def test_kai_refuses_more_than_a_card() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        kai.request_for(20000, 15360)


def _backend_policy(kind: str, **extra: Any) -> GPUCapacityPolicySpec:
    return pol(classes=[{"name": f"a100-{kind}", "nodeSelector": {
        "nvidia.com/gpu.product": A100}, "backend": {"kind": kind, **extra}}])


@pytest.mark.parametrize(("kind", "headroom"), [("dra", 0.10), ("hami", 0.15), ("kai", 0.20)])
def test_backend_default_headroom(kind: str, headroom: float) -> None:
    classes = policy.effective_classes(_backend_policy(kind), NODES)
    assert classes[f"a100-{kind}"].gpu.headroom == pytest.approx(headroom)
    assert classes[f"a100-{kind}"].nodes == 1  # the all-MIG node is not a whole A100


def test_hami_pod_spec(store: ProfileStore) -> None:
    p = _backend_policy("hami")
    d = decide(store, spec(gpus={"nodes": 1, "perNode": 2}), p)
    assert d.plan is not None
    info = policy.effective_classes(p, NODES)["a100-hami"]
    assert d.plan.requested_bytes == hami.gpumem_mib(d.plan.predicted_device_bytes,
                                                     info.gpu) * MiB
    limits = pod_for(d.plan, info)["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "2"
    assert limits["nvidia.com/gpumem"] == str(d.plan.requested_bytes // MiB)
    assert d.plan.slice == f"a100-hami/hami {d.plan.requested_bytes // MiB}Mi"


def test_kai_pod_spec(store: ProfileStore) -> None:
    p = _backend_policy("kai", queue="team-a", schedulerName="kai-scheduler")
    d = decide(store, spec(gpus={"nodes": 1, "perNode": 1}), p)
    assert d.plan is not None
    info = policy.effective_classes(p, NODES)["a100-kai"]
    pod = pod_for(d.plan, info)
    assert pod["spec"]["schedulerName"] == "kai-scheduler"
    assert pod["metadata"]["labels"]["kai.scheduler/queue"] == "team-a"
    mib = int(pod["metadata"]["annotations"]["gpu-memory"])
    assert kai.survives(mib, 81920) * MiB >= d.plan.predicted_device_bytes / (1 - 0.20)
    assert "nvidia.com/gpu" not in pod["spec"]["containers"][0]["resources"]["limits"]
    assert d.plan.batch_per_gpu >= 1  # pinned in YOLOFIT_TRAIN_CONFIG like every plan


# --- DRA ------------------------------------------------------------------------------------

def test_dra_min_capacity_keeps_headroom_of_the_usable_memory() -> None:
    gpu = get_gpu_class("a100-80gb", 0.10)
    need = dra.min_capacity_bytes(9 * GiB, gpu)
    usable = gpu.usable_bytes / gpu.memory_bytes
    assert need % MiB == 0
    assert need * usable * 0.9 >= 9 * GiB > (need - MiB) * usable * 0.9


def test_dra_claim_template_and_pod(store: ProfileStore) -> None:
    p = _backend_policy("dra")
    d = decide(store, spec(gpus={"nodes": 1, "perNode": 2}), p)
    assert d.plan is not None and d.plan.backend == "dra"
    info = policy.effective_classes(p, NODES)["a100-dra"]
    job = {"metadata": {"name": "job", "namespace": "team-a", "uid": "u"}}
    [(path, tmpl)] = sharing.children(job, d.plan, info, 3)
    assert path == "/apis/resource.k8s.io/v1/namespaces/team-a/resourceclaimtemplates"
    assert tmpl["metadata"]["name"] == "job-gpu-3"
    req = tmpl["spec"]["spec"]["devices"]["requests"][0]["exactly"]
    assert (req["deviceClassName"], req["allocationMode"], req["count"]) == (
        "gpu.nvidia.com", "ExactCount", 2)
    expr = req["selectors"][0]["cel"]["expression"]
    assert f'quantity("{d.plan.requested_bytes // MiB}Mi")' in expr
    assert 'device.capacity["gpu.nvidia.com"].memory' in expr
    assert ("cudaComputeCapability" in expr) == (d.plan.amp == "bf16")
    pod = pod_for(d.plan, info, 3)
    assert pod["spec"]["resourceClaims"] == [{"name": "gpu",
                                              "resourceClaimTemplateName": "job-gpu-3"}]
    c = pod["spec"]["containers"][0]["resources"]
    assert c["claims"] == [{"name": "gpu"}] and "nvidia.com/gpu" not in c["limits"]
    assert "nodeSelector" not in pod["spec"]
    assert d.plan.slice == f"gpu.nvidia.com >= {d.plan.requested_bytes // MiB}Mi"


def test_device_plugin_plan_is_untouched(store: ProfileStore) -> None:
    d = decide(store, spec(gpus={"nodes": 1, "perNode": 4}))
    assert d.plan is not None and d.plan.backend == "device-plugin"
    assert d.plan.slice == d.plan.gpu_class
    assert d.plan.requested_bytes == policy.effective_classes(pol(), NODES)[
        d.plan.gpu_class].gpu.memory_bytes


# --- hooks: reconcile creates the claim template first; status surfaces the scheduler ----------

def test_reconcile_creates_the_claim_template_before_the_pods(tmp_path: Path) -> None:
    import asyncio

    from test_op_reconcile import FakeKube

    from yolofit.operator.reconcile import Reconciler
    from yolofit.operator.state import World

    world = World(store=make_profiles(tmp_path))
    world.set_nodes(NODES)
    world.set_policy(_backend_policy("dra"))
    job = {"apiVersion": "yolofit.io/v1alpha1", "kind": "YOLOTrainingJob",
           "metadata": {"name": "j", "namespace": "ns", "uid": "u", "generation": 1},
           "spec": {"model": "yolov8n", "data": "/d.yaml", "gpus": {"nodes": 1, "perNode": 1}}}
    world.jobs[("ns", "j")] = job
    api = FakeKube()
    r = Reconciler(world, api, lambda *a: None, lambda key, ns: asyncio.sleep(0, None))  # type: ignore[arg-type]
    asyncio.run(r.reconcile(("ns", "j")))
    created = [c[1] for c in api.calls if c[0] == "create"]
    template = f"{dra.templates_path('ns')}/j-gpu-0"
    pod = "/api/v1/namespaces/ns/pods/j-worker-0"
    assert template in created and pod in created
    assert created.index(template) < created.index(pod)
    pod = api.objects["/api/v1/namespaces/ns/pods/j-worker-0"]
    assert pod["spec"]["resourceClaims"][0]["resourceClaimTemplateName"] == "j-gpu-0"
    assert job["status"]["plan"]["backend"] == "dra"


def test_the_schedulers_reason_reaches_the_job_status() -> None:
    from yolofit.operator.api import Plan
    from yolofit.operator.status import pod_view, summarize

    plan = Plan(gpu_class="c", nodes=1, gpus_per_node=1, gpus=1, batch_per_gpu=1, accumulate=1,
                amp="fp16", imgsz=640)
    message = "0/11 nodes are available: 11 cannot allocate all claims."
    pod = {"metadata": {"name": "j-worker-0", "labels": {"yolofit.io/rank": "0"}},
           "spec": {}, "status": {"phase": "Pending", "conditions": [
               {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": message}]}}
    out = summarize([pod_view(pod)], plan)
    assert (out.phase, out.reason) == ("Admitted", "Unschedulable")
    assert out.message == f"j-worker-0 is unschedulable: {message}"
    pod["spec"]["nodeName"] = "n"  # bound since: no longer the scheduler's problem
    assert summarize([pod_view(pod)], plan).reason == "WaitingForPods"
