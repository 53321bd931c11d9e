"""All-or-nothing placement of a job's pods (its gang). Pure: objects in, decisions out.

Two mechanisms, chosen by what the cluster serves (the shell, gang_shell.py, asks
discovery once at startup):

- **PodGroup** (KEP-4671; Kubernetes >= 1.37 with the `GenericWorkload` gate and the
  `scheduling.k8s.io/v1beta1` group version on). The job owns one standalone PodGroup with a
  gang policy (`minCount` = its pods) and every pod names it in
  `spec.schedulingGroup.podGroupName`. kube-scheduler then places the whole group in one
  pod-group scheduling cycle or none of it: no pod binds, so none holds a GPU, until all fit.
  Pods need no scheduling gate: the scheduler's GangScheduling PreEnqueue already holds
  them until `minCount` pods exist.
- **Gates** (older clusters). Pods are created behind the `yolofit.io/gang` scheduling gate
  and the gates are lifted only when `check()` says the whole gang fits the class's free
  GPUs now (allocatable minus what bound pods request, minus gangs already released but not
  yet bound), re-checked on every pass while the job waits (quota releases and pod
  terminations bring waiting jobs back at once).

Either way a gang that cannot be placed leaves the job `Queued` with `shortfall()`'s message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from yolofit.operator.api import Plan
from yolofit.operator.fleet import GPU_RESOURCE, ClassInfo, FleetNode
from yolofit.operator.launch import CLASS_LABEL, GANG_GATE, owner_reference

POD_GROUP_GROUP = "scheduling.k8s.io"
POD_GROUP_VERSION = "v1beta1"
POD_GROUP_API = f"{POD_GROUP_GROUP}/{POD_GROUP_VERSION}"
POD_GROUPS = "podgroups"
TERMINAL_POD_PHASES = ("Succeeded", "Failed")


def pod_groups_path(namespace: str, name: str = "") -> str:
    base = f"/apis/{POD_GROUP_API}/namespaces/{namespace}/{POD_GROUPS}"
    return f"{base}/{name}" if name else base


def served(resources: Mapping[str, Any] | None) -> bool:
    """Whether an APIResourceList (GET /apis/scheduling.k8s.io/v1beta1) serves podgroups."""
    return any(r.get("name") == POD_GROUPS for r in (resources or {}).get("resources") or [])


def pod_group_name(job: str) -> str:
    return job


def build_pod_group(job: Mapping[str, Any], plan: Plan) -> dict[str, Any]:
    """The job's PodGroup: gang policy over all its pods, owned (and garbage-collected) by
    the job."""
    meta = job["metadata"]
    return {
        "apiVersion": POD_GROUP_API, "kind": "PodGroup",
        "metadata": {"name": pod_group_name(meta["name"]), "namespace": meta["namespace"],
                     "labels": {"yolofit.io/job": meta["name"]},
                     "ownerReferences": [owner_reference(job)]},
        "spec": {"schedulingPolicy": {"gang": {"minCount": plan.nodes}}},
    }


def join(pod: dict[str, Any], group: str) -> dict[str, Any]:
    """The pod as a member of `group`: named in spec.schedulingGroup, no gang gate (the
    scheduler holds it until the group is complete)."""
    spec = pod["spec"]
    spec["schedulingGroup"] = {"podGroupName": group}
    gates = [g for g in spec.get("schedulingGates") or [] if g.get("name") != GANG_GATE]
    if gates:
        spec["schedulingGates"] = gates
    else:
        spec.pop("schedulingGates", None)
    return pod


# --- the placement check (gates mode; also names what is short in PodGroup mode) -----------


@dataclass(frozen=True)
class Demand:
    """A gang: `nodes` pods of `per_node` GPUs each, one pod per node."""

    nodes: int
    per_node: int
    name: str = ""


def gpu_request(pod: Mapping[str, Any]) -> int:
    """GPUs a pod asks for (limits imply requests for extended resources)."""
    total = 0
    for c in (pod.get("spec") or {}).get("containers") or []:
        res = c.get("resources") or {}
        value = (res.get("requests") or {}).get(GPU_RESOURCE) or (
            res.get("limits") or {}).get(GPU_RESOURCE) or 0
        total += int(value)
    return total


def used_by_node(pods: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """GPUs requested by bound, unfinished pods, per node."""
    used: dict[str, int] = {}
    for p in pods:
        node = (p.get("spec") or {}).get("nodeName")
        if not node or (p.get("status") or {}).get("phase") in TERMINAL_POD_PHASES:
            continue
        used[node] = used.get(node, 0) + gpu_request(p)
    return used


def free_gpus(info: ClassInfo, fleet: Iterable[FleetNode],
              used: Mapping[str, int]) -> dict[str, int]:
    """Free GPUs on each node of the class."""
    return {n.name: max(0, n.gpus - used.get(n.name, 0)) for n in fleet if info.matches(n)}


def place(demand: Demand, free: Mapping[str, int]) -> list[str] | None:
    """Nodes for each pod (best fit: the fullest node that still has room, so big holes stay
    for big pods), or None when the gang does not fit whole."""
    fitting = sorted((f, n) for n, f in free.items() if f >= demand.per_node)
    if len(fitting) < demand.nodes:
        return None
    return [n for _, n in fitting[:demand.nodes]]


def check(demand: Demand, free: Mapping[str, int],
          ahead: Sequence[Demand] = ()) -> str | None:
    """None when the gang fits the free GPUs after the gangs `ahead` (released, not yet
    bound: they get their room first), else what is short."""
    left = dict(free)
    for other in ahead:
        nodes = place(other, left)
        for n in nodes or []:
            left[n] -= other.per_node
    if place(demand, left) is not None:
        return None
    return shortfall(demand, left, ahead)


def shortfall(demand: Demand, free: Mapping[str, int], ahead: Sequence[Demand] = ()) -> str:
    have = sum(1 for f in free.values() if f >= demand.per_node)
    nodes = ", ".join(f"{n}: {f} free" for n, f in sorted(free.items())) or "no nodes"
    text = (f"needs {demand.nodes} nodes with {demand.per_node} free GPUs each, "
            f"{have} of {len(free)} have that now ({nodes})")
    if ahead:
        text += f"; after {', '.join(d.name for d in ahead)} released ahead of it"
    return text


def unbound_gangs(pods_by_job: Mapping[str, Iterable[Mapping[str, Any]]], gpu_class: str,
                  exclude: str) -> list[Demand]:
    """Gangs of `gpu_class` whose gates are lifted but whose pods are not bound yet."""
    out = []
    for job, pods in pods_by_job.items():
        if job == exclude:
            continue
        waiting = [p for p in pods
                   if (p.get("metadata", {}).get("labels") or {}).get(CLASS_LABEL) == gpu_class
                   and not (p.get("spec") or {}).get("nodeName")
                   and not (p.get("spec") or {}).get("schedulingGates")
                   and not p.get("metadata", {}).get("deletionTimestamp")
                   and (p.get("status") or {}).get("phase") not in TERMINAL_POD_PHASES]
        if waiting:
            out.append(Demand(len(waiting), max(gpu_request(p) for p in waiting), job))
    return sorted(out, key=lambda d: d.name)


def unschedulable(pods: Iterable[Mapping[str, Any]]) -> str | None:
    """The scheduler's message when no pod of the gang is bound and it said Unschedulable."""
    message = None
    for p in pods:
        if (p.get("spec") or {}).get("nodeName"):
            return None
        for c in (p.get("status") or {}).get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get(
                    "reason") == "Unschedulable":
                message = message or c.get("message") or "Unschedulable"
    return message


def queued_message(plan: Plan, short: str) -> str:
    return (f"gang of {plan.nodes} pods x {plan.gpus_per_node} GPUs waits for room on "
            f"{plan.gpu_class}: {short}; no pod of it holds a GPU")
