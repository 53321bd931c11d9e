"""KAI Scheduler GPU sharing: the `gpu-memory` annotation (MiB), KAI's schedulerName and
queue label. Pure.

KAI turns a memory request into a portion of the card and keeps portions as whole
hundredths (`round(portion x 100) / 100`, pkg/scheduler/api/resource_info), against the card
memory GFD reports (`nvidia.com/gpu.memory`). A request that rounds down reserves less than
asked, so yolofit asks for the smallest amount whose rounding still covers the need: the
need's portion rounded *up* to a hundredth, times the card. KAI does not enforce the amount
(nothing stops a process without KAI's isolator from using the whole card): the class's
default headroom is larger and the batch stays pinned by the plan.
"""

from __future__ import annotations

from typing import Any

from yolofit.estimator.gpu import GpuClass
from yolofit.operator.fleet import ClassInfo
from yolofit.operator.sharing.base import GPU_RESOURCE, MiB, ceil_mib, need_bytes

ANNOTATION = "gpu-memory"
DEVICES_ANNOTATION = "gpu-fraction-num-devices"  # the same share on each of n devices
QUEUE_LABEL = "kai.scheduler/queue"
SCHEDULER = "kai-scheduler"
STEPS = 100  # KAI keeps portions in hundredths of a card


def survives(request_mib: int, card_mib: int) -> int:
    """What KAI reserves for a request, in MiB: round(request / card, 2 decimals) x card."""
    hundredths = round(request_mib * STEPS / card_mib)
    return hundredths * card_mib // STEPS


def request_for(need_mib: int, card_mib: int) -> tuple[int, int]:
    """(MiB to request, hundredths of the card) so that what KAI keeps is >= need_mib."""
    if need_mib > card_mib:
        raise ValueError(f"{need_mib} MiB does not fit a {card_mib} MiB card")
    hundredths = max(-(-need_mib * STEPS // card_mib), 1)
    return -(-hundredths * card_mib // STEPS), hundredths


def gpu_memory_mib(predicted_device_bytes: int, gpu: GpuClass) -> tuple[int, int]:
    card = gpu.memory_bytes // MiB
    need = min(ceil_mib(need_bytes(predicted_device_bytes, gpu)), card)
    return request_for(need, card)


def apply_pod(pod: dict[str, Any], requested_bytes: int, info: ClassInfo) -> dict[str, Any]:
    """KAI takes a memory request instead of `nvidia.com/gpu` (a fraction of one device)."""
    meta, spec = pod["metadata"], pod["spec"]
    meta.setdefault("annotations", {})[ANNOTATION] = str(requested_bytes // MiB)
    meta.setdefault("labels", {})[QUEUE_LABEL] = info.sharing.queue
    spec["schedulerName"] = info.sharing.scheduler_name or SCHEDULER
    devices = _gpus(pod)
    if devices > 1:
        meta["annotations"][DEVICES_ANNOTATION] = str(devices)
    for c in spec["containers"]:
        for kind in ("requests", "limits"):
            (c.get("resources", {}).get(kind) or {}).pop(GPU_RESOURCE, None)
    return pod


def _gpus(pod: dict[str, Any]) -> int:
    limits = pod["spec"]["containers"][0].get("resources", {}).get("limits") or {}
    return int(limits.get(GPU_RESOURCE, 1))


def slice_label(requested_bytes: int, info: ClassInfo) -> str:
    card = info.gpu.memory_bytes // MiB
    return f"{info.name}/kai {round(requested_bytes // MiB * STEPS / card) / STEPS:.2f}"
