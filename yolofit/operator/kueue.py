"""Kueue integration: yolofit decides *what* a job needs, Kueue decides *when* it runs.

A job is Kueue-managed when its namespace's policy rule names a LocalQueue (`kueueQueue`)
or the job carries the label `kueue.x-k8s.io/queue-name`. Then:

- yolofit plans exactly as before (classes, levers, fit). Where the namespace's rule names
  the queue, its own per-namespace quota (`maxGpusAdmitted`) is not applied: Kueue's
  ClusterQueue quota is. A job that selects Kueue by its label alone is held to both (the
  label is the tenant's; the rule is the platform's).
- The gang's pods are created as a Kueue *plain pod group*: labels queue-name and
  pod-group-name, annotation pod-group-total-count, requests from the plan (launch.py), the
  plan's class as node selector, so Kueue can only assign the flavor whose nodeLabels match
  (the flavors are rendered from the same `nvidia.com/gpu.product` labels, see
  kueue_objects.py).
- Gates: Kueue's own gate `kueue.x-k8s.io/admission` is set here at creation (Kueue's
  webhook sets it too; setting it ourselves means a cluster without Kueue keeps the pods
  gated instead of running them past every quota). Kueue builds the Workload only when all
  `total-count` pods exist and lifts the gate on all of them at once, which is exactly what
  yolofit's own gang gate did, so that gate is not added to Kueue pods.
  Placement of the whole gang on nodes is not Kueue's business (quota is not node fit);
  that stays with the scheduler's gang support.
- Planning before quota: the first attempt's pods carry `kueue.x-k8s.io/admission-gated-by:
  yolofit.io/plan`, so Kueue queues the Workload but reserves no quota until yolofit lifts
  the gate, which it does once the whole gang exists with the plan it wrote to status.
- Kueue's admission is the go signal; status mirrors the Workload (QuotaReserved, Admitted,
  Evicted, Preempted with Kueue's reason and message) and `status.kueue.workload` names it.
- Eviction (preemption, a stopped queue, ...): Kueue deletes the pods and does not
  recreate them. Each new eviction in the Workload's `schedulingStats` makes yolofit start
  a new attempt (attempt + 1, the contract the trainer resumes from): the gang is recreated
  under the same pod-group name, joins the requeued Workload and waits for Kueue again.
- A job that ends Failed marks its pods `retriable-in-group: false`, so Kueue finishes the
  Workload and frees the quota (a retriable group would hold it waiting for replacements).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from yolofit.operator import kube
from yolofit.operator import policy as pol
from yolofit.operator.api import GPUCapacityPolicySpec, KueueStatus, YOLOTrainingJobStatus
from yolofit.operator.launch import ATTEMPT_LABEL, GANG_GATE
from yolofit.operator.status import set_condition

log = logging.getLogger("yolofit.operator")

GROUP = "kueue.x-k8s.io"
VERSION = "v1beta2"
WORKLOADS = (GROUP, VERSION, "workloads")
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
GROUP_LABEL = "kueue.x-k8s.io/pod-group-name"
TOTAL_COUNT = "kueue.x-k8s.io/pod-group-total-count"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
GATED_BY = "kueue.x-k8s.io/admission-gated-by"
RETRIABLE = "kueue.x-k8s.io/retriable-in-group"
KUEUE_GATE = "kueue.x-k8s.io/admission"
MANAGED_FINALIZER = "kueue.x-k8s.io/managed"
PLAN_GATE = "yolofit.io/plan"
# Workload conditions mirrored onto the job, in this order.
MIRRORED = ("QuotaReserved", "Admitted", "Evicted", "Preempted")


def workload_path(namespace: str, name: str = "") -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/workloads" + (
        f"/{name}" if name else "")


# ---- which jobs, which group -------------------------------------------------------------

def kueue_holds_quota(policy: GPUCapacityPolicySpec, namespace: str) -> bool:
    """The namespace's rule hands its GPU quota to Kueue (names a `kueueQueue`). A job that
    only carries the queue label is queued by Kueue *and* held to yolofit's quota: a tenant's
    label must not swap the platform's `maxGpusAdmitted` for a LocalQueue with more."""
    return queue_name(policy, namespace, {}) is not None  # a job without the label


