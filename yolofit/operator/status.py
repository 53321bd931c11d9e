"""A job's phase, conditions and measurements, computed from its pods. Pure.

The reconciler observes (job status, pods of the current attempt) and writes what
`compute()` returns; nothing here talks to the API. Conditions follow the API conventions:
`type`, `status` True/False/Unknown, CamelCase `reason`, a message, `lastTransitionTime`
kept while the status does not change, and `observedGeneration`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from yolofit.operator import feedback
from yolofit.operator.api import Condition, Plan, RankMeasurement
from yolofit.operator.failure_policy import epoch
from yolofit.operator.launch import ATTEMPT_LABEL, GANG_GATE, RANK_LABEL, waiting_message


@dataclass(frozen=True)
class PodView:
    """What the reconciler needs of one pod."""

    name: str
    rank: int
    attempt: int
    phase: str  # Pending, Running, Succeeded, Failed, Unknown
    gated: bool
    node: str
    exit_code: int | None
    message: str
    deleting: bool = False
    unschedulable: str = ""  # the scheduler's message while it cannot place the pod
    owner_uid: str = ""  # UID of the pod's controller ownerReference
    uid: str = ""  # the pod's own UID: deletes carry it, so a newer pod of the name is spared
    finished_at: float | None = None  # when its container terminated (epoch seconds)


def controller_uid(meta: Mapping[str, Any]) -> str:
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid", ""))
    return ""


def _label_int(labels: Mapping[str, Any], key: str) -> int:
    try:
        return int(labels.get(key, 0))
    except (TypeError, ValueError):
        return -1  # not a label yolofit wrote


def pod_view(pod: Mapping[str, Any]) -> PodView:
    meta, spec, st = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status") or {}
    labels = meta.get("labels") or {}
    exit_code, message, finished_at = None, "", None
    for cs in st.get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated") or (
            cs.get("lastState") or {}).get("terminated")
        if term:
            exit_code = term.get("exitCode")
            message = term.get("message") or ""
            finished_at = epoch(term.get("finishedAt"))
    gates = [g.get("name") for g in spec.get("schedulingGates") or []]
    unschedulable = next((c.get("message") or c.get("reason", "") for c in
                          st.get("conditions") or [] if c.get("type") == "PodScheduled"
                          and c.get("status") == "False"
                          and c.get("reason") == "Unschedulable"), "")
    return PodView(name=meta.get("name", ""), rank=_label_int(labels, RANK_LABEL),
                   attempt=_label_int(labels, ATTEMPT_LABEL), phase=st.get("phase", "Pending"),
                   gated=GANG_GATE in gates, node=spec.get("nodeName") or "",
                   exit_code=exit_code, message=message,
                   deleting=bool(meta.get("deletionTimestamp")),
                   unschedulable=unschedulable if not spec.get("nodeName") else "",
                   owner_uid=controller_uid(meta), uid=str(meta.get("uid", "")),
                   finished_at=finished_at)


def set_condition(conditions: list[Condition], type_: str, status: str, reason: str,
                  message: str, generation: int, now: str) -> list[Condition]:
    """Conditions with `type_` set; its transition time moves only when status changes."""
    out, found = [], False
    for c in conditions:
        if c.type != type_:
            out.append(c)
            continue
        found = True
        when = c.last_transition_time if c.status == status else now
        out.append(Condition(type=type_, status=status, reason=reason, message=message,  # type: ignore[arg-type]
                             last_transition_time=when, observed_generation=generation))
    if not found:
        out.append(Condition(type=type_, status=status, reason=reason, message=message,  # type: ignore[arg-type]
                             last_transition_time=now, observed_generation=generation))
    return out


@dataclass(frozen=True)
class PodsOutcome:
    """What the pods of one attempt say."""

    phase: str  # Admitted (launched, not all running), Running, Succeeded, Failed
    reason: str
    message: str
    oom: bool
    ranks: list[RankMeasurement]
    reports: list[feedback.PodReport] = field(default_factory=list)  # trusted summaries
    dropped: list[str] = field(default_factory=list)  # why summaries were not counted
    recheck: float | None = None  # look again in (s): a failed rank's peers may yet report


def read_reports(pods: Iterable[PodView], trust: feedback.Trust | None
                 ) -> tuple[list[PodView], list[feedback.PodReport], list[str]]:
    """The pods that are the job's, their trusted summaries, and what was dropped (why)."""
    kept, reports, dropped = [], [], []
    for p in pods:
        report = feedback.parse_summary(p.message, max(p.rank, 0), p.name)
        why = ""
        if trust is not None and p.owner_uid != trust.job_uid:
            why = feedback.screen(report or feedback.PodReport(pod=p.name), p.owner_uid,
                                  p.attempt, trust)
            dropped.append(why)
            continue  # not the job's pod: neither its summary nor its exit code counts
        kept.append(p)
        if report is None:
            continue
        if trust is not None:
            why = feedback.screen(report, p.owner_uid, p.attempt, trust)
        elif report.rejected:
            why = f"summary of pod {p.name} dropped: {report.rejected}"
        if why:
            dropped.append(why)
        else:
            reports.append(report)
    return kept, reports, dropped


