"""What the Reconciler's mixins (failure_actions.py, replan_actions.py) use of it: the
attributes it sets and the methods reconcile.py defines, declared once so that mypy checks
each mixin on its own. Every method here is overridden by Reconciler."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from yolofit.operator import kube
from yolofit.operator.api import YOLOTrainingJobStatus
from yolofit.operator.state import Key, World

EventFn = Callable[[dict[str, Any], str, str, str], None]  # body, type, reason, message


class ReconcilerParts:
    world: World
    api: kube.Kube
    event: EventFn

    async def reconcile(self, key: Key) -> None:
        raise NotImplementedError

    async def _write_status(self, key: Key, body: dict[str, Any],
                            st: YOLOTrainingJobStatus) -> None:
        raise NotImplementedError

    def _fail(self, body: dict[str, Any], st: YOLOTrainingJobStatus, reason: str, msg: str,
              gen: int, t: str) -> None:
        raise NotImplementedError
