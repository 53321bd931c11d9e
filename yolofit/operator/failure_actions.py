"""Where failures end: the reconciler's side of the failure policy (a mixin of Reconciler).

- `_gang_policy`: applies `failure_policy.decide` to the current attempt's pods: restart the
  whole gang as a new attempt (status written first, then every rank deleted at once, the
  relaunch after the backoff), fail, or go back to Queued with the quota released.
- `_class_gone`: a job whose plan's GPU class left the fleet waits Queued, holding no quota.
- `_api_failed`: a permanent API error (4xx other than 409/429) fails the job with a
  condition and an Event naming the request and the API's message (quota released by the
  same pass); a transient one (429, 5xx, timeout) is retried with a capped backoff.
- `_stop_pods`: a Failed job's ranks still holding GPUs are deleted at once.

Order matters for crash safety: every decision is written to status before pods are
deleted, so an operator killed in between finds the new attempt (and deletes the old pods
as stale) instead of relaunching the old attempt with the old plan.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from yolofit.operator import failure_policy, kube
from yolofit.operator.api import Plan, Restart, YOLOTrainingJobStatus
from yolofit.operator.kueue import queue_name
from yolofit.operator.reconciler_parts import ReconcilerParts
from yolofit.operator.state import Key
from yolofit.operator.status import set_condition

log = logging.getLogger("yolofit.operator")
API_BACKOFF_BASE, API_BACKOFF_CAP = 1.0, 60.0


class FailureActions(ReconcilerParts):
    # --- the failure policy -------------------------------------------------------------

    async def _gang_policy(self, key: Key, body: dict[str, Any], plan: Plan,
                           st: YOLOTrainingJobStatus, gen: int, t: str) -> bool:
        """True when the pass ends here (the gang was restarted, failed, requeued, or waits
        for its restart backoff). Kueue-managed jobs: Kueue decides (kueue.py)."""
        if queue_name(self.world.policy, key[0], body) is not None:
            return False
        stale = [n for n, p in self.world.pods_of(key).items()
                 if failure_policy.pod_facts(p).attempt != st.attempt]
        if stale:  # by UID, terminating ones too: the cache learns what no watch event said
            await self._delete_pods(key, stale)
        facts = [failure_policy.pod_facts(p) for p in self.world.pods_of(key).values()]
        current = [f for f in facts if f.attempt == st.attempt]
        policy = self.world.policy.failure_policy
        now = time.time()
        if not current:
            wait = failure_policy.relaunch_wait(st.restarts, st.attempt, policy, now)
            if wait <= 0:
                return False
            st.phase = "Admitted"
            st.message = (f"restarting the gang as attempt {st.attempt} in {wait:.0f}s "
                          f"(restart {len(st.restarts)} of at most {policy.max_restarts})")
            self._wake_later(key, wait)
            return True
        d = failure_policy.decide(current, plan.nodes, len(st.restarts), policy, now,
                                  ran_whole=st.phase == "Running")
        if d.action == "none":
            if d.recheck is not None:  # a pod not started yet: look again when it times out
                self._wake_later(key, d.recheck + 0.5)
            return False
        if d.action == "fail":
            self._fail(body, st, d.reason, d.message, gen, t)  # _pass then stops the pods
            return True
        st.attempt += 1
        st.start_time, st.measured = None, None
        if d.action == "restart":
            st.restarts.append(Restart(attempt=st.attempt, reason=d.reason, message=d.message,
                                       time=t))
            st.phase, st.message = "Admitted", d.message
            st.conditions = set_condition(st.conditions, "PodsReady", "False", d.reason,
                                          d.message, gen, t)
        else:  # requeue: the pods go, the quota is released, admission starts over
            st.admitted = False
            self.world.release(body["metadata"]["uid"])
            st.phase, st.message = "Queued", f"back in the queue: {d.message}"
            st.conditions = set_condition(st.conditions, "Admitted", "False", d.reason,
                                          st.message, gen, t)
        self.event(body, "Warning", d.reason, st.message)
        await self._write_status(key, body, st)
        await self._delete_pods(key, [f.name for f in facts if not f.deleting])
        if d.action == "restart":
            self._wake_later(key, failure_policy.restart_backoff(len(st.restarts), policy))
        return True

    async def _class_gone(self, key: Key, body: dict[str, Any], plan: Plan,
                          st: YOLOTrainingJobStatus, gen: int, t: str) -> bool:
        """The plan's GPU class is not in the fleet and no pod of the attempt runs on it:
        wait Queued for it, holding no quota. True when the pass ends here."""
        if plan.gpu_class in self.world.classes:
            return False
        live = [p for p in self.world.pods_of(key).values()
                if failure_policy.pod_facts(p).attempt == st.attempt]
        if live:
            return False
        msg = (f"GPU class {plan.gpu_class} of the plan is not in the fleet (no node matches "
               f"it, or the policy no longer lists it); waiting Queued for it, no quota held")
        if st.phase != "Queued":
            self.event(body, "Warning", "GpuClassUnavailable", msg)
        st.admitted = False
        self.world.release(body["metadata"]["uid"])
        st.phase, st.message = "Queued", msg
        st.conditions = set_condition(st.conditions, "Admitted", "False",
                                      "GpuClassUnavailable", msg, gen, t)
        return True

    def _attempt_has_pods(self, key: Key, st: YOLOTrainingJobStatus) -> bool:
        """Pods of the current attempt exist (they are made only after admission); those of
        an earlier attempt do not count: a requeued job must be admitted again."""
        return any(failure_policy.pod_facts(p).attempt == st.attempt
                   for p in self.world.pods_of(key).values())

    # --- API errors ---------------------------------------------------------------------

    def _api_failed(self, key: Key, body: dict[str, Any], st: YOLOTrainingJobStatus,
                    exc: kube.ApiError, gen: int, t: str) -> None:
        if permanent(exc):
            msg = (f"the Kubernetes API refused {exc.method} {exc.path} (HTTP {exc.status}"
                   f"{' ' + exc.reason if exc.reason else ''}): {exc.message}")
            self._fail(body, st, exc.reason or "ApiError", msg[:1000], gen, t)
            return
        backoff: dict[Key, int] = self.__dict__.setdefault("_api_tries", {})
        tries = backoff.get(key, 0)
        backoff[key] = tries + 1
        delay = kube.backoff(tries, API_BACKOFF_BASE, API_BACKOFF_CAP, exc.retry_after)
        st.message = f"retrying in {delay:.0f}s after a transient API error: {exc}"[:1000]
        log.warning("%s/%s: %s; retrying in %.1fs", *key, exc, delay)
        self._wake_later(key, delay)

    def _api_ok(self, key: Key) -> None:
        self.__dict__.get("_api_tries", {}).pop(key, None)

    # --- pods ---------------------------------------------------------------------------

    async def _stop_pods(self, key: Key, pods: dict[str, dict[str, Any]] | None = None) -> None:
        """Delete, all at once, the job's pods that may still hold GPUs."""
        pods = self.world.pods_of(key) if pods is None else pods
        names = [f.name for p in pods.values()
                 if not (f := failure_policy.pod_facts(p)).deleting
                 and f.phase not in ("Succeeded", "Failed")]
        await self._delete_pods(key, names, pods)

    async def _delete_pods(self, key: Key, names: list[str],
                           pods: dict[str, dict[str, Any]] | None = None) -> None:
        """Delete these pods of the job at once, each by its UID (never a newer namesake)."""
        pods = self.world.pods_of(key) if pods is None else pods
        uids = [pods.get(n, {}).get("metadata", {}).get("uid", "") for n in names]
        results = await asyncio.gather(*(self.api.delete(kube.pods_path(key[0], n), uid)
                                         for n, uid in zip(names, uids, strict=True)),
                                       return_exceptions=True)
        for name, r in zip(names, results, strict=True):
            if isinstance(r, BaseException) and not isinstance(r, Exception):
                raise r  # cancellation (shutdown) is not a failed delete
            if isinstance(r, Exception):  # a stale pod is deleted again by the next pass
                log.warning("deleting pod %s/%s failed: %s", key[0], name, r)
            elif r is False and key in self.world.jobs:  # gone, or a newer namesake:
                cache = self.world.pods[key]  # what the cache missed, from the apiserver
                fresh = await self.api.get(kube.pods_path(key[0], name))
                if fresh:
                    cache[name] = fresh
                else:
                    cache.pop(name, None)

    def _wake_later(self, key: Key, delay: float) -> None:
        """Reconcile `key` again after `delay` seconds (a backoff, a timeout; the resync is
        the fallback). One timer per job: the earlier wins."""
        loop = asyncio.get_running_loop()
        timers: dict[Key, asyncio.TimerHandle] = self.__dict__.setdefault("_timers", {})
        at = loop.time() + max(delay, 0.0)
        pending = timers.get(key)
        if pending is not None and not pending.cancelled() and pending.when() <= at:
            return
        if pending is not None:
            pending.cancel()

        def wake() -> None:
            timers.pop(key, None)
            loop.create_task(self._wake(key))

        timers[key] = loop.call_at(at, wake)

    async def _wake(self, key: Key) -> None:
        try:
            await self.reconcile(key)
        except Exception:  # noqa: BLE001 - logged; the resync retries
            log.exception("reconcile %s/%s failed", *key)


def permanent(exc: kube.ApiError) -> bool:
    """Permanent for the job: a 4xx other than 409/429, except a 404 on an object that
    vanished under us (a pod deleted before its patch): the next pass sees it gone."""
    return exc.permanent and not (exc.status == 404 and exc.method in ("PATCH", "DELETE"))