def summarize(pods: Iterable[PodView], plan: Plan, trust: feedback.Trust | None = None,
              now: float | None = None) -> PodsOutcome:
    """The attempt's outcome. With `trust`, only pods the job controls count, and only their
    summaries that pass feedback.screen."""
    pods, reports, dropped = read_reports(sorted(pods, key=lambda p: p.rank), trust)
    ranks = sorted((r for rep in reports for r in rep.ranks), key=lambda r: r.rank)
    outcome = _outcome(pods, plan, reports, ranks, time.time() if now is None else now)
    return replace(outcome, reports=reports, dropped=dropped)


# A rank that runs out of GPU memory (or fails otherwise) takes its peers down with it: their
# collectives fail with a lost connection, and the kubelets report the pods in any order. A
# job whose failed ranks all died of a lost peer waits this long after the first of them
# finished for the ranks still running to say why, before it fails (an OOM among them
# re-plans the job instead). A rank that failed on its own (loss is NaN) fails it at once.
PEER_SETTLE_SECONDS = 30.0
PEER_LOST = re.compile(r"closed by peer|reset by peer|Broken pipe|DistBackendError|"
                       r"DistNetworkError|DistStoreError|NCCL|ProcessGroup|gloo|"
                       r"collective operation timeout", re.IGNORECASE)


# A failed pod's condition reason by its summary's exit reason. data-denser and
# model-differs end here only when replan.py found nothing new to plan with.
_FAILED_REASONS = {"data-missing": "DataMissing", "data-denser": "DataDenser",
                   "model-differs": "ModelDiffers"}


def _outcome(pods: list[PodView], plan: Plan, reports: list[feedback.PodReport],
             ranks: list[RankMeasurement], now: float) -> PodsOutcome:
    by_pod = {rep.pod: rep for rep in reports}
    failed = [p for p in pods if p.phase == "Failed"]
    if failed:
        oom = [p for p in failed if p.exit_code == feedback.OOM_EXIT_CODE or (
            p.name in by_pod and by_pod[p.name].exit_reason == "oom")]
        if oom:
            return PodsOutcome("Failed", "OutOfMemory", f"{oom[0].name} ran out of GPU memory "
                               f"at batch {plan.batch_per_gpu} per GPU", True, ranks)
        p = failed[0]
        summary = by_pod.get(p.name)
        detail = summary.message if summary and summary.message else (
            p.message.strip()[-300:] if p.message and summary is None else "")
        reason = _FAILED_REASONS.get(summary.exit_reason if summary else "", "TrainerFailed")
        if p.exit_code == feedback.BAD_INPUT_EXIT_CODE:
            reason = "DataMissing"
        text = f"{p.name} exited with code {p.exit_code}" + (f": {detail}" if detail else "")
        wait = _peer_wait(pods, failed, by_pod, now)
        if wait:
            return PodsOutcome("Running", "RankFailed", f"{text}; the other ranks have "
                               f"{PEER_SETTLE_SECONDS:.0f}s from it to report (a rank that "
                               f"runs out of GPU memory fails its peers too)", False, ranks,
                               recheck=wait)
        return PodsOutcome("Failed", reason, text, False, ranks)
    expected = plan.nodes
    if len(pods) == expected and all(p.phase == "Succeeded" for p in pods):
        return PodsOutcome("Succeeded", "Completed", f"all {expected} pods completed", False,
                           ranks)
    running = [p for p in pods if p.phase in ("Running", "Succeeded")]
    if len(pods) == expected and len(running) == expected:
        return PodsOutcome("Running", "AllPodsRunning", f"{expected} pods running on "
                           f"{plan.gpu_class}", False, ranks)
    stuck = [p for p in pods if p.unschedulable and p.phase == "Pending"]
    if stuck:  # the scheduler's own words, e.g. "cannot allocate all claims"
        return PodsOutcome("Admitted", "Unschedulable", f"{stuck[0].name} is unschedulable: "
                           f"{stuck[0].unschedulable}", False, ranks)
    return PodsOutcome("Admitted", "WaitingForPods", waiting_message(plan), False, ranks)


def _peer_wait(pods: list[PodView], failed: list[PodView],
               by_pod: Mapping[str, feedback.PodReport], now: float) -> float:
    """Seconds left to wait for ranks still running after `failed`, which all lost a peer
    (0: decide now)."""
    if not any(p.phase in ("Pending", "Running") and not p.deleting for p in pods):
        return 0.0
    for p in failed:
        report = by_pod.get(p.name)
        if not PEER_LOST.search(report.message if report else p.message):
            return 0.0
    first = min((p.finished_at for p in failed if p.finished_at is not None), default=None)
    if first is None:
        return 0.0
    return min(max(PEER_SETTLE_SECONDS - (now - first), 0.0), PEER_SETTLE_SECONDS)
