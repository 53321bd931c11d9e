"""HAMi vGPU: `nvidia.com/gpu` plus `nvidia.com/gpumem` (MiB per GPU). Pure.

HAMi's in-container library (HAMi-core) clamps what CUDA reports: cudaMemGetInfo shows
`gpumem` as the card's total and allocations past it fail. So the request is the plan's
prediction with the class's headroom kept free, and the batch stays pinned by the plan:
Ultralytics sees the slice as the whole card, and anything that re-fits the batch to "free
memory" inside the pod would fill the slice to its edge.
"""

from __future__ import annotations

from typing import Any

from yolofit.estimator.gpu import GpuClass
from yolofit.operator.fleet import ClassInfo
from yolofit.operator.sharing.base import GPU_RESOURCE, MiB, ceil_mib, need_bytes

GPUMEM = "nvidia.com/gpumem"


def gpumem_mib(predicted_device_bytes: int, gpu: GpuClass) -> int:
    """MiB per GPU: ceil(predicted / (1 - headroom)), never more than the card."""
    return min(ceil_mib(need_bytes(predicted_device_bytes, gpu)), gpu.memory_bytes // MiB)


def apply_pod(pod: dict[str, Any], requested_bytes: int) -> dict[str, Any]:
    mib = str(requested_bytes // MiB)
    for c in pod["spec"]["containers"]:
        for kind in ("requests", "limits"):
            values = c.get("resources", {}).get(kind)
            if values is not None and GPU_RESOURCE in values:
                values[GPUMEM] = mib
    return pod


def slice_label(requested_bytes: int, info: ClassInfo) -> str:
    return f"{info.name}/hami {requested_bytes // MiB}Mi"
