"""One reconcile pass of one job: observe (cached job + pods), decide (pure modules), act.

Level-triggered and idempotent: every pass recomputes from what is observed, children have
deterministic names, AlreadyExists/NotFound are success, and status is written once per
pass and only when it changed. A kill -9 between any two calls is repaired by the next
pass after restart. Expected waits (pods not yet created, old attempt still terminating)
just end the pass: the next watch event or the periodic resync brings the job back.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from yolofit.operator import (
    admission,
    children,
    feedback,
    isolation,
    kube,
    launch,
    margins,
    metrics,
    replan,
    storage,
)
from yolofit.operator import policy as pol
from yolofit.operator.api import (
    TERMINAL_PHASES,
    Plan,
    Replan,
    YOLOTrainingJob,
    YOLOTrainingJobStatus,
)
from yolofit.operator.failure_actions import FailureActions
from yolofit.operator.gang_shell import GangShell
from yolofit.operator.kube import Kube
from yolofit.operator.kueue import KueueHook, kueue_holds_quota, queue_name
from yolofit.operator.reconciler_parts import EventFn
from yolofit.operator.replan_actions import ReplanActions
from yolofit.operator.sharing import apply as sharing
from yolofit.operator.state import Key, World
from yolofit.operator.status import PodsOutcome, PodView, pod_view, set_condition, summarize

log = logging.getLogger("yolofit.operator")


PLACES_SHOWN = 10  # a Profiling job's status counts the traces ahead of it up to this


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Reconciler(FailureActions, ReplanActions):
    def __init__(self, world: World, api: Kube, event: EventFn,
                 start_profiling: Callable[[Any, Key], Awaitable[str | None]],
                 metrics_port: int = launch.METRICS_PORT,
                 profile_queue: Callable[[Any, int], int | None] | None = None) -> None:
        self.world, self.api, self.event = world, api, event
        self.start_profiling = start_profiling
        self.profile_queue = profile_queue  # queued profiles traced before a key (or None)
        self.metrics_port = metrics_port
        self.monitoring_namespace = "monitoring"  # may scrape trainer metrics (NetworkPolicy)
        self.observed_errors: set[tuple[str, int]] = set()
        self.dropped_seen: set[tuple[str, int, str]] = set()
        # The status last written in the current pass of each job (one pass per job at a
        # time: the job's lock), so the pass writes again only what changed since.
        self.written: dict[Key, YOLOTrainingJobStatus] = {}
        self.kueue = KueueHook()  # Workloads of Kueue-managed jobs (kueue.py)
        self.gangs = GangShell(world, api)  # all-or-nothing placement (gang.py)

    async def reconcile(self, key: Key) -> None:
        async with self.world.lock(key):
            body = self.world.jobs.get(key)
            if body is None or body["metadata"].get("deletionTimestamp"):
                return
            await self._pass(key, body)

    async def _pass(self, key: Key, body: dict[str, Any]) -> None:
        job = YOLOTrainingJob.model_validate(body)
        old = job.status
        st = old.model_copy(deep=True)
        uid = body["metadata"]["uid"]
        gen = int(body["metadata"].get("generation", 0))
        st.observed_generation = gen
        if old.phase in TERMINAL_PHASES:
            self.world.release(uid)
            if old.phase == "Failed":
                await self._stop_pods(key)  # a kill -9 after the Failed write left them
            return
        self.written[key] = old
        try:
            await self._steps(key, body, job, st, gen)
            self._api_ok(key)
        except kube.ApiError as exc:
            self._api_failed(key, body, st, exc, gen, now())
        finally:
            # Kueue's admission is the go signal: the job shows its Workload's state.
            self.kueue.settle(st, body, self.world.policy, gen, now())
            pods = self.world.pods_of(key)  # (a finished job leaves the cache when written)
            if st != self.written.pop(key, None):
                await self._write_status(key, body, st)
            if st.phase in TERMINAL_PHASES:
                self.world.release(uid)
                await self.kueue.finish(self.api, key[0], st.phase, pods)
        if st.phase == "Failed":  # every rank at once: no GPU held past the failure
            await self._stop_pods(key, pods)  # (the pods as seen before the final write)

    async def _steps(self, key: Key, body: dict[str, Any], job: YOLOTrainingJob,
                     st: YOLOTrainingJobStatus, gen: int) -> None:
        t = now()
        # 1. A plan: the one this operator admitted (status, writable by it only), else
        # planned here now. spec.plan is never launched from: it is a mirror a user could
        # have written (docs/ARCHITECTURE.md, "Who owns the plan").
        plan = st.plan
        if plan is None:
            plan = await self._plan(key, body, job, st, gen)
            if plan is None:
                return
        if await self._class_gone(key, body, plan, st, gen, t):
            return
        # 2. Quota: admitted at most once; a job over its namespace's GPUs waits Queued.
        # Where the namespace's rule hands quota to Kueue, Kueue alone admits (kueue.py); a
        # job whose own label picks a queue is held to this quota as well.
        queue = queue_name(self.world.policy, key[0], body)
        own_quota = queue is None or not kueue_holds_quota(self.world.policy, key[0])
        if own_quota and not st.admitted and self._attempt_has_pods(key, st):
            st.admitted = True  # pods exist only after admission: a restart lost the write
        if own_quota and not st.admitted:
            if not await self._admit(key, body, plan, st, gen):
                return
            st.plan = plan
            self.event(body, "Normal", "Admitted", f"admitted on {plan.gpu_class}: {plan.gpus} "
                       f"GPUs, batch {plan.batch_per_gpu}/GPU x accumulate {plan.accumulate}, "
                       f"{plan.amp}, estimate {plan.estimate}")

        plan = st.plan or plan
        st.plan = plan
        if queue is not None and (why := self.kueue.evicted(st, queue, body)):
            await self.kueue.restart(self.api, self.event, self.world.pods_of(key), body,
                                     st, why, gen, t)
        # 3. The failure policy acts on the whole gang (restart, fail, requeue).
        if await self._gang_policy(key, body, plan, st, gen, t):
            return
        # 4. Launch the current attempt (deleting pods of an earlier one first).
        current = await self._launch(key, body, job, plan, st, gen, t)
        if current is not None:
            await self._follow(key, body, job, plan, st, current, gen, t)

    async def _follow(self, key: Key, body: dict[str, Any], job: YOLOTrainingJob, plan: Plan,
                      st: YOLOTrainingJobStatus, current: list[PodView], gen: int,
                      t: str) -> None:
        """5. Follow the pods: only summaries of the job's own pods of this attempt count."""
        outcome = summarize(current, plan, self._trust(body, plan, st))
        self._dropped(body, st, outcome.dropped)
        st.results = storage.results(st.results, self._storage(body, job), job.spec, key[1],
                                     st.attempt, outcome.reports)
        if outcome.ranks:
            m = feedback.measured(outcome.ranks, plan.predicted_device_bytes)
            st.measured = m
        # Denser data or a bigger model than the plan assumed: a new plan, not an OOM.
        if await self._replan_measured(key, body, job, plan, st, outcome.reports, gen, t):
            return
        if outcome.oom:
            await self._oom(key, body, job, plan, st, outcome.ranks, gen)
            return
        if outcome.recheck is not None:  # a failed rank's peers may yet report an OOM
            self._wake_later(key, outcome.recheck + 0.5)
        await self._settle(key, body, job, plan, st, outcome, gen, t)

    async def _settle(self, key: Key, body: dict[str, Any], job: YOLOTrainingJob, plan: Plan,
                      st: YOLOTrainingJobStatus, outcome: PodsOutcome, gen: int, t: str) -> None:
        """The job's phase and conditions from its pods' outcome (no OOM)."""
        st.phase, st.message = outcome.phase, outcome.message  # type: ignore[assignment]
        ready = "True" if outcome.phase in ("Running", "Succeeded") and \
            outcome.recheck is None else "False"
        st.conditions = set_condition(st.conditions, "PodsReady", ready, outcome.reason,
                                      outcome.message, gen, t)
        if outcome.phase in TERMINAL_PHASES:
            st.completion_time = st.completion_time or t
            ok = outcome.phase == "Succeeded"
            st.conditions = set_condition(st.conditions, "Succeeded" if ok else "Failed",
                                          "True", outcome.reason, outcome.message, gen, t)
            self.event(body, "Normal" if ok else "Warning", outcome.reason, outcome.message)
            self._observe_error(body, plan, st)
            if ok:
                await self._learn(key, body, job, plan, st, None)

    async def _launch(self, key: Key, body: dict[str, Any], job: YOLOTrainingJob, plan: Plan,
                      st: YOLOTrainingJobStatus, gen: int, t: str) -> list[PodView] | None:
        """Ensure the Service and this attempt's pods; the pods once all exist, else None."""
        ns, name = key
        views = [pod_view(p) for p in self.world.pods_of(key).values()]
        stale = [v for v in views if v.attempt != st.attempt]
        for v in stale:
            if not v.deleting:
                await self.api.delete(kube.pods_path(ns, v.name), v.uid)
        if stale:
            await self.kueue.release_superseded(self.api, ns, self.world.pods_of(key),
                                                st.attempt)
            st.message = f"waiting for {len(stale)} pods of attempt {st.attempt - 1} to go"
            return None
        current = [v for v in views if not v.deleting]
        if plan.gpu_class not in self.world.classes and not current:
            st.message = (f"GPU class {plan.gpu_class} is not in the fleet (no node matches it);"
                          f" waiting for it")
            return None
        outputs = self._storage(body, job)
        storage.note(st, outputs, job.spec, name, gen, t)
        blocked = await self._children_blocked(key, body, plan, st, gen, t)
        if blocked is not None:
            st.message = blocked
            return None
        if len(current) < plan.nodes:
            await storage.ensure_claim(self.api, outputs)
        created = await self._ensure_pods(key, body, job, plan, st, {v.name for v in current},
                                          outputs)
        if created:
            self._launched(body, job, plan, st, outputs)
        if not st.start_time and (created or current):
            st.start_time = t
        st.workers = launch.desired_pod_names(name, plan)
        if len(current) < plan.nodes:
            # Same words as summarize() while pods start, so the next pass writes nothing new.
            st.phase, st.message = "Admitted", launch.waiting_message(plan)
            st.conditions = set_condition(st.conditions, "PodsReady", "False", "WaitingForPods",
                                          st.message, gen, t)
            return None
        await self.kueue.lift_plan_gate(self.api, ns, self.world.pods_of(key))
        waiting = await self.gangs.hold(key, plan, self.world.pods_of(key), self._ungate)
        if waiting is not None:  # the whole gang does not fit now: no pod of it is bound
            if st.phase != "Queued":
                self.event(body, "Normal", "GangWaiting", waiting)
            st.phase, st.message = "Queued", waiting
            st.conditions = set_condition(st.conditions, "PodsReady", "False",
                                          "GangUnschedulable", waiting, gen, t)
            return None
        return current

    async def _plan(self, key: Key, body: dict[str, Any], job: YOLOTrainingJob,
                    st: YOLOTrainingJobStatus, gen: int) -> Plan | None:
        ns, name = key
        w = self.world
        started = time.perf_counter()
        spec = replan.planning_spec(job.spec, st.measured_inputs)  # measured inputs win
        d = admission.decide(name, ns, spec, w.policy, w.classes, w.store, w.margin_values())
        metrics.PLAN_SECONDS.observe(time.perf_counter() - started)
        t = now()
        if d.missing is not None:
            if st.phase != "Profiling":
                self.event(body, "Normal", "Profiling", f"no memory profile for "
                           f"{d.missing.id}; tracing it off the request path")
                metrics.ADMISSIONS.labels("profiling", "", ns).inc()
            error = await self.start_profiling(d.missing, key)
            if error is not None:
                self._fail(body, st, "ProfilingFailed", f"tracing {d.missing.id} failed: "
                           f"{error}", gen, t)
                return None
            st.phase, st.message = "Profiling", self._profiling_message(d.missing)
            st.conditions = set_condition(st.conditions, "Profiled", "False", "Tracing",
                                          st.message, gen, t)
            return None
        if d.refused or d.plan is None:
            msg = "; ".join(d.errors)
            st.phase, st.message = "Failed", msg
            st.conditions = set_condition(st.conditions, "Failed", "True", "DoesNotFit", msg,
                                          gen, t)
            self.event(body, "Warning", "Rejected", msg)
            metrics.ADMISSIONS.labels("rejected", "", ns).inc()
            return None
        plan = d.plan
        st.conditions = set_condition(st.conditions, "Profiled", "True", "ProfileFound",
                                      plan.profile, gen, t)
        self.event(body, "Normal", "Planned", plan.reason or f"planned on {plan.gpu_class}")
        return plan

    def _profiling_message(self, missing: Any) -> str:
        """What a Profiling job's status says: tracing, or its place in the trace queue
        (refreshed whenever a trace ends: every waiting job is reconciled then). Places
        beyond PLACES_SHOWN read alike, so a long queue costs each waiting job at most
        PLACES_SHOWN + 1 status writes, not one per trace ahead of it."""
        what = f"{missing.model} (profile {missing.id})"
        ahead = (self.profile_queue(missing, PLACES_SHOWN) if self.profile_queue is not None
                 else None)
        if not ahead:
            return f"tracing {what}"
        count = f"more than {PLACES_SHOWN}" if ahead > PLACES_SHOWN else str(ahead)
        return (f"waiting to trace {what}: {count} other profile{'s' * (ahead > 1)} "
                f"{'are' if ahead > 1 else 'is'} traced first (namespaces in turn)")

    async def _admit(self, key: Key, body: dict[str, Any], plan: Plan,
                     st: YOLOTrainingJobStatus, gen: int) -> bool:
        ns = key[0]
        uid = body["metadata"]["uid"]
        rule = pol.namespace_rule(self.world.policy, ns)
        t = now()
        # FIFO per namespace (ordering, no backfill): a job waits while an older one of its
        # namespace waits for quota, so a stream of small jobs cannot starve a big one.
        ahead = self.world.older_waiting(key, body["metadata"].get("creationTimestamp", ""))
        async with self.world.quota_lock:
            used = self.world.admitted_gpus(ns, excluding=uid)
            if ahead is None and pol.quota_allows(rule, used, plan.gpus):
                self.world.reserved[uid] = key
                st.admitted = True
                st.phase, st.message = "Admitted", f"admitted on {plan.gpu_class}"
                st.conditions = set_condition(st.conditions, "Admitted", "True", "QuotaReserved",
                                              f"{plan.gpus} GPUs of {plan.gpu_class}", gen, t)
                metrics.ADMISSIONS.labels("admitted", plan.gpu_class, ns).inc()
                metrics.PREDICTED_UTILISATION.labels(plan.gpu_class).observe(plan.utilisation)
                return True
        limit = rule.max_gpus_admitted if rule else 0
        msg = (f"namespace {ns} has {used} of {limit} GPUs admitted; this job needs "
               f"{plan.gpus}")
        if ahead is not None:
            msg += f"; {ahead[1]}, queued before it, is admitted first"
        if st.phase != "Queued":
            self.event(body, "Normal", "Queued", msg)
            metrics.ADMISSIONS.labels("queued", plan.gpu_class, ns).inc()
        st.phase, st.message = "Queued", msg
        st.conditions = set_condition(st.conditions, "Admitted", "False", "QuotaExceeded", msg,
                                      gen, t)
        return False

    def _launched(self, body: dict[str, Any], job: YOLOTrainingJob, plan: Plan,
                  st: YOLOTrainingJobStatus, outputs: storage.Storage) -> None:
        name = body["metadata"]["name"]
        self.event(body, "Normal", "Launched", f"created {plan.nodes} pods and the "
                   f"headless Service {launch.service_name(name)}; outputs on "
                   f"{outputs.description} under "
                   f"{storage.attempt_path(job.spec.output_dir, name, st.attempt)}")
        if outputs.ephemeral:
            self.event(body, "Warning", "EphemeralOutputs", storage.EPHEMERAL_MESSAGE)

    async def _children_blocked(self, key: Key, body: dict[str, Any], plan: Plan,
                                st: YOLOTrainingJobStatus, gen: int, t: str) -> str | None:
        """The job's NetworkPolicy, Service and PodGroup. Children are the job's by owner
        UID: foreign ones are reported, never adopted. Returns why this pass cannot create
        pods yet (Service, PodGroup or pod names taken), or None."""
        ns, name = key
        if key not in self.world.services:  # (once per job; AlreadyExists is fine)
            await self.api.create(kube.network_policies_path(ns), isolation.network_policy(
                body, self.monitoring_namespace, self.metrics_port))
        leftovers, foreign = children.foreign_pods(self.world, key)
        blocks = [b for b in (await children.ensure_service(self.world, self.api, key, body),
                              await self.gangs.prepare(key, body, plan)) if b is not None]
        children.report(body, st, [*[b.message for b in blocks if b.foreign], *(
            [children.pods_conflict(foreign, name)] if foreign else [])], gen, t, self.event)
        taken = {n for n in launch.desired_pod_names(name, plan) if n in leftovers + foreign}
        if blocks or taken:
            return blocks[0].message if blocks else (
                f"waiting for pods {', '.join(sorted(taken))} (not this job's) to go")
        return None

    async def _ensure_pods(self, key: Key, body: dict[str, Any], job: YOLOTrainingJob,
                           plan: Plan, st: YOLOTrainingJobStatus, existing: set[str],
                           outputs: storage.Storage | None = None) -> bool:
        ns, name = key
        info = self.world.classes.get(plan.gpu_class)
        if info is None:
            return False  # never a pod without its class's node selector
        selector, tolerations = info.node_selector, info.tolerations
        created = False
        trains = replan.launch_spec(job.spec, st.measured_inputs)  # what the plan is for
        names = launch.desired_pod_names(name, plan)
        existing = set(existing)
        if any(n not in existing for n in names):  # AlreadyExists is success
            await self.api.create(kube.service_accounts_path(ns), isolation.service_account(ns))
        if len(existing) < len(names):  # what the backend needs first (DRA claim template)
            for path, child in sharing.children(body, plan, info, st.attempt):
                await self.api.create(path, child)
        for rank, pod_name in enumerate(names):
            if pod_name in existing:
                continue
            # Gates mode: every pod of a multi-pod gang is gated until gang.check() says
            # the whole gang fits; PodGroup mode: the scheduler holds them (shape()).
            pod = launch.build_pod(body, trains, plan, rank, st.attempt, selector,
                                   tolerations, self.metrics_port, gated=plan.nodes > 1,
                                   outputs=outputs)
            pod = sharing.apply_pod(pod, plan, info, st.attempt)
            pod = self.gangs.shape(self.kueue.pod(pod, self.world.policy, body, plan.nodes),
                                   plan)
            result = await self.api.create(kube.pods_path(ns), pod)
            if result is not None:  # 409: not taken as ours; the watch shows whose it is
                self.world.pods[key][pod_name] = result
                created = True  # (a 409 is a pod an earlier pass made: launched already)
            existing.add(pod_name)
        return created

    async def _ungate(self, key: Key, gated: list[str]) -> None:
        """The gang may be placed: let the scheduler have its pods."""
        ns = key[0]
        pods = self.world.pods.get(key, {})
        for pod_name in gated:
            pod = pods.get(pod_name, {})
            gates = [g for g in pod.get("spec", {}).get("schedulingGates") or []
                     if g.get("name") != launch.GANG_GATE]
            result = await self.api.merge_patch(kube.pods_path(ns, pod_name),
                                                {"spec": {"schedulingGates": gates or None}})
            if result:
                pods[pod_name] = result

    async def _oom(self, key: Key, body: dict[str, Any], job: YOLOTrainingJob, plan: Plan,
                   st: YOLOTrainingJobStatus, ranks: list[Any], gen: int) -> None:
        ns, name = key
        t = now()
        spec = replan.planning_spec(job.spec, st.measured_inputs)  # never below the measured
        model = admission.model_id(spec.model)
        metrics.OOMS.labels(plan.gpu_class, ns).inc()
        margin = await self._learn(key, body, job, plan, st, ranks)
        limit = self.world.policy.max_replans
        ooms = sum(1 for r in st.replans if r.cause == "OutOfMemory")
        if ooms >= limit:
            msg = f"out of GPU memory after {ooms} re-plans (policy limit {limit})"
            self._fail(body, st, "OutOfMemory", msg, gen, t)
            return
        pinned = spec.model_copy(update={"gpu_class": plan.gpu_class, "plan": None})
        d = admission.decide(name, ns, pinned, self.world.policy, self.world.classes,
                             self.world.store, self.world.margin_values())
        r = feedback.next_plan(plan, d.plan, job.spec.nbs,
                               self.world.policy.levers.checkpointing)
        if r.plan is None:
            self._fail(body, st, "OutOfMemory", f"{r.reason} on {plan.gpu_class}", gen, t)
            return
        new = r.plan.model_copy(update={"margin": margin})
        # Re-estimate the halved plan at its pinned batch (same levers, no margin: this is
        # the prediction the measurement will be compared with).
        est = admission.decide(name, ns, pinned, self.world.policy, self.world.classes,
                               self.world.store, {}, batch_per_gpu=new.batch_per_gpu).plan
        if est is not None and (est.batch_per_gpu, est.checkpointing) == (
                new.batch_per_gpu, new.checkpointing):
            new = est.model_copy(update={"margin": margin, "accumulate": new.accumulate,
                                         "reason": new.reason})
        st.attempt += 1
        st.replans.append(Replan(attempt=st.attempt, reason=f"out of memory: {r.reason}",
                                 from_batch_per_gpu=plan.batch_per_gpu,
                                 to_batch_per_gpu=new.batch_per_gpu, accumulate=new.accumulate,
                                 checkpointing=new.checkpointing, time=t))
        st.plan, st.phase, st.measured = new, "Admitted", None
        st.message = f"re-planned after OOM (attempt {st.attempt}): {r.reason}"
        st.start_time = None
        st.conditions = set_condition(st.conditions, "PodsReady", "False", "OutOfMemoryReplan",
                                      st.message, gen, t)
        metrics.REPLANS.labels(plan.gpu_class, ns, "OutOfMemory").inc()
        self.event(body, "Warning", "OutOfMemoryReplan", st.message + f"; learned margin for "
                   f"{model} on {plan.gpu_class} is now {margin:.0%}")
        # The new attempt and plan are written before the old pods go: killed in between,
        # the operator deletes them as stale instead of relaunching the old plan.
        await self._write_status(key, body, st)
        await self._delete_pods(key, list(self.world.pods_of(key)))

    def _fail(self, body: dict[str, Any], st: YOLOTrainingJobStatus, reason: str, msg: str,
              gen: int, t: str) -> None:
        st.phase, st.message = "Failed", msg
        st.completion_time = st.completion_time or t
        st.conditions = set_condition(st.conditions, "Failed", "True", reason, msg, gen, t)
        self.event(body, "Warning", reason, msg)

    def _observe_error(self, body: dict[str, Any], plan: Plan, st: YOLOTrainingJobStatus) -> None:
        m = st.measured
        if m is None or m.relative_error is None:
            return
        mark = (body["metadata"]["uid"], st.attempt)
        if mark not in self.observed_errors:
            self.observed_errors.add(mark)
            metrics.ESTIMATE_ERROR.labels(plan.gpu_class).observe(m.relative_error)

    def _trust(self, body: dict[str, Any], plan: Plan,
               st: YOLOTrainingJobStatus) -> feedback.Trust:
        info = self.world.classes.get(plan.gpu_class)
        return feedback.Trust(body["metadata"]["uid"], st.attempt,
                              info.gpu.memory_bytes if info else 0)

    def _storage(self, body: dict[str, Any], job: YOLOTrainingJob) -> storage.Storage:
        return storage.plan_storage(body, job.spec, self.world.policy.outputs)

    def _dropped(self, body: dict[str, Any], st: YOLOTrainingJobStatus,
                 reasons: list[str]) -> None:
        """One Warning per dropped summary (per job UID, attempt and reason)."""
        for why in reasons:
            mark = (body["metadata"]["uid"], st.attempt, why)
            if mark not in self.dropped_seen:
                self.dropped_seen.add(mark)
                self.event(body, "Warning", "MeasurementDropped", why)

    async def _learn(self, key: Key, body: dict[str, Any], job: YOLOTrainingJob, plan: Plan,
                     st: YOLOTrainingJobStatus, oom_ranks: list[Any] | None) -> float:
        """Learn from this attempt once (margins.learn); returns the margin now in force."""
        model = replan.planning_spec(job.spec, st.measured_inputs).model
        return await margins.learn(
            self.api, self.world, (self.settings_ns, self.settings_cm),
            feedback.margin_key(key[0], admission.model_id(model), plan.gpu_class),
            feedback.observation_id(body["metadata"]["uid"], st.attempt), plan, oom_ranks,
            st.measured)

    settings_ns = "yolofit-system"
    settings_cm = "yolofit-learned-margins"

    async def _write_status(self, key: Key, body: dict[str, Any],
                            st: YOLOTrainingJobStatus) -> None:
        wire = st.model_dump(by_alias=True, mode="json")  # None -> null: merge patch removes
        try:
            result = await self.api.merge_patch(kube.job_path(*key, status=True),
                                                {"status": wire})
        except kube.ApiError as exc:
            if exc.status == 404:
                return  # the job was deleted under us: nothing left to report on
            if exc.permanent:
                self.event(body, "Warning", "StatusNotWritten", str(exc)[:1000])
            raise
        self.written[key] = st.model_copy(deep=True)
        if result:
            cached = self.world.jobs.get(key)
            if cached is not None and cached["metadata"].get("uid") == result["metadata"].get(
                    "uid"):
                self.world.put_job(key, result)
        else:
            body["status"] = wire
            if self.world.jobs.get(key) is body:
                self.world.put_job(key, body)  # keep the queue index current
        # Mirror the admitted plan into spec.plan (printer columns); status.plan is
        # authoritative and the webhooks keep spec.plan equal to it.
        if st.plan is not None and st.admitted:
            spec_plan = (body.get("spec") or {}).get("plan")
            if spec_plan != st.plan.wire():
                try:
                    await self.api.merge_patch(kube.job_path(*key),
                                               {"spec": {"plan": st.plan.wire()}})
                except kube.ApiError as exc:  # a copy for kubectl's columns: best effort
                    if exc.transient:
                        raise
                    log.warning("%s/%s: spec.plan mirror not written: %s", *key, exc)
