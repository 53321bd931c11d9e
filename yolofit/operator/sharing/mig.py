"""MIG slices as GPU classes, from GPU Feature Discovery labels. Pure.

With the device plugin's `mixed` strategy a slice is the extended resource
`nvidia.com/mig-<profile>` and GFD labels the node `nvidia.com/mig-<profile>.count` and
`.memory` (MiB); with `single` every GPU of the node is cut the same way, slices are plain
`nvidia.com/gpu` and the product label carries a `-MIG-<profile>` suffix (its `.memory`
label is then the slice's). A class's memory is always the `.memory` label, never the
profile name: names round up (an A100-40GB `1g.5gb` has 4,864 MiB).

A multi-rank job never lands on a slice: a process sees exactly one MIG device, and NCCL has
no peer-to-peer path between slices, so DDP across slices is not a thing. `order()` says so in
words when it drops the slices from a job's candidates.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from yolofit.estimator.gpu import GpuClass, from_gfd_labels
from yolofit.operator.fleet import GPU_TOLERATION, PRODUCT, ClassInfo, FleetNode
from yolofit.operator.sharing.base import GPU_RESOURCE, MiB, Sharing

STRATEGY = "nvidia.com/mig.strategy"
CONFIG = "nvidia.com/mig.config"  # set by NVIDIA's mig-manager, e.g. all-1g.10gb
_MIXED = re.compile(r"^nvidia\.com/mig-(?P<profile>[^/]+)\.count$")
_SINGLE = re.compile(r"^(?P<parent>.+)-MIG-(?P<profile>[0-9]+[cg][.0-9a-z+]*)$")
PREFERENCES = ("smallest-first", "after-whole-gpus", "off")
WHY_NOT_MULTI_RANK = ("one process sees one MIG device and NCCL has no peer-to-peer path "
                      "between slices")


def resource(profile: str) -> str:
    return f"nvidia.com/mig-{profile}"


def single_profile(labels: Mapping[str, str]) -> tuple[str, str] | None:
    """(parent product, profile) of a `single`-strategy node, else None."""
    m = _SINGLE.match(labels.get(PRODUCT, ""))
    return (m["parent"], m["profile"]) if m else None


def mixed_slices(labels: Mapping[str, str]) -> dict[str, tuple[int, int]]:
    """profile -> (slices on the node, MiB per slice) of a `mixed`-strategy node."""
    out = {}
    for key, value in labels.items():
        m = _MIXED.match(key)
        if not m:
            continue
        memory = labels.get(f"nvidia.com/mig-{m['profile']}.memory")
        count = int(value or 0)
        if memory and count > 0:
            out[m["profile"]] = (count, int(memory))
    return out


def all_mig(labels: Mapping[str, str]) -> bool:
    """Every GPU of the node is partitioned: GFD's gpu.count then counts physical cards that
    no `nvidia.com/gpu` request can get."""
    if single_profile(labels) is not None:
        return True
    config = labels.get(CONFIG, "")
    return (labels.get(STRATEGY) == "mixed" and config.startswith("all-")
            and config != "all-disabled")


def whole_gpu_nodes(nodes: Iterable[FleetNode]) -> list[FleetNode]:
    return [n for n in nodes if not all_mig(n.labels)]


def class_name(parent: str, profile: str) -> str:
    return f"{parent}-mig-{profile.replace('+', '-')}"


def slice_gpu(parent: GpuClass, profile: str, memory_mib: int, name: str = "") -> GpuClass:
    """The slice: the parent's constants (arch, context, bf16), the slice's memory, and the
    parent's usable fraction of it (what cudaMemGetInfo leaves a process)."""
    memory = memory_mib * MiB
    fraction = parent.usable_bytes / parent.memory_bytes if parent.memory_bytes else 1.0
    return replace(parent, name=name or class_name(parent.name, profile), memory_bytes=memory,
                   usable_bytes=int(memory * min(fraction, 1.0)),
                   product=f"{parent.product}-MIG-{profile}" if parent.product else "")


def _parent(labels: Mapping[str, str], product: str, headroom: float | None) -> GpuClass | None:
    try:
        return from_gfd_labels({**labels, PRODUCT: product}, headroom)
    except ValueError:
        return None


