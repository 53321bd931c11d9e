"""What a job may put into the pods the operator creates for it. Pure.

The operator creates pods on a tenant's behalf, so a tenant who may create a
YOLOTrainingJob but not pods must not get, through the job, an image or a volume the
platform would not let them use directly. The rules come from the GPUCapacityPolicy
(`spec.pods`, or a namespace rule's own `pods`); every refusal names the field and the rule.
"""

from __future__ import annotations

from typing import Any

from yolofit.operator.api import GPUCapacityPolicySpec, PodRules, YOLOTrainingJobSpec
from yolofit.operator.policy import namespace_rule


def rules_for(policy: GPUCapacityPolicySpec, namespace: str) -> tuple[PodRules, str]:
    """The namespace's pod rules and where they come from (for the refusal message)."""
    rule = namespace_rule(policy, namespace)
    if rule is not None and rule.pods is not None:
        index = policy.namespaces.index(rule) if rule in policy.namespaces else 0
        return rule.pods, f"GPUCapacityPolicy spec.namespaces[{index}].pods"
    return policy.pods, "GPUCapacityPolicy spec.pods"


def volume_type(volume: Any) -> str | None:
    """The one source key of a core/v1 Volume (hostPath, persistentVolumeClaim, ...)."""
    if not isinstance(volume, dict):
        return None
    keys = [k for k in volume if k != "name"]
    return keys[0] if len(keys) == 1 else None


def errors(spec: YOLOTrainingJobSpec, policy: GPUCapacityPolicySpec,
           namespace: str) -> list[str]:
    rules, where = rules_for(policy, namespace)
    out: list[str] = []
    prefixes = rules.allowed_image_prefixes
    if prefixes and not any(spec.image.startswith(p) for p in prefixes):
        out.append(f"spec.image: {spec.image!r} is not allowed: {where}.allowedImagePrefixes "
                   f"permits only images starting with {', '.join(map(repr, prefixes))}")
    allowed = rules.allowed_volume_types
    for i, volume in enumerate(spec.volumes):
        kind = volume_type(volume)
        if kind is None:
            out.append(f"spec.volumes[{i}]: a volume needs a name and exactly one source "
                       f"(one of {', '.join(allowed) or 'none allowed'})")
        elif kind not in allowed:
            out.append(f"spec.volumes[{i}].{kind}: volume type {kind} is not allowed in "
                       f"namespace {namespace}: {where}.allowedVolumeTypes permits "
                       f"{', '.join(allowed) or 'none'}")
    return out