def queue_name(policy: GPUCapacityPolicySpec, namespace: str,
               job: Mapping[str, Any]) -> str | None:
    """The LocalQueue a job goes to, or None when Kueue does not manage it. The job's
    label wins over the namespace rule."""
    labels = (job.get("metadata") or {}).get("labels") or {}
    if labels.get(QUEUE_LABEL):
        return str(labels[QUEUE_LABEL])
    rule = pol.namespace_rule(policy, namespace)
    return rule.kueue_queue if rule is not None and rule.kueue_queue else None


def group_name(job: str, uid: str) -> str:
    """Pod-group (and so Workload) name: unique per job object, stable across attempts, so
    a recreated gang joins its requeued Workload; a deleted-and-recreated job of the same
    name gets a new one. At most 48 + 9 characters (launch.MAX_JOB_NAME)."""
    return f"{job}-{uid.replace('-', '')[:8]}"


def job_of_group(group: str) -> tuple[str, str]:
    """(job name, uid prefix) of a pod-group name made by `group_name`."""
    job, _, uid8 = group.rpartition("-")
    return job, uid8


def as_pod_group(pod: dict[str, Any], *, queue: str, group: str, total: int,
                 priority_class: str | None = None, gated_by_plan: bool = False,
                 ) -> dict[str, Any]:
    """A launch.build_pod() pod turned into a member of a Kueue plain pod group."""
    p = copy.deepcopy(pod)
    meta = p["metadata"]
    labels, annotations = meta.setdefault("labels", {}), meta.setdefault("annotations", {})
    labels[QUEUE_LABEL] = queue
    labels[GROUP_LABEL] = group
    annotations[TOTAL_COUNT] = str(total)
    if priority_class:
        labels[PRIORITY_LABEL] = priority_class
    if gated_by_plan:
        annotations[GATED_BY] = PLAN_GATE
    gates = [g for g in p["spec"].get("schedulingGates") or [] if g.get("name") != GANG_GATE]
    if not any(g.get("name") == KUEUE_GATE for g in gates):
        gates.append({"name": KUEUE_GATE})
    p["spec"]["schedulingGates"] = gates
    return p


# ---- what the Workload says --------------------------------------------------------------

@dataclass(frozen=True)
class Cond:
    status: str
    reason: str
    message: str


@dataclass(frozen=True)
class WorkloadView:
    """What yolofit reads from a Kueue Workload (v1beta2)."""

    name: str
    uid: str = ""
    exists: bool = False
    conditions: dict[str, Cond] = field(default_factory=dict)
    cluster_queue: str = ""
    flavors: tuple[str, ...] = ()
    evictions: int = 0
    gated_by: str = ""

    def is_true(self, type_: str) -> bool:
        c = self.conditions.get(type_)
        return c is not None and c.status == "True"

    @property
    def quota_reserved(self) -> bool:
        return self.is_true("QuotaReserved")

    @property
    def admitted(self) -> bool:
        return self.is_true("Admitted")

    @property
    def finished(self) -> bool:
        return self.is_true("Finished")


def workload_view(name: str, wl: Mapping[str, Any] | None) -> WorkloadView:
    if not wl:
        return WorkloadView(name=name)
    meta, status = wl.get("metadata") or {}, wl.get("status") or {}
    conds = {c["type"]: Cond(c.get("status", "Unknown"), c.get("reason", ""),
                             c.get("message", ""))
             for c in status.get("conditions") or [] if c.get("type")}
    admission = status.get("admission") or {}
    flavors = sorted({f for ps in admission.get("podSetAssignments") or []
                      for f in (ps.get("flavors") or {}).values()})
    evictions = sum(int(e.get("count", 0)) for e in
                    (status.get("schedulingStats") or {}).get("evictions") or [])
    return WorkloadView(name=name, uid=meta.get("uid", ""), exists=True, conditions=conds,
                        cluster_queue=admission.get("clusterQueue", ""),
                        flavors=tuple(flavors), evictions=evictions,
                        gated_by=(meta.get("annotations") or {}).get(GATED_BY, ""))


