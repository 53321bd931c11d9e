"""DRA memory claims (Kubernetes resource.k8s.io/v1, GA since 1.34). Pure builders.

Each attempt of a job gets one ResourceClaimTemplate, `<job>-gpu-<attempt>`; every pod of
the attempt references it, so the resource-claim controller makes one ResourceClaim per pod
and the kube-scheduler allocates it: `gpusPerNode` devices of the class's DeviceClass
(the NVIDIA DRA driver publishes `gpu.nvidia.com` for whole GPUs, `mig.nvidia.com` for MIG
partitions) whose `device.capacity["gpu.nvidia.com"].memory` is at least what the plan needs
with the class's headroom kept free. A bf16 plan also asks for compute capability >= 8.0.
The pod drops the class's node selector and the `nvidia.com/gpu` limit: the claim picks the
device, and through it the node. A new attempt (OOM re-plan) gets a new template, since a
claim's request is immutable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from yolofit.estimator.gpu import GpuClass
from yolofit.operator.api import Plan
from yolofit.operator.fleet import ClassInfo
from yolofit.operator.launch import owner_reference, selector_labels
from yolofit.operator.sharing.base import GPU_RESOURCE, MiB

API = "resource.k8s.io/v1"
DRIVER = "gpu.nvidia.com"  # the NVIDIA DRA driver's name and attribute/capacity domain
CLAIM_NAME = "gpu"


def min_capacity_bytes(predicted_device_bytes: int, gpu: GpuClass) -> int:
    """Smallest device memory capacity (whole MiB) that leaves the class's headroom free of
    the plan's prediction: capacity x usable fraction x (1 - headroom) >= predicted."""
    fraction = gpu.usable_bytes / gpu.memory_bytes if gpu.memory_bytes else 1.0
    need = predicted_device_bytes / (1.0 - gpu.headroom) / min(fraction, 1.0)
    return math.ceil(need / MiB) * MiB


def selector(min_bytes: int, bf16: bool = False) -> str:
    """The CEL expression of the claim's device selector."""
    memory = (f'device.capacity["{DRIVER}"].memory.compareTo(quantity("{min_bytes // MiB}Mi"))'
              " >= 0")
    if not bf16:
        return memory
    attrs = f'device.attributes["{DRIVER}"]'
    return (f'{memory} && "cudaComputeCapability" in {attrs} && '
            f'{attrs}.cudaComputeCapability.compareTo(semver("8.0.0")) >= 0')


def template_name(job: str, attempt: int) -> str:
    return f"{job}-gpu-{attempt}"


def templates_path(namespace: str) -> str:
    return f"/apis/resource.k8s.io/v1/namespaces/{namespace}/resourceclaimtemplates"


def claim_template(job: Mapping[str, Any], plan: Plan, info: ClassInfo,
                   attempt: int) -> dict[str, Any]:
    meta = job["metadata"]
    return {
        "apiVersion": API, "kind": "ResourceClaimTemplate",
        "metadata": {"name": template_name(meta["name"], attempt),
                     "namespace": meta["namespace"],
                     "labels": {**selector_labels(meta["name"]),
                                "app.kubernetes.io/managed-by": "yolofit"},
                     "ownerReferences": [owner_reference(job)]},
        "spec": {"spec": {"devices": {"requests": [{
            "name": CLAIM_NAME,
            "exactly": {
                "deviceClassName": info.sharing.device_class,
                "allocationMode": "ExactCount", "count": plan.gpus_per_node,
                "selectors": [{"cel": {"expression": selector(
                    plan.requested_bytes, plan.amp == "bf16")}}],
            },
        }]}}},
    }


def apply_pod(pod: dict[str, Any], plan: Plan, attempt: int) -> dict[str, Any]:
    name = pod["metadata"]["labels"]["yolofit.io/job"]
    spec = pod["spec"]
    spec["resourceClaims"] = [{"name": CLAIM_NAME,
                               "resourceClaimTemplateName": template_name(name, attempt)}]
    spec.pop("nodeSelector", None)
    for c in spec["containers"]:
        resources = c.setdefault("resources", {})
        for kind in ("requests", "limits"):
            (resources.get(kind) or {}).pop(GPU_RESOURCE, None)
        resources["claims"] = [{"name": CLAIM_NAME}]
    return pod


def slice_label(plan: Plan, info: ClassInfo) -> str:
    return f"{info.sharing.device_class} >= {plan.requested_bytes // MiB}Mi"
