"""Kueue objects rendered from a GPUCapacityPolicy. Pure functions on plain data.

- `flavors`: one ResourceFlavor per GPU class, whose `nodeLabels` are the class's node
  selector (`nvidia.com/gpu.product: ...`): the pods of a job planned on a class carry the
  same selector, so Kueue can assign no other flavor to them.
- `queues`: one ClusterQueue per namespace rule (a team) and one LocalQueue in it, with
  GPU quota per allowed class: `maxGpusAdmitted` where the rule sets one (Kueue counts
  quota per flavor, so each flavor gets that limit; the policy's limit is namespace-wide),
  else the fleet's GPUs of the class. CPU and memory are covered too (Kueue admits nothing
  that requests an uncovered resource), at the fleet's capacity of the class.
  What the pods of a class request besides `nvidia.com/gpu` is covered as well, so Kueue can
  admit them: a MIG class's slice resource (`nvidia.com/mig-<profile>`, mixed strategy;
  capped like GPUs: a slice is one GPU of the namespace's limit) and a HAMi class's
  `nvidia.com/gpumem` (MiB). Every flavor lists every covered resource (Kueue's rule for a
  resource group), with 0 for what its nodes do not have, so no flavor is assigned a
  resource its nodes lack. DRA claims are counted by Kueue itself through its
  Configuration's `deviceClassMappings` (a logical resource per DeviceClass, which the
  platform adds to the queues); KAI classes are quota'd by KAI's own queues.

`yolofit kueue flavors -f policy.yaml` prints the ResourceFlavors; the sandbox's
`--with-kueue` applies all of it for the demo's policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from yolofit.operator.api import GPUCapacityPolicySpec
from yolofit.operator.sharing.mig import resource as mig_resource

API = "kueue.x-k8s.io/v1beta2"
GPU = "nvidia.com/gpu"
COHORT = "yolofit"
DEFAULT_LOCAL_QUEUE = "gpus"
MANAGED = {"app.kubernetes.io/managed-by": "yolofit"}


@dataclass(frozen=True)
class Capacity:
    """What the fleet has of one class: GPUs, CPU cores and memory bytes in total, and the
    other extended resources its pods request (MIG slices, HAMi gpumem MiB) by name."""

    gpus: int
    cpu: int
    memory_bytes: int
    devices: Mapping[str, int] = field(default_factory=dict)


MIG_PREFIX = mig_resource("")
_NONE = Capacity(0, 0, 0)


class PolicyError(ValueError):
    """The policy cannot be rendered; the message names the field and the fix."""


def flavors(policy: GPUCapacityPolicySpec) -> list[dict[str, Any]]:
    if not policy.classes:
        raise PolicyError("spec.classes is empty: ResourceFlavors need each class's node "
                          "labels; list the classes with their nodeSelector (e.g. "
                          "nvidia.com/gpu.product: NVIDIA-A100-SXM4-80GB)")
    out = []
    for i, c in enumerate(policy.classes):
        if not c.node_selector:
            raise PolicyError(f"spec.classes[{i}] ({c.name}): nodeSelector is empty; a "
                              "ResourceFlavor needs the node labels that select the class "
                              "(e.g. nvidia.com/gpu.product)")
        out.append({"apiVersion": API, "kind": "ResourceFlavor",
                    "metadata": {"name": c.name, "labels": dict(MANAGED)},
                    "spec": {"nodeLabels": dict(c.node_selector)}})
    return out


def local_queue_name(policy: GPUCapacityPolicySpec, namespace: str) -> str:
    for rule in policy.namespaces:
        if rule.namespace == namespace and rule.kueue_queue:
            return rule.kueue_queue
    return DEFAULT_LOCAL_QUEUE


def queues(policy: GPUCapacityPolicySpec,
           capacity: Mapping[str, Capacity]) -> list[dict[str, Any]]:
    """ClusterQueue + LocalQueue per named namespace rule (the `*` rule has no namespace)."""
    names = [c.name for c in policy.classes] or sorted(capacity)
    out: list[dict[str, Any]] = []
    for rule in policy.namespaces:
        if rule.namespace == "*":
            continue
        allowed = [n for n in names if not rule.allowed_classes or n in rule.allowed_classes]
        devices = sorted({d for n in allowed for d in capacity.get(n, _NONE).devices} - {GPU})
        flavor_quotas = []
        for name in allowed:
            cap = capacity.get(name, _NONE)
            quota = {"cpu": cap.cpu, "memory": cap.memory_bytes, GPU: cap.gpus,
                     **{d: cap.devices.get(d, 0) for d in devices}}
            if rule.max_gpus_admitted is not None:  # a slice is a GPU of the limit
                for counted in (GPU, *(d for d in devices if d.startswith(MIG_PREFIX))):
                    quota[counted] = min(quota[counted], rule.max_gpus_admitted)
            flavor_quotas.append({"name": name, "resources": [
                {"name": r, "nominalQuota": str(quota[r])}
                for r in ("cpu", "memory", GPU, *devices)]})
        out.append({
            "apiVersion": API, "kind": "ClusterQueue",
            "metadata": {"name": rule.namespace, "labels": dict(MANAGED)},
            "spec": {
                "namespaceSelector": {"matchLabels": {
                    "kubernetes.io/metadata.name": rule.namespace}},
                "cohortName": COHORT,
                "queueingStrategy": "BestEffortFIFO",
                "preemption": {"withinClusterQueue": "LowerPriority",
                               "reclaimWithinCohort": "Any"},
                "resourceGroups": [{"coveredResources": ["cpu", "memory", GPU, *devices],
                                    "flavors": flavor_quotas}],
            }})
        out.append({"apiVersion": API, "kind": "LocalQueue",
                    "metadata": {"name": local_queue_name(policy, rule.namespace),
                                 "namespace": rule.namespace, "labels": dict(MANAGED)},
                    "spec": {"clusterQueue": rule.namespace}})
    return out
