"""What the operator knows of the cluster, in memory: jobs, their pods, the fleet, the
policy, learned margins and quota reservations. Filled by a LIST at startup (before kopf
starts its handlers), kept current by kopf's watch events and converged by a periodic
re-list that prunes what the apiserver no longer has (a watch gap, a paused standby, a
restart: DELETED events that were never seen); the webhooks answer from it without any API
call.

What stays in memory is what is live: a finished job leaves `jobs` (only its phase is
counted for the gauges) and its pods are not kept; the Queued/Profiling jobs are indexed so
that the queue's work is proportional to what waits, not to every job ever seen.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from yolofit.estimator.profile import ProfileStore
from yolofit.operator import policy as pol
from yolofit.operator.api import TERMINAL_PHASES, GPUCapacityPolicySpec
from yolofit.operator.fleet import ClassInfo, FleetNode
from yolofit.operator.ownership import owned_by

Key = tuple[str, str]  # (namespace, name)
WAITING_PHASES = ("Queued", "Profiling")
TOMBSTONES = 10_000  # UIDs of deleted jobs remembered, so a re-list never resurrects one


@dataclass
class World:
    store: ProfileStore
    jobs: dict[Key, dict[str, Any]] = field(default_factory=dict)
    pods: dict[Key, dict[str, dict[str, Any]]] = field(default_factory=lambda: defaultdict(dict))
    services: dict[Key, dict[str, Any]] = field(default_factory=dict)
    finished: dict[Key, tuple[str, str]] = field(default_factory=dict)  # -> (uid, phase)
    waiting: set[Key] = field(default_factory=set)  # Queued or Profiling
    deleted: dict[str, None] = field(default_factory=dict)  # uid tombstones, oldest first
    pod_groups: bool = False  # the cluster serves scheduling.k8s.io/v1beta1 PodGroups
    placement_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    nodes: list[FleetNode] = field(default_factory=list)
    policy: GPUCapacityPolicySpec = field(default_factory=GPUCapacityPolicySpec)
    policy_exists: bool = False
    margins: dict[str, dict[str, Any]] = field(default_factory=dict)
    reserved: dict[str, Key] = field(default_factory=dict)  # uid -> key, admitted here
    quota_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    locks: dict[Key, asyncio.Lock] = field(default_factory=dict)
    ready: bool = False
    _classes: dict[str, ClassInfo] | None = None

    def lock(self, key: Key) -> asyncio.Lock:
        if key not in self.locks:
            self.locks[key] = asyncio.Lock()
        return self.locks[key]

    # --- jobs and their children -------------------------------------------------------------

    def put_job(self, key: Key, body: dict[str, Any]) -> None:
        """Cache a job; a finished one leaves memory (its phase is kept for the gauges)."""
        status = body.get("status") or {}
        phase = status.get("phase")
        uid = str(body.get("metadata", {}).get("uid", ""))
        if uid in self.deleted:
            return
        if phase not in TERMINAL_PHASES and self.finished_uid(key, uid):
            return  # a stale event of a job that finished: a job never leaves Succeeded/Failed
        if phase in TERMINAL_PHASES:
            self.finish(key, uid, str(phase))
            return
        self.finished.pop(key, None)
        self.jobs[key] = body
        if phase in WAITING_PHASES:
            self.waiting.add(key)
        else:
            self.waiting.discard(key)

    def finish(self, key: Key, uid: str, phase: str) -> None:
        self.jobs.pop(key, None)
        self.waiting.discard(key)
        self.pods.pop(key, None)
        self.locks.pop(key, None)
        self.release(uid)
        self.finished[key] = (uid, phase)

    def forget(self, key: Key, uid: str) -> None:
        """The job was deleted: drop everything of it and free its quota."""
        cached = self.jobs.get(key)
        if cached is not None and uid and cached.get("metadata", {}).get("uid") not in (uid,):
            return  # a newer job of the same name is cached
        self.jobs.pop(key, None)
        self.waiting.discard(key)
        self.finished.pop(key, None)
        self.pods.pop(key, None)
        self.services.pop(key, None)
        self.locks.pop(key, None)
        self.release(uid)
        if uid:
            self.deleted[uid] = None
            while len(self.deleted) > TOMBSTONES:
                self.deleted.pop(next(iter(self.deleted)))

    def uid_of(self, key: Key) -> str:
        return str((self.jobs.get(key) or {}).get("metadata", {}).get("uid", ""))

    def pods_of(self, key: Key) -> dict[str, dict[str, Any]]:
        """The job's pods: those whose controller ownerReference is the cached job's UID
        (a pod with the job's label but another owner is never the job's)."""
        uid = self.uid_of(key)
        return {n: p for n, p in self.pods.get(key, {}).items() if owned_by(p, uid)}

    def finished_uid(self, key: Key, uid: str) -> bool:
        return bool(uid) and self.finished.get(key, ("", ""))[0] == uid

    def older_waiting(self, key: Key, created: str) -> Key | None:
        """The oldest job of the same namespace queued for quota before this one (FIFO per
        namespace: a big job is not passed by a stream of small ones)."""
        best: tuple[tuple[str, str], Key] | None = None
        for other in self.waiting:
            if other[0] != key[0] or other == key:
                continue
            body = self.jobs.get(other) or {}
            status = body.get("status") or {}
            if status.get("admitted") or status.get("phase") != "Queued":
                continue
            mark = (body.get("metadata", {}).get("creationTimestamp", ""), other[1])
            if mark < (created, key[1]) and (best is None or mark < best[0]):
                best = (mark, other)
        return best[1] if best else None

    # --- fleet & policy -------------------------------------------------------------------

    def set_nodes(self, nodes: list[FleetNode]) -> None:
        self.nodes = nodes
        self._classes = None

    def set_policy(self, spec: GPUCapacityPolicySpec | None) -> None:
        self.policy = spec or GPUCapacityPolicySpec()
        self.policy_exists = spec is not None
        self._classes = None

    @property
    def classes(self) -> dict[str, ClassInfo]:
        if self._classes is None:
            self._classes = pol.effective_classes(self.policy, self.nodes)
        return self._classes

    def margin_values(self) -> dict[str, float]:
        return {k: float(v.get("margin", 0.0)) for k, v in self.margins.items()}

    # --- quota ----------------------------------------------------------------------------

    def admitted_gpus(self, namespace: str, excluding: str = "") -> int:
        total = 0
        for key, body in self.jobs.items():
            uid = body.get("metadata", {}).get("uid", "")
            if key[0] != namespace or uid == excluding:
                continue
            status = body.get("status") or {}
            live = status.get("phase") not in TERMINAL_PHASES and not body["metadata"].get(
                "deletionTimestamp")
            # Pods exist only after admission: they count even if the status write was lost.
            if live and (status.get("admitted") or uid in self.reserved or self.pods_of(key)):
                total += _gpus(body)
        return total

    def release(self, uid: str) -> None:
        self.reserved.pop(uid, None)


def _gpus(body: dict[str, Any]) -> int:
    plan = (body.get("status") or {}).get("plan") or body.get("spec", {}).get("plan") or {}
    if plan.get("gpus"):
        return int(plan["gpus"])
    gpus = body.get("spec", {}).get("gpus") or {}
    return int(gpus.get("nodes", 1)) * int(gpus.get("perNode", 1))


def rv(obj: dict[str, Any]) -> int:
    try:
        return int(obj.get("metadata", {}).get("resourceVersion", 0))
    except (TypeError, ValueError):
        return 0


def uid(obj: dict[str, Any]) -> str:
    return str(obj.get("metadata", {}).get("uid", ""))


def merge_listing(cached: dict[Any, dict[str, Any]], listed: dict[Any, dict[str, Any]],
                  list_rv: int, deleted: dict[str, None] | set[str] = frozenset()  # type: ignore[assignment]
                  ) -> tuple[dict[Any, dict[str, Any]], list[Any]]:
    """A cache converged with a LIST taken at `list_rv`: (merged, pruned keys).

    Listed objects replace older cached ones; cached ones newer than the list (a watch event
    after it) are kept; cached ones the list does not have and that are not newer than it
    were deleted while we were not looking: pruned. A deleted UID never comes back.
    """
    merged: dict[Any, dict[str, Any]] = {}
    pruned: list[Any] = []
    for k, obj in cached.items():
        new = listed.get(k)
        if new is None:
            if list_rv and rv(obj) > list_rv:
                merged[k] = obj
            else:
                pruned.append(k)
        elif uid(new) == uid(obj) and rv(obj) > rv(new):
            merged[k] = obj
        elif uid(new) not in deleted:
            merged[k] = new
            if uid(new) != uid(obj):
                pruned.append(k)  # replaced by a new object of the same name
        else:
            pruned.append(k)
    for k, new in listed.items():
        if k not in cached and uid(new) not in deleted:
            merged[k] = new
    return merged, pruned
