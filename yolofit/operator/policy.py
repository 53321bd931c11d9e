"""GPUCapacityPolicy, resolved against the fleet. Pure functions on plain data.

- `effective_classes`: the policy's classes (or the discovered ones when it lists none),
  with memory/headroom/bf16 overrides applied, in preference order.
- `namespace_rule` / `allowed_classes`: what a namespace may use.
- `quota_allows`: whether a job fits the namespace's GPUs-admitted-at-once limit.
- `with_margin`: a class whose budget is shrunk by a learned margin.
- `with_default_rule`: the policy with the operator's default rule for namespaces it does
  not name (and for a deleted policy): fail closed to bounded limits, never unlimited.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import replace

from yolofit.estimator.gpu import GpuClass, from_gfd_labels, from_memory, get_gpu_class
from yolofit.operator.api import GPUCapacityPolicySpec, GpuClassSpec, NamespaceRule
from yolofit.operator.fleet import GPU_TOLERATION, ClassInfo, FleetNode, discover
from yolofit.operator.sharing import mig
from yolofit.operator.sharing.base import GPU_DEVICE_CLASS, Sharing, default_headroom
from yolofit.units import parse_bytes

log = logging.getLogger("yolofit.operator")


def effective_classes(policy: GPUCapacityPolicySpec,
                      nodes: Iterable[FleetNode]) -> dict[str, ClassInfo]:
    """Class name -> ClassInfo, in the policy's preference order."""
    nodes = list(nodes)
    default_headroom = policy.default_headroom_percent / 100.0
    if not policy.classes:
        classes = {**discover(mig.whole_gpu_nodes(nodes), default_headroom),
                   **mig.discover(nodes, default_headroom)}
    else:
        classes = {}
        for spec in policy.classes:
            try:
                info = _policy_class(spec, nodes, default_headroom)
            except (ValueError, TypeError, OverflowError) as exc:
                # Refused at apply by the policy webhook; one written before it existed is
                # skipped, not allowed to stop admission for every class.
                log.error("GPUCapacityPolicy class %s skipped: %s", spec.name, exc)
                continue
            if info is not None:
                classes[info.name] = info
    order = [n for n in policy.preference if n in classes]
    rest = sorted((n for n in classes if n not in order),
                  key=lambda n: (classes[n].gpu.budget_bytes, n))
    return {n: classes[n] for n in order + rest}


def _policy_class(spec: GpuClassSpec, nodes: list[FleetNode],
                  default_headroom_: float) -> ClassInfo | None:
    members = [n for n in nodes if all(n.labels.get(k) == v
                                       for k, v in spec.node_selector.items())]
    kind = "mig" if spec.mig_profile else spec.backend.kind
    headroom = (spec.headroom_percent / 100.0 if spec.headroom_percent is not None
                else default_headroom(kind, default_headroom_))
    tolerations = [dict(GPU_TOLERATION)] + [dict(t) for t in spec.tolerations]
    if spec.mig_profile:
        return mig.policy_class(spec.name, spec.mig_profile, members, headroom,
                                spec.node_selector, tolerations)
    members = mig.whole_gpu_nodes(members)
    gpu = _base_gpu(spec, members, headroom)
    if gpu is None:
        return None
    gpu = replace(gpu, name=spec.name)
    if spec.memory is not None:
        memory = parse_bytes(spec.memory)
        gpu = replace(gpu, memory_bytes=memory, usable_bytes=min(gpu.usable_bytes, memory))
    if spec.usable_memory is not None:
        # An explicit usable memory is what plans may fill: no extra headroom on top.
        gpu = replace(gpu, usable_bytes=parse_bytes(spec.usable_memory), headroom=0.0)
    if spec.bf16 is not None:
        gpu = replace(gpu, bf16=spec.bf16)
    return ClassInfo(gpu=gpu, node_selector=dict(spec.node_selector), tolerations=tolerations,
                     nodes=len(members), gpus_per_node=max((n.gpus for n in members), default=0),
                     total_gpus=sum(n.gpus for n in members),
                     product=members[0].labels.get("nvidia.com/gpu.product", "") if members
                     else "", sharing=_sharing(spec))


def _sharing(spec: GpuClassSpec) -> Sharing:
    b = spec.backend
    if b.kind == "dra":
        return Sharing(backend="dra", device_class=b.device_class_name or GPU_DEVICE_CLASS)
    if b.kind == "kai":
        return Sharing(backend="kai", scheduler_name=b.scheduler_name, queue=b.queue)
    return Sharing(backend=b.kind)


def _base_gpu(spec: GpuClassSpec, members: list[FleetNode], headroom: float) -> GpuClass | None:
    try:
        return get_gpu_class(spec.name, headroom)
    except KeyError:
        pass
    if members:
        try:
            return from_gfd_labels(members[0].labels, headroom)
        except ValueError:
            pass
    if spec.memory is not None:
        return from_memory(parse_bytes(spec.memory), name=spec.name, headroom=headroom)
    return None


def namespace_rule(policy: GPUCapacityPolicySpec, namespace: str) -> NamespaceRule | None:
    wildcard = None
    for rule in policy.namespaces:
        if rule.namespace == namespace:
            return rule
        if rule.namespace == "*":
            wildcard = rule
    return wildcard


def allowed_classes(policy: GPUCapacityPolicySpec, namespace: str,
                    classes: Mapping[str, ClassInfo]) -> list[str]:
    """Names of the classes the namespace may use, in preference order."""
    rule = namespace_rule(policy, namespace)
    if rule is None or not rule.allowed_classes:
        return list(classes)
    return [n for n in classes if n in rule.allowed_classes]


def quota_allows(rule: NamespaceRule | None, admitted_gpus: int, job_gpus: int) -> bool:
    """Whether admitting `job_gpus` keeps the namespace within its GPUs-at-once limit."""
    if rule is None or rule.max_gpus_admitted is None:
        return True
    return admitted_gpus + job_gpus <= rule.max_gpus_admitted


def with_margin(gpu: GpuClass, margin: float) -> GpuClass:
    """A class whose budget is shrunk so that estimate x (1 + margin) still fits.

    budget' = usable x (1 - h') = usable x (1 - h) / (1 + margin).
    """
    if margin <= 0:
        return gpu
    return replace(gpu, headroom=1.0 - (1.0 - gpu.headroom) / (1.0 + margin))


def default_rule(max_gpus_per_job: int | None, max_gpus_admitted: int | None) -> NamespaceRule:
    return NamespaceRule(namespace="*", max_gpus_per_job=max_gpus_per_job,
                         max_gpus_admitted=max_gpus_admitted)


def with_default_rule(policy: GPUCapacityPolicySpec,
                      rule: NamespaceRule) -> GPUCapacityPolicySpec:
    """The policy plus `rule` as its * rule when it has none (an explicit * rule, even one
    without limits, is the platform team's choice and stays)."""
    if any(r.namespace == "*" for r in policy.namespaces):
        return policy
    return policy.model_copy(update={"namespaces": [*policy.namespaces, rule]})
