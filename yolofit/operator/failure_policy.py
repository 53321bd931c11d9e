"""The failure policy of a distributed job, JobSet-style: the gang lives and dies as one.
Pure: (the current attempt's pods, what the job has been through, the policy, now) -> what
to do with the whole gang.

- A disruption (the pod's DisruptionTarget condition: eviction, drain, preemption,
  taint-based deletion on node loss; kubelet eviction; exit by a signal, e.g. 143 SIGTERM or
  137 SIGKILL after the grace period; a worker deleted or deleting while its gang runs)
  restarts the whole gang as a new attempt, up to `maxRestarts`, with backoff.
- A trainer error (exit 1-127: 2 is bad data or config, 88 is CUDA OOM, which keeps its
  re-plan path) is not decided here: the pods' outcome fails the job (or re-plans it) and
  the reconciler deletes every other rank at once.
- 137 with reason OOMKilled is the container's memory limit (spec.resources.memory), not the
  GPU: restarting cannot help, the job fails naming the field.
- Pods that cannot start (ImagePullBackOff, CreateContainerConfigError, a missing PVC,
  Pending) fail the job after `podStartTimeoutSeconds`; pods the scheduler cannot place go
  back to Queued after `unschedulableTimeoutSeconds`, with the scheduler's reason.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from yolofit.operator.api import FailurePolicy, Restart
from yolofit.operator.launch import ATTEMPT_LABEL, GANG_GATE, RANK_LABEL

SIGTERM_EXIT, SIGKILL_EXIT = 143, 137
# Container waiting reasons that mean the container will not start by itself soon.
START_FAILURES = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName",
                            "CreateContainerConfigError", "CreateContainerError",
                            "RunContainerError", "ErrImageNeverPull"})
# Pod status.reason values the kubelet/node lifecycle set when it ends a pod from outside.
DISRUPTED_POD_REASONS = frozenset({"Evicted", "Preempting", "NodeLost", "Shutdown",
                                   "Terminated", "NodeShutdown", "UnexpectedAdmissionError"})
MISSING_VOLUME = re.compile(r'persistentvolumeclaim "[^"]+" not found')

Action = Literal["none", "restart", "fail", "requeue"]


@dataclass(frozen=True)
class PodFacts:
    """What the failure policy needs of one pod."""

    name: str
    rank: int
    attempt: int
    phase: str
    gated: bool = False
    deleting: bool = False
    started: bool = False  # a container has run (running or terminated)
    exit_code: int | None = None
    exit_reason: str = ""  # the container's terminated.reason (OOMKilled, Error, ...)
    disruption: str = ""  # why it was ended from outside (DisruptionTarget, Evicted, ...)
    waiting: str = ""  # a container's waiting reason (ImagePullBackOff, ...)
    detail: str = ""  # the message that goes with disruption / waiting / unschedulable
    unschedulable: bool = False
    since: float | None = None  # epoch seconds the pod has been in its current state since


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str = ""  # CamelCase, for the condition and the Event
    message: str = ""
    pod: str = ""
    recheck: float | None = None  # "none" with pods not started yet: look again in (s)


NOTHING = Decision("none")


def epoch(ts: str | None) -> float | None:
    """Seconds since the epoch of a Kubernetes RFC 3339 time; None when absent or bad."""
    if not ts:
        return None
    try:
        return dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), {})


def pod_facts(pod: Mapping[str, Any]) -> PodFacts:
    meta, spec, st = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status") or {}
    labels = meta.get("labels") or {}
    exit_code, exit_reason, waiting, detail, started = None, "", "", "", False
    for cs in st.get("containerStatuses") or []:
        state = cs.get("state") or {}
        term = state.get("terminated") or (cs.get("lastState") or {}).get("terminated")
        if term:
            exit_code, exit_reason, started = term.get("exitCode"), term.get("reason") or "", True
        if state.get("running"):
            started = True
        if (state.get("waiting") or {}).get("reason") in START_FAILURES:
            waiting = state["waiting"]["reason"]
            detail = state["waiting"].get("message") or ""
    disruption = ""
    target = _condition(st, "DisruptionTarget")
    if target.get("status") == "True":
        disruption = target.get("reason") or "DisruptionTarget"
        detail = target.get("message") or detail
    elif st.get("reason") in DISRUPTED_POD_REASONS:
        disruption, detail = st["reason"], st.get("message") or detail
    scheduled = _condition(st, "PodScheduled")
    unschedulable = scheduled.get("status") == "False" and scheduled.get(
        "reason") == "Unschedulable"
    if unschedulable and not disruption:
        detail = scheduled.get("message") or detail
    since = epoch(scheduled.get("lastTransitionTime")) if unschedulable else None
    return PodFacts(
        name=meta.get("name", ""), rank=int(labels.get(RANK_LABEL, 0)),
        attempt=int(labels.get(ATTEMPT_LABEL, 0)), phase=st.get("phase", "Pending"),
        gated=GANG_GATE in [g.get("name") for g in spec.get("schedulingGates") or []],
        deleting=bool(meta.get("deletionTimestamp")), started=started or st.get("phase") in (
            "Running", "Succeeded"),
        exit_code=exit_code, exit_reason=exit_reason, disruption=disruption, waiting=waiting,
        detail=detail, unschedulable=unschedulable,
        since=since if since is not None else epoch(meta.get("creationTimestamp")))


def _disrupted(p: PodFacts) -> str:
    """Why `p` was ended from outside, or ''."""
    if p.disruption:
        return p.disruption
    if p.deleting:
        return "Deleted"
    if p.phase == "Failed" and p.exit_code is not None and p.exit_code > 128 and not (
            p.exit_code == SIGKILL_EXIT and p.exit_reason == "OOMKilled"):
        return "SIGTERM" if p.exit_code == SIGTERM_EXIT else f"Signal{p.exit_code - 128}"
    return ""


def restart_backoff(restarts: int, policy: FailurePolicy) -> float:
    """Seconds to wait before relaunching after the `restarts`-th restart (1-based)."""
    if restarts <= 0:
        return 0.0
    return float(min(policy.restart_backoff_seconds * 2 ** (restarts - 1),
                     policy.max_restart_backoff_seconds))


def relaunch_wait(restarts: Sequence[Restart], attempt: int, policy: FailurePolicy,
                  now: float) -> float:
    """Seconds left before the current attempt may launch (0 = now): only an attempt that
    began with a restart waits, for the restart backoff."""
    if not restarts or restarts[-1].attempt != attempt:
        return 0.0
    at = epoch(restarts[-1].time)
    if at is None:
        return 0.0
    return max(at + restart_backoff(len(restarts), policy) - now, 0.0)


def decide(pods: Iterable[PodFacts], expected: int, restarts: int, policy: FailurePolicy,
           now: float, ran_whole: bool = True) -> Decision:
    """What to do with the gang whose current attempt has `pods` (of `expected`), after
    `restarts` restarts so far. `ran_whole`: every pod of this attempt has run (the job was
    Running); before that a missing rank is one not created yet (e.g. its name still held by
    the terminating pod of the attempt before), not a deleted one."""
    pods = sorted(pods, key=lambda p: p.rank)
    if not pods:
        return NOTHING
    if all(p.phase == "Succeeded" for p in pods):
        return NOTHING
    cause = next(((p, why) for p in pods if (why := _disrupted(p))), None)
    if cause is None and ran_whole and len(pods) < expected and any(p.started for p in pods):
        present = {p.rank for p in pods}
        rank = min(set(range(expected)) - present)
        gone = PodFacts(name=f"rank {rank}", rank=rank, attempt=pods[0].attempt,
                        phase="Unknown")
        cause = (gone, "WorkerDeleted")
    if cause is not None:
        p, why = cause
        what = _describe(p, why)
        if restarts >= policy.max_restarts:
            return Decision("fail", "MaxRestartsReached", f"{what}; the gang was restarted "
                            f"{restarts} times already (failurePolicy.maxRestarts "
                            f"{policy.max_restarts})", p.name)
        reason = "WorkerDeleted" if why in ("WorkerDeleted", "Deleted") else "Disrupted"
        return Decision("restart", reason, f"{what}; restarting the whole gang (restart "
                        f"{restarts + 1} of at most {policy.max_restarts})", p.name)
    for p in pods:
        if p.phase == "Failed" and p.exit_code == SIGKILL_EXIT and p.exit_reason == "OOMKilled":
            return Decision("fail", "HostOutOfMemory", f"{p.name} was killed for exceeding "
                            f"its container memory limit (exit 137, OOMKilled): raise "
                            f"spec.resources.memory; GPU memory was not the cause", p.name)
    return _stuck(pods, policy, now)


def _describe(p: PodFacts, why: str) -> str:
    if why == "WorkerDeleted":
        return f"{p.name} of the running gang was deleted"
    if why == "Deleted":
        return f"{p.name} is being deleted while its gang runs"
    if why.startswith("SIGTERM") or why.startswith("Signal"):
        return f"{p.name} exited with code {p.exit_code} ({why}: stopped from outside)"
    return f"{p.name} was disrupted ({why}" + (f": {p.detail}" if p.detail else "") + ")"


def _stuck(pods: Sequence[PodFacts], policy: FailurePolicy, now: float) -> Decision:
    """Pods of the attempt that have not started for longer than the policy allows."""
    recheck: float | None = None
    for p in pods:
        if p.started or p.gated or p.deleting or p.phase not in ("Pending", "Unknown"):
            continue
        age = now - p.since if p.since is not None else 0.0
        limit = (policy.unschedulable_timeout_seconds if p.unschedulable and not
                 MISSING_VOLUME.search(p.detail) else policy.pod_start_timeout_seconds)
        if age < limit:
            recheck = min(recheck if recheck is not None else limit, limit - age)
            continue
        if p.waiting and age >= policy.pod_start_timeout_seconds:
            return Decision("fail", p.waiting, f"{p.name} could not start for {age:.0f}s "
                            f"({p.waiting}" + (f": {p.detail}" if p.detail else "") + ")",
                            p.name)
        if p.unschedulable and MISSING_VOLUME.search(p.detail) and (
                age >= policy.pod_start_timeout_seconds):
            return Decision("fail", "VolumeMissing", f"{p.name} could not be placed for "
                            f"{age:.0f}s: {p.detail} (spec.volumes names a "
                            f"PersistentVolumeClaim that does not exist)", p.name)
        if p.unschedulable and age >= policy.unschedulable_timeout_seconds:
            return Decision("requeue", "Unschedulable", f"{p.name} could not be placed for "
                            f"{age:.0f}s: {p.detail}", p.name)
        if (not p.unschedulable and not p.waiting
                and age >= policy.pod_start_timeout_seconds):
            return Decision("fail", "PodStartTimeout", f"{p.name} did not start within "
                            f"{policy.pod_start_timeout_seconds:.0f}s of its creation",
                            p.name)
    return Decision("none", recheck=recheck) if recheck is not None else NOTHING