def new_evictions(ks: KueueStatus, view: WorkloadView) -> int:
    """Evictions of the Workload that yolofit has not answered with a new attempt yet.
    Counted per Workload UID: a Workload garbage-collected with its last pods and made
    anew for the next attempt starts from zero."""
    if not view.exists:
        return 0
    handled = ks.evictions if ks.workload_uid == view.uid else 0
    return max(0, view.evictions - handled)


def eviction_text(view: WorkloadView) -> str:
    ev = view.conditions.get("Evicted")
    pre = view.conditions.get("Preempted")
    reason = (ev.reason if ev else "") or "Evicted"
    detail = (pre.message if pre and pre.status == "True" and pre.message else
              ev.message if ev else "")
    return f"{reason}: {detail}" if detail else reason


@dataclass(frozen=True)
class Overlay:
    """The job's phase and message while Kueue has not admitted it (phase None: the pods'
    phase stands)."""

    phase: str | None
    message: str


def overlay(view: WorkloadView, queue: str, nodes: int) -> Overlay:
    """Pure: what the job shows for a Workload in this state."""
    if not view.exists:
        return Overlay("Queued", f"waiting for Kueue to create Workload {view.name} for the "
                       f"{nodes} pods (LocalQueue {queue}); the pods stay gated until then")
    if view.finished:
        return Overlay(None, "")
    if not view.quota_reserved:
        if view.gated_by:
            return Overlay("Queued", f"Kueue holds quota reservation: admission gated by "
                           f"{view.gated_by}")
        c = view.conditions.get("QuotaReserved")
        msg = c.message if c and c.message else "waiting in Kueue's queue"
        return Overlay("Queued", f"Kueue (LocalQueue {queue}): {msg}")
    if not view.admitted:
        c = view.conditions.get("Admitted")
        detail = f": {c.message}" if c and c.message else ""
        return Overlay("Queued", f"quota reserved in ClusterQueue {view.cluster_queue}; "
                       f"waiting for admission checks{detail}")
    return Overlay(None, "")


def mirror_conditions(st: YOLOTrainingJobStatus, view: WorkloadView, gen: int,
                      t: str) -> None:
    """Copy the Workload's QuotaReserved/Admitted/Evicted/Preempted onto the job."""
    for type_ in MIRRORED:
        c = view.conditions.get(type_)
        if c is None:
            if type_ in ("QuotaReserved", "Admitted"):
                st.conditions = set_condition(st.conditions, type_, "False", "Pending",
                                              "no Workload yet" if not view.exists else
                                              "not yet", gen, t)
            continue
        st.conditions = set_condition(st.conditions, type_, c.status, c.reason or type_,
                                      f"Kueue Workload {view.name}: {c.message}"[:1000], gen, t)


def kueue_status(old: KueueStatus | None, queue: str, group: str,
                 view: WorkloadView) -> KueueStatus:
    ks = (old or KueueStatus(queue_name=queue, workload=group)).model_copy()
    ks.queue_name, ks.workload = queue, group
    ks.quota_reserved, ks.admitted = view.quota_reserved, view.admitted
    if view.cluster_queue:
        ks.cluster_queue = view.cluster_queue
    if view.flavors:
        ks.flavor = ",".join(view.flavors)
    return ks


# ---- the hook the reconciler calls -------------------------------------------------------

