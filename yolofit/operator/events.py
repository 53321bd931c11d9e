"""Kubernetes Events on jobs and policies, posted by the operator's own API client.

kopf's `kopf.event()` needs kopf's handler context: an Event raised from a background loop
(the queue, the resync, a failure-policy timer) was only logged, so a user saw nothing in
`kubectl describe`. `build` is pure; `Poster` sends each Event as its own task so a reconcile
pass never waits on (or fails because of) an Event.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
from typing import Any

from yolofit.operator import kube

log = logging.getLogger("yolofit.operator")
COMPONENT = "yolofit-operator"
MESSAGE_LIMIT = 1000


def build(body: dict[str, Any], type_: str, reason: str, message: str, now: str,
          instance: str = "") -> dict[str, Any]:
    """A core/v1 Event about `body` (named like kubectl's: <object>.<random suffix>)."""
    meta = body.get("metadata", {})
    name = str(meta.get("name", "unknown"))
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": f"{name[:240]}.{secrets.token_hex(8)}",
                     "namespace": meta.get("namespace") or "default"},
        "involvedObject": {"apiVersion": body.get("apiVersion", ""),
                           "kind": body.get("kind", ""), "name": name,
                           "namespace": meta.get("namespace", ""), "uid": meta.get("uid", ""),
                           "resourceVersion": meta.get("resourceVersion", "")},
        "type": type_, "reason": reason, "message": message[:MESSAGE_LIMIT],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT, "reportingInstance": instance or COMPONENT,
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    }


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Poster:
    """Callable as the reconciler's EventFn (body, type, reason, message) -> None."""

    def __init__(self, api: kube.Kube | None, instance: str = "") -> None:
        self.api, self.instance = api, instance
        self.pending: set[asyncio.Task[None]] = set()

    def __call__(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        log.info("%s %s: %s", type_, reason, message)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (unit tests of pure code): the log line is all
        if self.api is None:
            return
        task = loop.create_task(self._post(build(body, type_, reason, message, now(),
                                                 self.instance)))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _post(self, event: dict[str, Any]) -> None:
        assert self.api is not None
        ns = event["metadata"]["namespace"]
        try:
            await self.api.create(f"/api/v1/namespaces/{ns}/events", event)
        except Exception as exc:  # noqa: BLE001 - an Event is best effort, never a failure
            log.warning("could not post Event %s on %s: %s", event["reason"],
                        event["involvedObject"]["name"], exc)
