"""Tracing models off the request path: one subprocess per missing profile key.

The webhook never traces; a job without a profile is Profiling until the builder (the
estimator's tracer, configurable) has run in a worker process and the profile is stored.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import multiprocessing
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from yolofit.estimator.profile import Profile, ProfileKey, ProfileStore

log = logging.getLogger("yolofit.operator.profiling")


def _build(builder: str, key_dict: dict[str, Any]) -> dict[str, Any]:
    module, _, name = builder.partition(":")
    fn = getattr(importlib.import_module(module), name)
    profile = fn(ProfileKey.from_dict(key_dict))
    return profile.to_dict() if isinstance(profile, Profile) else dict(profile)


class Profiler:
    def __init__(self, store: ProfileStore, builder: str,
                 done: Callable[[ProfileKey], Awaitable[None]], workers: int = 1) -> None:
        self.store, self.builder, self.done = store, builder, done
        # spawn, not fork: the operator has threads and an event loop a fork would copy.
        self.pool = ProcessPoolExecutor(max_workers=workers,
                                        mp_context=multiprocessing.get_context("spawn"))
        self.inflight: dict[str, asyncio.Task[None]] = {}
        self.failed: dict[str, str] = {}

    async def start(self, key: ProfileKey) -> str | None:
        """Start tracing `key` unless it runs already; the error if tracing it failed."""
        if key.id in self.failed:
            return self.failed[key.id]
        if key.id not in self.inflight:
            self.inflight[key.id] = asyncio.create_task(self._run(key))
        return None

    async def _run(self, key: ProfileKey) -> None:
        loop = asyncio.get_running_loop()
        try:
            data = await loop.run_in_executor(self.pool, _build, self.builder, key.to_dict())
            self.store.put(Profile.from_dict(data))
            log.info("traced %s", key.id)
        except Exception as exc:  # noqa: BLE001 - any tracer failure marks the key
            log.exception("tracing %s failed", key.id)
            self.failed[key.id] = str(exc)
        finally:
            self.inflight.pop(key.id, None)
        await self.done(key)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
