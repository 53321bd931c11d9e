"""The I/O side of gang placement (decisions in gang.py): discovery of the PodGroup API, the
job's PodGroup, the GPU usage of bound pods, and lifting the gates of a gang that fits.

Used by the reconciler through two hooks: `prepare()` before pods are created and `hold()`
once all of them exist.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from yolofit.operator import gang, ownership
from yolofit.operator.api import Plan
from yolofit.operator.kube import ApiError, Kube
from yolofit.operator.launch import GANG_GATE
from yolofit.operator.sharing.mig import whole_gpu_nodes
from yolofit.operator.state import Key, World

USAGE_TTL = 1.0  # seconds a listing of bound pods' GPUs is reused for messages
# Bound, unfinished pods: what holds GPUs on nodes now.
BOUND = [("fieldSelector", "spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed")]

Ungate = Callable[[Key, list[str]], Awaitable[None]]


@dataclass(frozen=True)
class Block:
    """Why the gang cannot be launched yet; `foreign` when another owner holds the name."""

    message: str
    foreign: bool = False


class GangShell:
    def __init__(self, world: World, api: Kube) -> None:
        self.world, self.api = world, api
        self.groups: dict[Key, str] = {}  # PodGroups known to exist and be the job's (uid)
        self._usage: tuple[float, dict[str, int]] | None = None

    async def discover(self) -> bool:
        """Whether PodGroups are served (GenericWorkload on, scheduling.k8s.io/v1beta1 on)."""
        found = await self.api.get(f"/apis/{gang.POD_GROUP_API}")
        self.world.pod_groups = gang.served(found)
        return self.world.pod_groups

    def uses_groups(self, plan: Plan) -> bool:
        return self.world.pod_groups and plan.nodes > 1

    def forget(self) -> None:
        """Re-verify every PodGroup on the next pass (after a re-list)."""
        self.groups.clear()

    async def prepare(self, key: Key, body: dict[str, Any], plan: Plan) -> Block | None:
        """PodGroup mode: the job's PodGroup exists and is the job's; else why not."""
        if not self.uses_groups(plan):
            return None
        ns, name = key
        uid = body["metadata"]["uid"]
        pods = self.world.pods_of(key)
        if self.groups.get(key) == uid or (len(pods) >= plan.nodes and all(
                (p.get("spec") or {}).get("nodeName") for p in pods.values())):
            return None  # known, or the gang is placed already: nothing to schedule
        group = gang.pod_group_name(name)
        made = await self.api.create(gang.pod_groups_path(ns), gang.build_pod_group(body, plan))
        existing = made or await self.api.get(gang.pod_groups_path(ns, group))
        if existing is None:
            return Block(f"PodGroup {group} was deleted while being created; retrying")
        if ownership.owned_by(existing, uid):
            self.groups[key] = uid
            return None
        if ownership.leftover_of(existing, name):
            return Block(f"waiting for PodGroup {group} of a deleted job of the same name "
                         f"to be garbage-collected")
        return Block(ownership.conflict_message("PodGroup", [group], name,
                                                ownership.describe(existing)), foreign=True)

    def shape(self, pod: dict[str, Any], plan: Plan) -> dict[str, Any]:
        """A new pod as a gang member: in PodGroup mode it names the group, ungated."""
        if self.uses_groups(plan):
            return gang.join(pod, gang.pod_group_name(pod["metadata"]["labels"]
                                                      ["yolofit.io/job"]))
        return pod

    async def hold(self, key: Key, plan: Plan, pods: dict[str, dict[str, Any]],
                   ungate: Ungate) -> str | None:
        """All pods exist. None when the gang may run (gates lifted here when it fits),
        else why it waits (and no pod of it is bound)."""
        gated = sorted(n for n, p in pods.items() if GANG_GATE in _gates(p))
        if self.uses_groups(plan) or not gated or plan.nodes == 1:
            if gated:  # a single pod, or pods made before the cluster served PodGroups
                await ungate(key, gated)
            if plan.nodes == 1:
                return None  # not a gang: status.py reports the scheduler's reason
            return await self._unschedulable(plan, list(pods.values()))
        async with self.world.placement_lock:
            free = await self._free(plan.gpu_class, fresh=True)
            if free is None:  # not countable here: the scheduler alone decides
                await ungate(key, gated)
                return None
            ahead = gang.unbound_gangs(self._pods_by_job(), plan.gpu_class,
                                       exclude=f"{key[0]}/{key[1]}")
            demand = gang.Demand(len(gated), plan.gpus_per_node, key[1])
            short = gang.check(demand, free, ahead)
            if short is not None:
                return gang.queued_message(plan, short)
            await ungate(key, gated)
            self._usage = None
            return None

    async def _unschedulable(self, plan: Plan, pods: list[dict[str, Any]]) -> str | None:
        said = gang.unschedulable(pods)
        if said is None:
            return None
        free = await self._free(plan.gpu_class)
        short = None if free is None else gang.check(
            gang.Demand(plan.nodes, plan.gpus_per_node), free)
        return gang.queued_message(plan, short or f"the scheduler says: {said}")

    def _pods_by_job(self) -> dict[str, list[dict[str, Any]]]:
        return {f"{k[0]}/{k[1]}": list(self.world.pods_of(k).values())
                for k in list(self.world.pods)}

    async def _free(self, gpu_class: str, fresh: bool = False) -> dict[str, int] | None:
        info = self.world.classes.get(gpu_class)
        if info is None or info.sharing.backend != "device-plugin":
            return None  # gone, or GPUs shared/sliced (MIG, DRA, HAMi, KAI): not whole GPUs
        now = time.monotonic()
        if fresh or self._usage is None or now - self._usage[0] > USAGE_TTL:
            try:
                listing = await self.api.get("/api/v1/pods", query=BOUND) or {}
                pods = listing.get("items") or []
            except ApiError as exc:
                if exc.status != 403:
                    raise
                # Served namespaces only (the chart's namespaced RBAC): what we can see is
                # our own pods; other workloads on the class's nodes are the scheduler's call.
                pods = [p for named in list(self.world.pods.values()) for p in named.values()]
            self._usage = (now, gang.used_by_node(pods))
        # All-MIG nodes carry the product label but no whole nvidia.com/gpu to give.
        return gang.free_gpus(info, whole_gpu_nodes(self.world.nodes), self._usage[1])


def _gates(pod: dict[str, Any]) -> list[str]:
    return [g.get("name", "") for g in (pod.get("spec") or {}).get("schedulingGates") or []]
