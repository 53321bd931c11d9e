"""Tracing models off the request path: one fresh worker process per missing profile key.

The webhook never traces; a job without a profile is Profiling until the builder (the
estimator's tracer, configurable) has run in a worker process and the profile is stored.
Each trace gets its own worker under the memory budget (`trace_memory_budget`, the chart's
`profiling.memoryBudgetMiB`): a worker over the budget, or killed by the OOM killer, fails
its key with the reason ("trace of yolo11x@1280 was killed (memory budget 3.0 GiB ...)")
and the next trace starts a fresh worker (yolofit.estimator.trace_worker). A failed key
answers with its reason for `retry_after` seconds (10 minutes), then is traced again when a
job asks: a transient failure (a timeout on a busy node, the OOM killer acting for another
container) heals without an operator restart; a lasting one costs a trace per interval.

Keys wait in a queue fair across namespaces (`trace_queue.TraceQueue`): one tenant's burst
of new keys does not hold another namespace's first estimate behind all of it. A queued key
whose every asking job was deleted before its turn is dropped, not traced (`forget`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from yolofit.estimator.profile import Profile, ProfileKey, ProfileStore
from yolofit.estimator.trace_worker import TraceFailed, TraceRun, trace_in_worker
from yolofit.operator import metrics
from yolofit.operator.trace_queue import TraceQueue

log = logging.getLogger("yolofit.operator.profiling")


class Profiler:
    def __init__(self, store: ProfileStore, builder: str,
                 done: Callable[[ProfileKey], Awaitable[None]], workers: int = 1,
                 budget_bytes: int | None = None, timeout: float | None = None,
                 retry_after: float = 600.0) -> None:
        self.store, self.builder, self.done = store, builder, done
        self.budget, self.timeout, self.retry_after = budget_bytes, timeout, retry_after
        self.workers = workers  # traces at once (each a whole CPU for its duration)
        self.queue: TraceQueue[ProfileKey] = TraceQueue()  # asked for, not started
        self.inflight: dict[str, asyncio.Task[None]] = {}  # started, not finished
        self.running: dict[str, TraceRun] = {}  # key id -> its live worker
        self.askers: dict[str, set[tuple[str, str]]] = {}  # queued key id -> jobs asking
        self._exported: set[str] = set()  # namespaces with a yolofit_trace_queue_keys series
        self.failed: dict[str, str] = {}
        self._failed_at: dict[str, float] = {}  # key id -> time.monotonic() of the failure
        self._closed = False

    async def start(self, key: ProfileKey, job: tuple[str, str] | None = None) -> str | None:
        """Queue `key` for tracing (in the line of `job`'s namespace: `job` is (namespace,
        name) of the job asking; None, as the CLI asks, is never forgotten) unless it is
        queued or running already; the error if tracing it failed."""
        if key.id in self.failed:
            if time.monotonic() - self._failed_at.get(key.id, 0.0) < self.retry_after:
                return self.failed[key.id]
            log.info("tracing %s again (it failed %.0f s ago: %s)", key.id,
                     time.monotonic() - self._failed_at.get(key.id, 0.0), self.failed[key.id])
            self.failed.pop(key.id)
        if key.id in self.inflight:
            return None
        job = job or ("", "")
        self.askers.setdefault(key.id, set()).add(job)
        if self.queue.push(job[0], key):
            self._pump()
        return None

    def ahead(self, key: ProfileKey, at_most: int | None = None) -> int | None:
        """None while `key` is being traced (or not asked for); else how many queued keys
        are traced before it (at_most + 1: more than at_most)."""
        return None if key.id in self.inflight else self.queue.ahead_of(key, at_most)

    def busy(self) -> bool:
        """A trace runs or waits for a worker."""
        return bool(self.inflight) or len(self.queue) > 0

    def forget(self, job: tuple[str, str]) -> None:
        """`job` was deleted: a queued key no other job asked for is not traced."""
        for askers in self.askers.values():
            askers.discard(job)

    def _pump(self) -> None:
        """Start the next queued traces while fewer than `workers` run (a key whose askers
        were all forgotten is dropped), then export the queue's length."""
        while not self._closed and len(self.inflight) < self.workers:
            key = self.queue.pop()
            if key is None:
                break
            if not self.askers.pop(key.id, None):
                log.info("not tracing %s: every job that asked for it was deleted", key.id)
                metrics.TRACES.labels("dropped").inc()
                continue
            self.inflight[key.id] = asyncio.create_task(self._run(key))
        self._export_queue()

    async def _run(self, key: ProfileKey) -> None:
        started = time.monotonic()
        try:
            data = await asyncio.to_thread(
                trace_in_worker, self.builder, key.to_dict(), self.budget, self.timeout,
                lambda run: self.running.__setitem__(key.id, run))
            self.store.put(Profile.from_dict(data))
            log.info("traced %s", key.id)
            metrics.TRACES.labels("ok").inc()
        except TraceFailed as exc:
            log.warning("tracing %s failed: %s", key.id, exc)
            self._fail(key, str(exc))
        except Exception as exc:  # noqa: BLE001 - any tracer failure marks the key
            log.exception("tracing %s failed", key.id)
            self._fail(key, str(exc))
        finally:
            run = self.running.pop(key.id, None)
            metrics.TRACE_SECONDS.observe(time.monotonic() - started)
            if run is not None and run.peak_rss:
                metrics.TRACE_PEAK_RSS.observe(run.peak_rss)
            self.inflight.pop(key.id, None)
            self._pump()
        await self.done(key)

    def _export_queue(self) -> None:
        """yolofit_trace_queue_keys per namespace (0 once a namespace's line is empty)."""
        lengths = self.queue.lengths()
        for namespace in self._exported - set(lengths):
            metrics.TRACE_QUEUE.labels(namespace).set(0)
        for namespace, n in lengths.items():
            metrics.TRACE_QUEUE.labels(namespace).set(n)
        self._exported |= set(lengths)

    def _fail(self, key: ProfileKey, error: str) -> None:
        metrics.TRACES.labels("failed").inc()
        self.failed[key.id] = error
        self._failed_at[key.id] = time.monotonic()

    def shutdown(self) -> None:
        self._closed = True
        self.queue.clear()
        self.askers.clear()
        for run in list(self.running.values()):
            run.kill()