class KueueHook:
    """Kueue state the reconciler needs (Workloads from the operator's watch) and the few
    steps it runs for Kueue-managed jobs. Every method is a no-op for other jobs."""

    def __init__(self) -> None:
        self.workloads: dict[tuple[str, str], dict[str, Any]] = {}

    # -- watch -----------------------------------------------------------------------------
    def on_workload(self, event: Mapping[str, Any],
                    jobs: Mapping[tuple[str, str], Mapping[str, Any]]) -> tuple[str, str] | None:
        """Cache a Workload event; the key of the yolofit job it belongs to, if any."""
        obj = event.get("object") or {}
        meta = obj.get("metadata") or {}
        ns, name = meta.get("namespace", ""), meta.get("name", "")
        if event.get("type") == "DELETED":
            cached = self.workloads.get((ns, name))
            if cached is not None and (cached.get("metadata") or {}).get("uid") == meta.get(
                    "uid"):
                del self.workloads[(ns, name)]
        else:
            self.workloads[(ns, name)] = dict(obj)
        job, uid8 = job_of_group(name)
        body = jobs.get((ns, job))
        if body is None or not uid8:
            return None
        if group_name(job, (body.get("metadata") or {}).get("uid", "")) != name:
            return None
        return (ns, job)

    def view(self, namespace: str, group: str) -> WorkloadView:
        return workload_view(group, self.workloads.get((namespace, group)))

    # -- steps -------------------------------------------------------------------------------
    def pod(self, pod: dict[str, Any], policy: GPUCapacityPolicySpec, job: Mapping[str, Any],
            nodes: int) -> dict[str, Any]:
        """launch.build_pod()'s pod, as a pod-group member when Kueue manages the job."""
        meta = job["metadata"]
        queue = queue_name(policy, meta["namespace"], job)
        if queue is None:
            return pod
        group = group_name(meta["name"], meta["uid"])
        # Gate on the plan only while no Workload exists: Kueue refuses to add the
        # annotation to an existing Workload (gates can only be removed).
        first = not self.view(meta["namespace"], group).exists
        priority = ((meta.get("labels") or {}).get(PRIORITY_LABEL))
        return as_pod_group(pod, queue=queue, group=group, total=nodes,
                            priority_class=priority, gated_by_plan=first)

    def evicted(self, st: YOLOTrainingJobStatus, queue: str, job: Mapping[str, Any]
                ) -> str | None:
        """Record the Workload in status; the eviction text when Kueue evicted the current
        attempt since yolofit last looked (the caller starts a new attempt)."""
        meta = job["metadata"]
        group = group_name(meta["name"], meta["uid"])
        view = self.view(meta["namespace"], group)
        ks = kueue_status(st.kueue, queue, group, view)
        fresh = new_evictions(ks, view)
        if view.exists:
            ks.workload_uid, ks.evictions = view.uid, view.evictions
        if fresh > 0 and st.start_time is not None:
            ks.restarts += 1
            ks.last_eviction = eviction_text(view)
            st.kueue = ks
            return ks.last_eviction
        st.kueue = ks
        return None

    def settle(self, st: YOLOTrainingJobStatus, job: Mapping[str, Any],
               policy: GPUCapacityPolicySpec, gen: int, t: str) -> None:
        """End of a pass: a planned, live Kueue job shows its Workload's state (phase,
        message, conditions) over what its pods alone would say."""
        meta = job["metadata"]
        queue = queue_name(policy, meta["namespace"], job)
        if queue is None or st.plan is None or st.phase in ("Succeeded", "Failed",
                                                             "Profiling", "Pending"):
            return
        nodes = st.plan.nodes
        group = group_name(meta["name"], meta["uid"])
        view = self.view(meta["namespace"], group)
        st.kueue = kueue_status(st.kueue, queue, group, view)
        mirror_conditions(st, view, gen, t)
        o = overlay(view, queue, nodes)
        if o.phase is not None and st.phase not in ("Succeeded", "Failed"):
            st.phase, st.message = o.phase, o.message  # type: ignore[assignment]

    async def restart(self, api: kube.Kube, event: Any, pods: Mapping[str, dict[str, Any]],
                      job: Mapping[str, Any], st: YOLOTrainingJobStatus, why: str, gen: int,
                      t: str) -> None:
        """Kueue evicted the gang and deleted (or is deleting) its pods, and will not bring
        them back: start the next attempt (the trainer resumes from its checkpoint). The
        reconciler recreates the pods once the old ones are gone; they wait for Kueue."""
        st.attempt += 1
        st.start_time, st.measured = None, None
        st.phase = "Queued"
        st.message = f"evicted by Kueue ({why}); the gang restarts as attempt {st.attempt}"
        st.conditions = set_condition(st.conditions, "PodsReady", "False", "EvictedByKueue",
                                      st.message, gen, t)
        event(job, "Warning", "EvictedByKueue", st.message)
        ns = job["metadata"]["namespace"]
        for name, pod in list(pods.items()):
            meta = pod.get("metadata") or {}
            if not meta.get("deletionTimestamp"):  # this pod only, not a newer one of the name
                await api.delete(kube.pods_path(ns, name), str(meta.get("uid", "")))

    async def lift_plan_gate(self, api: kube.Kube, namespace: str,
                             pods: dict[str, dict[str, Any]]) -> None:
        """The whole gang exists with the plan in status: let Kueue reserve quota."""
        for name, pod in pods.items():
            ann = (pod.get("metadata") or {}).get("annotations") or {}
            if ann.get(GATED_BY) != PLAN_GATE or (pod.get("metadata") or {}).get(
                    "deletionTimestamp"):
                continue
            result = await _patch_pod(api, namespace, name, {GATED_BY: None})
            if result:
                pods[name] = result

    async def release_superseded(self, api: kube.Kube, namespace: str,
                                 pods: Mapping[str, dict[str, Any]], attempt: int) -> None:
        """Let go of Kueue's finalizer on deleted, stopped pods of an earlier attempt.

        Kueue holds a group's pods with `kueue.x-k8s.io/managed` and releases an inactive
        one only when a *replacement* pod exists; yolofit's replacements reuse the names
        (`<job>-worker-<i>`, stable DNS), so they cannot exist before the old pods are
        gone. Once a superseded pod is deleting and no longer running, Kueue has nothing
        left to account for it (an inactive pod holds no quota), so yolofit removes the
        finalizer itself, as Kueue's own finalizePods would for a replaced pod."""
        for name, pod in pods.items():
            meta = pod.get("metadata") or {}
            labels = meta.get("labels") or {}
            finalizers = meta.get("finalizers") or []
            if (not labels.get(GROUP_LABEL) or not meta.get("deletionTimestamp")
                    or MANAGED_FINALIZER not in finalizers
                    or labels.get(ATTEMPT_LABEL) == str(attempt)):
                continue
            if (pod.get("status") or {}).get("phase") == "Running":
                continue  # still stopping: a kubelet (or kwok) reports it Failed first
            i = finalizers.index(MANAGED_FINALIZER)
            ops = [{"op": "test", "path": f"/metadata/finalizers/{i}",
                    "value": MANAGED_FINALIZER},
                   {"op": "remove", "path": f"/metadata/finalizers/{i}"}]
            try:
                await api.call("PATCH", kube.pods_path(namespace, name), ops,
                               "application/json-patch+json")
            except kube.ApiError as exc:
                if exc.status not in (404, 409, 422):  # gone, or changed: next pass
                    raise

    async def finish(self, api: kube.Kube, namespace: str, phase: str,
                     pods: Mapping[str, dict[str, Any]]) -> None:
        """A Failed job's group is not retried: its pods are marked so, and ranks still
        running are stopped, so Kueue finishes the Workload and frees the quota (a retriable
        group would hold it, waiting for replacement pods)."""
        if phase != "Failed":
            return
        for name, pod in pods.items():
            meta = pod.get("metadata") or {}
            if not (meta.get("labels") or {}).get(GROUP_LABEL) or meta.get("deletionTimestamp"):
                continue
            if (meta.get("annotations") or {}).get(RETRIABLE) != "false":
                await _patch_pod(api, namespace, name, {RETRIABLE: "false"})
            if (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                await api.delete(kube.pods_path(namespace, name), str(meta.get("uid", "")))


async def _patch_pod(api: kube.Kube, namespace: str, name: str,
                     annotations: dict[str, str | None]) -> Any:
    """Merge-patch a pod's annotations; None when the pod is gone already."""
    try:
        return await api.merge_patch(kube.pods_path(namespace, name),
                                     {"metadata": {"annotations": annotations}})
    except kube.ApiError as exc:
        if exc.status == 404:
            return None
        raise

