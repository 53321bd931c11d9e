"""What a GPU class is, as far as sharing goes, and the memory each backend is asked for.

`Sharing` rides on a fleet `ClassInfo`: which backend serves the class, the extended resource
a pod asks for per GPU, the MIG profile, the DRA DeviceClass, KAI's scheduler and queue.
`requested_bytes` is the per-GPU memory a pod of a plan asks its backend for: the card or the
slice for the device plugin and MIG, the plan's need plus headroom for DRA, HAMi and KAI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from yolofit.estimator.gpu import GpuClass

MiB = 2**20
GPU_RESOURCE = "nvidia.com/gpu"
Backend = Literal["device-plugin", "mig", "dra", "hami", "kai"]
BACKENDS: tuple[str, ...] = ("device-plugin", "mig", "dra", "hami", "kai")
# The DeviceClasses the NVIDIA DRA driver (k8s-dra-driver-gpu) publishes.
GPU_DEVICE_CLASS = "gpu.nvidia.com"
MIG_DEVICE_CLASS = "mig.nvidia.com"

# Extra headroom (fraction of the card) a backend's classes get on top of the policy default
# when the class sets none: HAMi clamps what CUDA reports but its accounting of the context
# lags real use; KAI enforces nothing, so a neighbour's overrun lands on this job.
BACKEND_EXTRA_HEADROOM: dict[str, float] = {"device-plugin": 0.0, "mig": 0.0, "dra": 0.0,
                                            "hami": 0.05, "kai": 0.10}


@dataclass(frozen=True)
class Sharing:
    backend: str = "device-plugin"
    resource: str = GPU_RESOURCE  # extended resource per GPU (device plugin, MIG, HAMi)
    profile: str = ""  # MIG profile, e.g. 1g.10gb
    parent: str = ""  # the whole-GPU class a MIG slice is cut from, e.g. a100-80gb
    device_class: str = ""  # DRA DeviceClass
    scheduler_name: str = ""  # KAI
    queue: str = ""  # KAI

    @property
    def is_mig(self) -> bool:
        """One process sees one MIG device: true for MIG classes and DRA MIG claims."""
        return self.backend == "mig" or (self.backend == "dra"
                                         and self.device_class == MIG_DEVICE_CLASS)


def default_headroom(backend: str, policy_default: float) -> float:
    return min(policy_default + BACKEND_EXTRA_HEADROOM.get(backend, 0.0), 0.9)


def ceil_mib(n: float) -> int:
    return max(math.ceil(n / MiB), 1)


def need_bytes(predicted_device_bytes: int, gpu: GpuClass) -> int:
    """The plan's need with the class's headroom kept free: predicted / (1 - headroom)."""
    return math.ceil(predicted_device_bytes / (1.0 - gpu.headroom))


def requested_bytes(sharing: Sharing, gpu: GpuClass, predicted_device_bytes: int) -> int:
    """Per-GPU memory a pod asks its backend for (see the module docstring)."""
    if sharing.backend in ("device-plugin", "mig"):
        return gpu.memory_bytes
    if sharing.backend == "dra":
        from yolofit.operator.sharing.dra import min_capacity_bytes
        return min_capacity_bytes(predicted_device_bytes, gpu)
    if sharing.backend == "hami":
        from yolofit.operator.sharing.hami import gpumem_mib
        return gpumem_mib(predicted_device_bytes, gpu) * MiB
    if sharing.backend == "kai":
        from yolofit.operator.sharing.kai import gpu_memory_mib
        return gpu_memory_mib(predicted_device_bytes, gpu)[0] * MiB
    raise ValueError(f"unknown sharing backend {sharing.backend!r}")
