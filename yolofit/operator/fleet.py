"""The GPU fleet as GPU Feature Discovery labels describe it. Pure: nodes in, classes out.

A class is a group of nodes with the same `nvidia.com/gpu.product`; its constants come from
the estimator's gpu_classes.json via `from_gfd_labels` (unknown products get their
family's defaults). The operator lists nodes periodically and calls `discover()`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from yolofit.estimator.gpu import GpuClass, from_gfd_labels
from yolofit.operator.sharing.base import Sharing

log = logging.getLogger("yolofit.operator")
PRODUCT = "nvidia.com/gpu.product"
MEMORY = "nvidia.com/gpu.memory"
COUNT = "nvidia.com/gpu.count"
GPU_RESOURCE = "nvidia.com/gpu"
# GPU node pools are usually tainted so that only GPU pods land there.
GPU_TOLERATION: dict[str, Any] = {"key": GPU_RESOURCE, "operator": "Exists",
                                  "effect": "NoSchedule"}


@dataclass(frozen=True)
class FleetNode:
    name: str
    labels: Mapping[str, str]
    gpus: int  # allocatable nvidia.com/gpu


@dataclass(frozen=True)
class ClassInfo:
    """A GPU class the operator can place pods on."""

    gpu: GpuClass
    node_selector: dict[str, str]
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    nodes: int = 0
    gpus_per_node: int = 0  # the most GPUs one node of the class has
    total_gpus: int = 0
    product: str = ""
    sharing: Sharing = field(default_factory=Sharing)  # backend, MIG profile (sharing/)

    @property
    def name(self) -> str:
        return self.gpu.name

    def nodes_with(self, per_node: int, fleet: Iterable[FleetNode]) -> int:
        return sum(1 for n in fleet if n.gpus >= per_node and self.matches(n))

    def matches(self, node: FleetNode) -> bool:
        return all(node.labels.get(k) == v for k, v in self.node_selector.items())


def node_from_object(obj: Mapping[str, Any]) -> FleetNode | None:
    """A FleetNode from a core/v1 Node (dict) or its metadata only (then the GPU count comes
    from GFD's nvidia.com/gpu.count label), or None when it has no GPU labels."""
    meta = obj.get("metadata", {})
    labels = dict(meta.get("labels") or {})
    if PRODUCT not in labels:
        return None
    alloc = (obj.get("status") or {}).get("allocatable") or {}
    raw = alloc.get(GPU_RESOURCE, labels.get(COUNT, 0)) or 0
    try:
        gpus = int(raw)
    except (TypeError, ValueError):
        # A mislabelled node is skipped (and logged), never allowed to stop discovery.
        log.warning("node %s skipped: GPU count %r is not a number", meta.get("name"), raw)
        return None
    if gpus < 0:
        return None
    return FleetNode(name=meta.get("name", ""), labels=labels, gpus=gpus)


def discover(nodes: Iterable[FleetNode], headroom: float | None = None) -> dict[str, ClassInfo]:
    """Classes by name, smallest budget first."""
    groups: dict[str, list[FleetNode]] = {}
    for node in nodes:
        groups.setdefault(node.labels[PRODUCT], []).append(node)
    classes: dict[str, ClassInfo] = {}
    for product, members in groups.items():
        try:
            gpu = from_gfd_labels(members[0].labels, headroom)
        except ValueError:
            continue  # no memory label and an unknown product: cannot plan for it
        classes[gpu.name] = ClassInfo(
            gpu=gpu, node_selector={PRODUCT: product}, tolerations=[dict(GPU_TOLERATION)],
            nodes=len(members), gpus_per_node=max(n.gpus for n in members),
            total_gpus=sum(n.gpus for n in members), product=product)
    return dict(sorted(classes.items(), key=lambda kv: (kv[1].gpu.budget_bytes, kv[0])))
