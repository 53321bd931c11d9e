"""GPU classes: how much memory a process gets on a card, and what CUDA takes off the top.

A CPU trace cannot see the CUDA context, the cuBLAS/cuDNN workspaces or fragmentation
beyond the allocator model; those are named constants per class, kept as data with their
source in ``data/gpu_classes.json`` (all uncalibrated until a GPU run fits them).
Pure: no torch import.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

MiB = 2**20
_LARGE_BLOCK = 2 * MiB  # the caching allocator rounds large blocks to 2 MiB
DATA = Path(__file__).with_name("data") / "gpu_classes.json"


@dataclass(frozen=True)
class GpuClass:
    """One kind of card. `usable_bytes` is what cudaMemGetInfo reports as total to a process;
    `headroom` is the policy's fraction of it kept free. The planner fills `budget_bytes`."""

    name: str
    memory_bytes: int
    usable_bytes: int
    bf16: bool
    headroom: float = 0.10
    cuda_context_bytes: int = 480 * MiB
    cublas_workspace_bytes: int = 64 * MiB
    cudnn_workspace_bytes: int = 256 * MiB
    fragmentation: float = 0.03
    nccl_bytes: int = 512 * MiB
    # Default allocator (stock Ultralytics): reserved over the traced *allocated* peak, fitted
    # on field runs; Ultralytics empties the cache every epoch (less accumulates) up to 8.3.86,
    # later above a share of the card (field.empty_threshold).
    fragmentation_default: float = 0.20
    fragmentation_default_epoch_emptied: float = 0.09
    arch: str = ""
    product: str = ""
    calibrated: bool = False

    @property
    def budget_bytes(self) -> int:
        """What a plan may fill: usable memory less the policy headroom."""
        return int(self.usable_bytes * (1.0 - self.headroom))

    @property
    def workspace_bytes(self) -> int:
        """cuBLAS + cuDNN workspaces; served by the caching allocator (count in reserved)."""
        return self.cublas_workspace_bytes + self.cudnn_workspace_bytes

    def fragmentation_bytes(self, reserved: int) -> int:
        """Margin for fragmentation the allocator model cannot see, in whole 2 MiB blocks."""
        return self._blocks(int(reserved * self.fragmentation))

    def default_allocator_overhead(self, allocated: int, epoch_emptied: bool = False) -> int:
        """What the default caching allocator reserves beyond the peak allocated bytes
        (rounding, splitting, pools kept across training and validation), in 2 MiB blocks:
        the field-fitted fraction of `allocated` (see gpu_classes.json, field_fit)."""
        rate = (self.fragmentation_default_epoch_emptied if epoch_emptied
                else self.fragmentation_default)
        return self._blocks(int(allocated * rate))

    @staticmethod
    def _blocks(margin: int) -> int:
        return -(-margin // _LARGE_BLOCK) * _LARGE_BLOCK

    def with_headroom(self, headroom: float) -> GpuClass:
        if not 0.0 <= headroom < 1.0:
            raise ValueError(f"headroom must be in [0, 1), got {headroom}")
        return replace(self, headroom=headroom)


@lru_cache(maxsize=1)
def _data() -> dict[str, Any]:
    return dict(json.loads(DATA.read_text()))


def _mib(value: Any) -> int:
    return int(float(value) * MiB)


def _build(name: str, spec: Mapping[str, Any], headroom: float | None = None) -> GpuClass:
    data = _data()
    defaults = data["defaults"]
    arch = str(spec.get("arch", ""))
    arch_spec = data["architectures"].get(arch, {})
    context = spec.get("cuda_context_mib", arch_spec.get("cuda_context_mib",
                       max(v["cuda_context_mib"] for k, v in data["architectures"].items()
                           if not k.startswith("_"))))
    memory = _mib(spec["memory_mib"])
    usable = _mib(spec["usable_mib"]) if "usable_mib" in spec else int(
        memory * float(defaults["usable_fraction"]))
    return GpuClass(
        name=name,
        memory_bytes=memory,
        usable_bytes=usable,
        bf16=bool(spec.get("bf16", arch_spec.get("bf16", False))),
        headroom=float(defaults["headroom"] if headroom is None else headroom),
        cuda_context_bytes=_mib(context),
        cublas_workspace_bytes=_mib(defaults["cublas_workspace_mib"]) * int(
            defaults["cublas_workspaces"]),
        cudnn_workspace_bytes=_mib(spec.get("cudnn_workspace_mib",
                                            defaults["cudnn_workspace_mib"])),
        fragmentation=float(spec.get("fragmentation", defaults["fragmentation"])),
        nccl_bytes=_mib(spec.get("nccl_mib", defaults["nccl_mib"])),
        fragmentation_default=float(spec.get(
            "fragmentation_default_allocator", defaults["fragmentation_default_allocator"])),
        fragmentation_default_epoch_emptied=float(spec.get(
            "fragmentation_default_allocator_epoch_emptied",
            defaults["fragmentation_default_allocator_epoch_emptied"])),
        arch=arch,
        product=str(spec.get("product", "")),
        calibrated=bool(spec.get("calibrated", False)),
    )


@lru_cache(maxsize=1)
def known_classes() -> dict[str, GpuClass]:
    """The classes in gpu_classes.json, by name, smallest usable memory first."""
    specs = {k: v for k, v in _data()["classes"].items() if not k.startswith("_")}
    built = [_build(name, spec) for name, spec in specs.items()]
    return {g.name: g for g in sorted(built, key=lambda g: (g.usable_bytes, g.name))}


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def get_gpu_class(name: str, headroom: float | None = None) -> GpuClass:
    """A known class by name ('t4', 'h200') or GFD product ('Tesla-T4'); KeyError if unknown."""
    wanted = _norm(name)
    for gpu in known_classes().values():
        if wanted in (gpu.name, _norm(gpu.product)):
            return gpu if headroom is None else gpu.with_headroom(headroom)
    raise KeyError(name)


def from_gfd_labels(labels: Mapping[str, str], headroom: float | None = None) -> GpuClass:
    """A class from GPU Feature Discovery node labels: nvidia.com/gpu.product, .memory (MiB),
    .family. A known product gets its data; another gets the defaults for its family."""
    product = labels.get("nvidia.com/gpu.product", "")
    if product:
        try:
            return get_gpu_class(product, headroom)
        except KeyError:
            pass
    if "nvidia.com/gpu.memory" not in labels:
        raise ValueError(f"GPU {product or '(no product label)'} has no "
                         "nvidia.com/gpu.memory label")
    family = labels.get("nvidia.com/gpu.family", "").lower()
    arch = _data()["families"].get(family, "")
    spec = {"product": product, "arch": arch, "memory_mib": int(labels["nvidia.com/gpu.memory"])}
    return _build(_norm(product) or f"gpu-{spec['memory_mib']}mib", spec, headroom)


def from_memory(usable_bytes: int, name: str = "custom", bf16: bool = False,
                arch: str = "", headroom: float | None = None) -> GpuClass:
    """A class from a bare memory size (CLI --gpu-memory): taken as what a process can use.
    Without an arch, the largest context of any arch is assumed (conservative)."""
    spec = {"arch": arch, "memory_mib": usable_bytes / MiB, "usable_mib": usable_bytes / MiB,
            "bf16": bf16}
    return _build(name, spec, headroom)
