"""Memory requested vs predicted per job and backend, for the operator's gauges. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from yolofit.operator.api import TERMINAL_PHASES


def memory_samples(jobs: Iterable[tuple[tuple[str, str], Mapping[str, Any]]]
                   ) -> list[tuple[tuple[str, str, str, str, str], int]]:
    """((namespace, job, gpu_class, backend, kind), bytes per GPU) of admitted, live jobs."""
    out = []
    for (ns, name), body in jobs:
        st = body.get("status") or {}
        plan = st.get("plan") or {}
        if not st.get("admitted") or st.get("phase") in TERMINAL_PHASES or not plan:
            continue
        base = (ns, name, plan.get("gpuClass", ""), plan.get("backend", "device-plugin"))
        out.append(((*base, "requested"), int(plan.get("requestedBytes", 0))))
        out.append(((*base, "predicted"), int(plan.get("predictedDeviceBytes", 0))))
    return out
