"""Right-sized GPUs on the real sandbox: MIG slices bound by the real kube-scheduler to the
simulated MIG nodes, DRA claims allocated by it against the fleet's ResourceSlices, and the
HAMi / KAI pod specs accepted by the apiserver (server-side dry-run)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from sandboxjobs import apply, get_job, job_yaml, pods_of, running_pods

from yolofit.operator import launch
from yolofit.operator.api import GPUCapacityPolicySpec, YOLOTrainingJobSpec
from yolofit.operator.fleet import node_from_object
from yolofit.operator.policy import effective_classes
from yolofit.operator.sharing import apply as sharing
from yolofit.sandbox.fleet import default_fleet_path, fleet_nodes, load_fleet
from yolofit.sandbox.testing import wait_for

pytestmark = pytest.mark.integration
MiB = 2**20
A100 = "NVIDIA-A100-SXM4-80GB"
MIG_CLASSES = ["a100-80gb-mig-1g.10gb", "h100-80gb-mig-1g.10gb", "h100-80gb-mig-2g.20gb",
               "h100-80gb-mig-3g.40gb"]


def mig_namespace(policy: Callable[..., None], ns: str) -> None:
    policy([{"namespace": ns, "allowedClasses": [*MIG_CLASSES, "t4", "a100-80gb"]}])


def test_single_gpu_job_gets_the_smallest_mig_slice_and_runs_on_a_mig_node(
        operator: Any, kubectl: Any, kube: Any, namespace: str, policy: Any) -> None:
    mig_namespace(policy, namespace)
    plan = apply(kubectl, job_yaml("small", namespace, nodes=1, per_node=1))["spec"]["plan"]
    # The smallest slice of the fleet (9,728 MiB, from the .memory label) holds yolov8n.
    assert (plan["gpuClass"], plan["backend"]) == ("a100-80gb-mig-1g.10gb", "mig")
    assert plan["slice"] == "a100-80gb/1g.10gb" and plan["requestedBytes"] == 9728 * MiB
    [pod] = wait_for(running_pods(kube, namespace, "small", 1), 30, what="the pod running")
    assert pod.spec.node_name == "a100-mig-0"
    limits = pod.spec.containers[0].resources.limits
    assert limits["nvidia.com/mig-1g.10gb"] == "1" and "nvidia.com/gpu" not in limits
    table = kubectl("get", "ytj", "-n", namespace).stdout
    assert "SLICE" in table and "a100-80gb/1g.10gb" in table


def test_two_rank_job_never_gets_a_mig_slice(operator: Any, kubectl: Any, kube: Any,
                                             namespace: str, policy: Any) -> None:
    mig_namespace(policy, namespace)
    plan = apply(kubectl, job_yaml("pair", namespace, nodes=2, per_node=1))["spec"]["plan"]
    assert plan["backend"] == "device-plugin" and plan["gpuClass"] not in MIG_CLASSES
    assert "a 2-rank job cannot run on MIG" in plan["reason"]
    pods = wait_for(running_pods(kube, namespace, "pair", 2), 30, what="2 running pods")
    for pod in pods:
        assert pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"
        assert not pod.spec.node_name.endswith("-mig-0")
    pinned = apply(kubectl, job_yaml("pinned", namespace, nodes=1, per_node=2,
                                     gpuClass="a100-80gb-mig-1g.10gb"), check=False)
    assert pinned.returncode != 0 and "is a MIG slice and this job has 2 ranks" in pinned.stderr


def dra_policy(policy: Callable[..., None], ns: str, product: str) -> None:
    policy([{"namespace": ns, "allowedClasses": ["dra-gpu"]}],
           classes=[{"name": "dra-gpu", "nodeSelector": {"nvidia.com/gpu.product": product},
                     "backend": {"kind": "dra"}}])


def resource(kubectl: Any, *args: str) -> Any:
    return json.loads(kubectl("get", *args, "-o", "json").stdout)


def test_dra_job_gets_a_claim_allocated_to_a_device_with_enough_memory(
        operator: Any, kubectl: Any, kube: Any, namespace: str, policy: Any) -> None:
    dra_policy(policy, namespace, A100)
    plan = apply(kubectl, job_yaml("claim", namespace, nodes=1, per_node=1))["spec"]["plan"]
    assert plan["backend"] == "dra" and plan["slice"].startswith("gpu.nvidia.com >= ")
    [pod] = wait_for(running_pods(kube, namespace, "claim", 1), 60, what="the pod running")
    tmpl = resource(kubectl, "resourceclaimtemplate", "-n", namespace, "claim-gpu-0")
    expr = tmpl["spec"]["spec"]["devices"]["requests"][0]["exactly"]["selectors"][0]["cel"][
        "expression"]
    assert f'quantity("{plan["requestedBytes"] // MiB}Mi")' in expr
    claim_name = pod.status.resource_claim_statuses[0].resource_claim_name
    claim = resource(kubectl, "resourceclaim", "-n", namespace, claim_name)
    [result] = claim["status"]["allocation"]["devices"]["results"]
    slice_ = resource(kubectl, "resourceslice", f"{result['pool']}-gpu.nvidia.com")
    device = next(d for d in slice_["spec"]["devices"] if d["name"] == result["device"])
    memory_mib = int(device["capacity"]["memory"]["value"].removesuffix("Mi"))
    assert memory_mib * MiB >= plan["requestedBytes"]
    assert device["attributes"]["type"]["string"] == "gpu"
    assert pod.spec.node_name == result["pool"]
    assert "nvidia.com/gpu" not in (pod.spec.containers[0].resources.limits or {})


def test_oversized_dra_job_stays_pending_with_the_schedulers_reason(
        operator: Any, kubectl: Any, kube: Any, namespace: str, policy: Any) -> None:
    # Planned on an H200 (141 GB); the H200 pool runs no DRA driver, and no published device
    # has the memory the claim asks for.
    dra_policy(policy, namespace, "NVIDIA-H200")
    plan = apply(kubectl, job_yaml("huge", namespace, model="yolov8x", nodes=1,
                                   per_node=1))["spec"]["plan"]
    assert plan["requestedBytes"] > 81920 * MiB

    def surfaced() -> Any:
        st = get_job(kubectl, namespace, "huge").get("status") or {}
        conds = {c["type"]: c for c in st.get("conditions", [])}
        ready = conds.get("PodsReady") or {}
        return st if ready.get("reason") == "Unschedulable" else None

    st = wait_for(surfaced, 60, what="the scheduler's reason in the job status")
    assert "huge-worker-0 is unschedulable: " in st["message"]
    assert "claim" in st["message"]  # the scheduler's words, e.g. cannot allocate all claims
    [pod] = pods_of(kube, namespace, "huge")
    assert pod.status.phase == "Pending" and not pod.spec.node_name


@pytest.mark.parametrize("kind", ["hami", "kai"])
def test_hami_and_kai_pod_specs_pass_server_side_dry_run(kubectl: Any, namespace: str,
                                                         kind: str) -> None:
    import tempfile
    from pathlib import Path

    from opfixtures import make_profiles  # a profile store of our own: no operator needed

    from yolofit.estimator.profile import ProfileStore
    from yolofit.operator import admission

    with tempfile.TemporaryDirectory() as d:
        make_profiles(Path(d), "yolov8n", fixed_gib=1.0, per_sample_mib=200)
        store = ProfileStore(Path(d), shipped=None)
        nodes = [n for o in fleet_nodes(load_fleet(default_fleet_path()))
                 if (n := node_from_object(o)) is not None]
        p = GPUCapacityPolicySpec.model_validate({"classes": [{
            "name": f"a100-{kind}", "nodeSelector": {"nvidia.com/gpu.product": A100},
            "backend": {"kind": kind, "queue": "team-a"}}]})
        classes = effective_classes(p, nodes)
        spec = YOLOTrainingJobSpec.model_validate({"model": "yolov8n", "data": "/d.yaml",
                                                   "gpus": {"nodes": 1, "perNode": 2}})
        d_ = admission.decide("job", namespace, spec, p, classes, store)
        assert d_.plan is not None, d_.errors
        job = {"metadata": {"name": "job", "namespace": namespace, "uid": "u"}}
        info = classes[f"a100-{kind}"]
        pod = launch.build_pod(job, spec, d_.plan, 0, 0, info.node_selector, info.tolerations)
        pod = sharing.apply_pod(pod, d_.plan, info, 0)
        pod["metadata"].pop("ownerReferences")
    from yolofit.operator import isolation  # the operator creates it before any pod

    kubectl("apply", "-f", "-", input=json.dumps(isolation.service_account(namespace)))
    out = json.loads(kubectl("create", "--dry-run=server", "-o", "json", "-f", "-",
                             input=json.dumps(pod)).stdout)
    mib = str(d_.plan.requested_bytes // MiB)
    if kind == "hami":
        assert out["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpumem"] == mib
    else:
        assert out["metadata"]["annotations"]["gpu-memory"] == mib
        assert out["metadata"]["annotations"]["gpu-fraction-num-devices"] == "2"
        assert out["spec"]["schedulerName"] == "kai-scheduler"
