"""From a plan to its backend: describe the slice on the plan, transform the pods, and the
extra children (DRA's ResourceClaimTemplate). The hooks admission and reconcile call."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from yolofit.operator.api import Plan
from yolofit.operator.fleet import ClassInfo
from yolofit.operator.sharing import dra, hami, kai, mig
from yolofit.operator.sharing.base import requested_bytes
from yolofit.units import format_bytes


def describe(plan: Plan, info: ClassInfo) -> Plan:
    """The plan with its backend, the slice as `kubectl get` shows it and the memory asked."""
    s = info.sharing
    asked = requested_bytes(s, info.gpu, plan.predicted_device_bytes)
    plan = plan.model_copy(update={"backend": s.backend, "requested_bytes": asked,
                                   "requested": format_bytes(asked)})
    if s.backend == "mig":
        label = mig.slice_label(info)
    elif s.backend == "dra":
        label = dra.slice_label(plan, info)
    elif s.backend == "hami":
        label = hami.slice_label(asked, info)
    elif s.backend == "kai":
        label = kai.slice_label(asked, info)
    else:
        label = info.name
    return plan.model_copy(update={"slice": label})


def apply_pod(pod: dict[str, Any], plan: Plan, info: ClassInfo, attempt: int) -> dict[str, Any]:
    """The backend's request on a pod `launch.build_pod` made for a whole-GPU class."""
    backend = info.sharing.backend
    if backend == "mig":
        return mig.apply_pod(pod, info)
    if backend == "dra":
        return dra.apply_pod(pod, plan, attempt)
    if backend == "hami":
        return hami.apply_pod(pod, plan.requested_bytes)
    if backend == "kai":
        return kai.apply_pod(pod, plan.requested_bytes, info)
    return pod


def children(job: Mapping[str, Any], plan: Plan, info: ClassInfo,
             attempt: int) -> list[tuple[str, dict[str, Any]]]:
    """(collection path, object) the pods of this attempt need before they are created."""
    if info.sharing.backend != "dra":
        return []
    ns = job["metadata"]["namespace"]
    return [(dra.templates_path(ns), dra.claim_template(job, plan, info, attempt))]
