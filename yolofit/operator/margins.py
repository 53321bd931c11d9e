"""Learned margins: learn from one attempt once, and persist in the ConfigMap safely.

The numbers are decided in feedback.py (pure): an OOM raises the (namespace, model, class)
margin by a bounded step, a success measured on the GPU lets it decay. Here is the shell:
the observation id (`<job UID>/<attempt>`) is recorded with the margin it moved, so a crash
between saving the margin and writing the job's status, or a second replica, never learns
the same observation twice; and the ConfigMap is merged under optimistic concurrency
(resourceVersion), keeping a concurrent writer's observations.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from yolofit.operator import feedback, kube
from yolofit.operator.api import Measured, Plan, RankMeasurement
from yolofit.operator.state import World

WRITE_ATTEMPTS = 5
log = logging.getLogger("yolofit.operator")


async def learn(api: kube.Kube, world: World, where: tuple[str, str], key: str, obs: str,
                plan: Plan, oom_ranks: Sequence[RankMeasurement] | None,
                measured: Measured | None) -> float:
    """Learn from an OOM (`oom_ranks`: the trusted summaries) or from a success (`measured`)
    once per observation; returns the margin in force for `key`."""
    old = float(world.margins.get(key, {}).get("margin", 0.0))
    if oom_ranks is not None:
        peak = max((feedback.peak_of(r) for r in oom_ranks), default=0)
        margin = feedback.update_margin(old, plan.predicted_device_bytes, peak)
    elif measured is not None and measured.relative_error is not None and old > 0:
        margin = feedback.decay_margin(old, plan.predicted_device_bytes,
                                       measured.max_peak_bytes)
    else:
        return old  # nothing measured on a GPU, or nothing to decay
    learned = feedback.learn(world.margins, key, obs, margin)
    if learned.changed:
        world.margins = learned.margins
    # An OOM seen again (a pass that learned it failed before its save went through) is
    # saved again: the ConfigMap may lack it. Merging is idempotent.
    if learned.changed or oom_ranks is not None:
        try:
            await save(api, world, where)
        except kube.ApiError as exc:  # the operator's own store, not the job's fault
            if exc.transient:
                raise
            log.error("learned margins not saved to %s/%s (kept in memory): %s", *where, exc)
    return learned.margin


async def save(api: kube.Kube, world: World, where: tuple[str, str]) -> None:
    """Merge this replica's margins into the ConfigMap `where` = (namespace, name)."""
    ns, name = where
    path = kube.configmap_path(ns, name)
    for _ in range(WRITE_ATTEMPTS):
        cm: dict[str, Any] | None = await api.get(path)
        if cm is None:
            created = await api.create(kube.configmap_path(ns), {
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": ns,
                             "labels": {"app.kubernetes.io/part-of": "yolofit"}},
                "data": feedback.encode_margins(world.margins)})
            if created is not None:
                return
            continue  # created meanwhile by another replica: merge into it
        world.margins = feedback.merge_margins(feedback.decode_margins(cm.get("data")),
                                               world.margins)
        patch = {"metadata": {"resourceVersion": cm["metadata"].get("resourceVersion")},
                 "data": feedback.encode_margins(world.margins)}
        try:
            await api.merge_patch(path, patch)
            return
        except kube.ApiError as exc:
            if exc.status != 409:
                raise
    raise kube.ApiError(409, "PATCH", path, "learned margins: too many concurrent writers")
