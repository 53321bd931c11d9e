"""A job's phase, conditions and measurements, computed from its pods. Pure.

The reconciler observes (job status, pods of the current attempt) and writes what
`compute()` returns; nothing here talks to the API. Conditions follow the API conventions:
`type`, `status` True/False/Unknown, CamelCase `reason`, a message, `lastTransitionTime`
kept while the status does not change, and `observedGeneration`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from yolofit.operator import feedback
from yolofit.operator.api import Condition, Plan, RankMeasurement
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


def pod_view(pod: Mapping[str, Any]) -> PodView:
    meta, spec, st = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status") or {}
    labels = meta.get("labels") or {}
    exit_code, message = None, ""
    for cs in st.get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated") or (
            cs.get("lastState") or {}).get("terminated")
        if term:
            exit_code = term.get("exitCode")
            message = term.get("message") or ""
    gates = [g.get("name") for g in spec.get("schedulingGates") or []]
    unschedulable = next((c.get("message") or c.get("reason", "") for c in
                          st.get("conditions") or [] if c.get("type") == "PodScheduled"
                          and c.get("status") == "False"
                          and c.get("reason") == "Unschedulable"), "")
    return PodView(name=meta.get("name", ""), rank=int(labels.get(RANK_LABEL, 0)),
                   attempt=int(labels.get(ATTEMPT_LABEL, 0)), phase=st.get("phase", "Pending"),
                   gated=GANG_GATE in gates, node=spec.get("nodeName") or "",
                   exit_code=exit_code, message=message,
                   deleting=bool(meta.get("deletionTimestamp")),
                   unschedulable=unschedulable if not spec.get("nodeName") else "")


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


def summarize(pods: Iterable[PodView], plan: Plan) -> PodsOutcome:
    pods = sorted(pods, key=lambda p: p.rank)
    ranks = [r for p in pods if (r := feedback.parse_summary(p.message, p.rank, p.name))]
    failed = [p for p in pods if p.phase == "Failed"]
    if failed:
        oom = [p for p in failed if p.exit_code == feedback.OOM_EXIT_CODE or any(
            r.pod == p.name and r.exit_reason == "oom" for r in ranks)]
        if oom:
            return PodsOutcome("Failed", "OutOfMemory", f"{oom[0].name} ran out of GPU memory "
                               f"at batch {plan.batch_per_gpu} per GPU", True, ranks)
        p = failed[0]
        summary = next((r for r in ranks if r.pod == p.name), None)
        detail = summary.message if summary and summary.message else (
            p.message.strip()[-300:] if p.message and summary is None else "")
        reason = "DataMissing" if (p.exit_code == feedback.BAD_INPUT_EXIT_CODE or (
            summary and summary.exit_reason == "data-missing")) else "TrainerFailed"
        text = f"{p.name} exited with code {p.exit_code}" + (f": {detail}" if detail else "")
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
