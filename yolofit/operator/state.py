"""What the operator knows of the cluster, in memory: jobs, their pods, the fleet, the
policy, learned margins and quota reservations. Filled by a LIST at startup (before kopf
starts its handlers) and kept current by kopf's watch events; the webhooks answer from it
without any API call.
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

Key = tuple[str, str]  # (namespace, name)


@dataclass
class World:
    store: ProfileStore
    jobs: dict[Key, dict[str, Any]] = field(default_factory=dict)
    pods: dict[Key, dict[str, dict[str, Any]]] = field(default_factory=lambda: defaultdict(dict))
    services: set[Key] = field(default_factory=set)
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
            if live and (status.get("admitted") or uid in self.reserved or self.pods.get(key)):
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