def _members(nodes: Iterable[FleetNode]) -> dict[tuple[str, str], list[tuple[FleetNode, int,
                                                                              int]]]:
    """(parent product, profile) -> [(node, slices, MiB)] over mixed and single nodes."""
    groups: dict[tuple[str, str], list[tuple[FleetNode, int, int]]] = {}
    for node in nodes:
        single = single_profile(node.labels)
        if single is not None:
            memory = int(node.labels.get("nvidia.com/gpu.memory", 0) or 0)
            if memory and node.gpus:
                groups.setdefault(single, []).append((node, node.gpus, memory))
            continue
        for profile, (count, memory) in mixed_slices(node.labels).items():
            groups.setdefault((node.labels.get(PRODUCT, ""), profile), []).append(
                (node, count, memory))
    return groups


def discover(nodes: Iterable[FleetNode], headroom: float | None = None) -> dict[str, ClassInfo]:
    """One class per (parent product, profile) in the fleet."""
    classes: dict[str, ClassInfo] = {}
    for (product, profile), members in _members(nodes).items():
        info = _info(product, profile, members, headroom)
        if info is not None:
            classes[info.name] = info
    return classes


def _info(product: str, profile: str, members: list[tuple[FleetNode, int, int]],
          headroom: float | None, name: str = "",
          selector: Mapping[str, str] | None = None,
          tolerations: list[dict[str, Any]] | None = None) -> ClassInfo | None:
    node, _, memory = members[0]
    parent = _parent(node.labels, product, headroom)
    if parent is None:
        return None
    single = single_profile(node.labels) is not None
    gpu = slice_gpu(parent, profile, min(m for _, _, m in members), name)
    return ClassInfo(
        gpu=gpu, node_selector=dict(selector) if selector is not None else {
            PRODUCT: node.labels[PRODUCT]},
        tolerations=tolerations if tolerations is not None else [dict(GPU_TOLERATION)],
        nodes=len(members), gpus_per_node=max(c for _, c, _ in members),
        total_gpus=sum(c for _, c, _ in members), product=node.labels[PRODUCT],
        sharing=Sharing(backend="mig", resource=GPU_RESOURCE if single else resource(profile),
                        profile=profile, parent=parent.name))


def policy_class(name: str, profile: str, members: list[FleetNode], headroom: float,
                 selector: Mapping[str, str],
                 tolerations: list[dict[str, Any]]) -> ClassInfo | None:
    """A policy's class with `migProfile`: that slice on the nodes its selector picks."""
    groups = [(key, m) for key, m in _members(members).items() if key[1] == profile]
    if not groups:
        return None
    product = groups[0][0][0]
    return _info(product, profile, [m for _, g in groups for m in g], headroom, name, selector,
                 tolerations)


def order(names: list[str], classes: Mapping[str, ClassInfo], world_size: int,
          preference: str) -> tuple[list[str], str]:
    """The job's candidate classes with the MIG rule applied, and a note when slices were
    dropped because the job has more than one rank."""
    slices = [n for n in names if classes[n].sharing.is_mig]
    if not slices:
        return names, ""
    whole = [n for n in names if not classes[n].sharing.is_mig]
    if world_size > 1:
        return whole, (f"MIG slices skipped ({', '.join(slices)}): a {world_size}-rank job "
                       f"cannot run on MIG ({WHY_NOT_MULTI_RANK})")
    if preference == "off":
        return whole, ""
    slices.sort(key=lambda n: (classes[n].gpu.budget_bytes, n))
    return (slices + whole if preference == "smallest-first" else whole + slices), ""


def multi_rank_error(name: str, world_size: int) -> str:
    return (f"spec.gpuClass: {name} is a MIG slice and this job has {world_size} ranks; "
            f"{WHY_NOT_MULTI_RANK}; pin a whole-GPU class or run one rank")


def slice_label(info: ClassInfo) -> str:
    return f"{info.sharing.parent}/{info.sharing.profile}"


def apply_pod(pod: dict[str, Any], info: ClassInfo) -> dict[str, Any]:
    """The slice's resource in place of `nvidia.com/gpu` (mixed strategy; single keeps it)."""
    res = info.sharing.resource
    if res == GPU_RESOURCE:
        return pod
    for c in pod["spec"]["containers"]:
        for kind in ("requests", "limits"):
            values = c.get("resources", {}).get(kind)
            if values and GPU_RESOURCE in values:
                values[res] = values.pop(GPU_RESOURCE)
    return pod
