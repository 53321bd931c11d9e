"""Admission reviews for YOLOTrainingJob and GPUCapacityPolicy: AdmissionReview in,
AdmissionReview out. Pure: no I/O, no kopf; `admission_server.py` serves them.

Who owns `spec.plan`: yolofit. The plan a job runs with is `status.plan`, written by the
operator at admission (status is writable only by the operator's identity, a
ValidatingAdmissionPolicy in the chart). `spec.plan` is a mirror, so that `kubectl apply`
gets the plan back (the apiserver drops status on create) and the printer columns show it:

- mutating: sets spec.plan to what yolofit says it is: for an admitted job the operator's
  status.plan, otherwise a fresh plan from `admission.decide` (none when it cannot plan).
  Any user change to spec.plan, on any UPDATE, is overwritten.
- validating: refuses what cannot fit or breaks the policy (every field error in one
  message); refuses a spec.plan that is not the one the mutating webhook would write (so a
  plan patch is refused even where the mutating webhook is not installed); refuses any
  spec change to an admitted job.

Malformed input (a non-object spec, wrong types, out-of-range values, junk of any size) is
a 4xx naming the field, never a 5xx: the WebhookFailing alert counts 5xx as bugs.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from yolofit.estimator.profile import ProfileStore
from yolofit.operator import admission, metrics, replan
from yolofit.operator.api import (
    GPUCapacityPolicySpec,
    GpuClassSpec,
    MeasuredInputs,
    YOLOTrainingJobSpec,
)
from yolofit.operator.fleet import ClassInfo
from yolofit.units import parse_bytes


@dataclass(frozen=True)
class Snapshot:
    """What admission reads: published by the operator by reference swap, never mutated."""

    policy: GPUCapacityPolicySpec
    classes: Mapping[str, ClassInfo]
    store: ProfileStore
    margins: Mapping[str, float] = field(default_factory=dict)


class Refused(Exception):
    def __init__(self, message: str, code: int = 422) -> None:
        super().__init__(message)
        self.message, self.code = message, code


# --- helpers --------------------------------------------------------------------------------

def _field_errors(exc: ValidationError, prefix: str = "spec") -> str:
    parts = []
    for e in exc.errors()[:20]:
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"])
        parts.append(f"{prefix}{loc}: {e['msg']}")
    return "; ".join(parts)


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Refused(f"{what}: must be an object, got {type(value).__name__}", 400)
    return value


def _spec(obj: dict[str, Any]) -> YOLOTrainingJobSpec:
    raw = _object(obj.get("spec"), "spec")
    try:
        return YOLOTrainingJobSpec.model_validate(raw)
    except ValidationError as exc:
        raise Refused(_field_errors(exc)) from None
    except RecursionError:
        raise Refused("spec: nested too deeply", 400) from None


def _meta(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    name, ns = meta.get("name", ""), meta.get("namespace", "")
    return (name if isinstance(name, str) else "", ns if isinstance(ns, str) else "")


def _admitted_plan(old: Any) -> tuple[bool, dict[str, Any] | None]:
    """Whether the old object was admitted, and the plan it runs with (status.plan)."""
    if not isinstance(old, dict):
        return False, None
    status = old.get("status")
    if not isinstance(status, dict) or status.get("admitted") is not True:
        return False, None
    plan = status.get("plan")
    if not isinstance(plan, dict):
        spec = old.get("spec")
        plan = spec.get("plan") if isinstance(spec, dict) else None
    return True, plan if isinstance(plan, dict) else None


def _without_plan(spec: Any) -> Any:
    return {k: v for k, v in spec.items() if k != "plan"} if isinstance(spec, dict) else spec


def desired_plan(snap: Snapshot, obj: dict[str, Any], old: Any) -> dict[str, Any] | None:
    """The spec.plan yolofit writes for `obj` (wire form), or None for no plan."""
    admitted, plan = _admitted_plan(old)
    if admitted:
        return plan
    try:
        spec = _spec(obj)
    except Refused:
        return None
    d = decide(snap, obj, spec)
    return d.plan.wire() if d.plan is not None else None


def decide(snap: Snapshot, obj: dict[str, Any], spec: YOLOTrainingJobSpec) -> admission.Decision:
    name, ns = _meta(obj)
    spec = replan.planning_spec(spec, _measured_inputs(obj))  # as the operator plans it
    started = time.perf_counter()
    d = admission.decide(name, ns, spec.model_copy(update={"plan": None}), snap.policy,
                         snap.classes, snap.store, dict(snap.margins))
    metrics.PLAN_SECONDS.observe(time.perf_counter() - started)
    return d


def _measured_inputs(obj: dict[str, Any]) -> MeasuredInputs | None:
    """status.measuredInputs of a job (a requeued one keeps what its pods measured)."""
    status = obj.get("status")
    raw = status.get("measuredInputs") if isinstance(status, dict) else None
    if not isinstance(raw, dict):
        return None
    try:
        return MeasuredInputs.model_validate(raw)
    except (ValidationError, RecursionError):
        return None


# --- the two job webhooks -------------------------------------------------------------------

def mutate_job(snap: Snapshot, request: dict[str, Any]) -> list[dict[str, Any]]:
    """JSON patch operations that make spec.plan yolofit's; never refuses."""
    obj = request.get("object")
    if not isinstance(obj, dict) or not isinstance(obj.get("spec"), dict):
        return []  # the validating webhook names what is wrong
    want = desired_plan(snap, obj, request.get("oldObject"))
    have = obj["spec"].get("plan")
    if want == have:
        return []
    if want is None:
        return [{"op": "remove", "path": "/spec/plan"}]
    return [{"op": "add", "path": "/spec/plan", "value": want}]


def validate_job(snap: Snapshot, request: dict[str, Any]) -> None:
    """Raise Refused naming every field that makes the job unfit or the request illegal."""
    obj = _object(request.get("object"), "object")
    spec = _spec(obj)
    old = request.get("oldObject")
    admitted, running = _admitted_plan(old)
    raw_plan = obj["spec"].get("plan")
    if admitted and isinstance(old, dict):
        if _without_plan(obj["spec"]) != _without_plan(old.get("spec")):
            raise Refused("spec: the job is admitted; its spec cannot change (the pods run "
                          "with it). Delete and re-create the job to change it.")
        if raw_plan != running:
            raise Refused("spec.plan: written by yolofit only (it mirrors status.plan of an "
                          "admitted job); remove it from your change")
        return
    d = decide(snap, obj, spec)
    if d.refused:
        _, ns = _meta(obj)
        metrics.ADMISSIONS.labels("rejected", "", ns).inc()
        raise Refused("; ".join(d.errors))
    if raw_plan is not None:
        _, ns = _meta(obj)
        errors = admission.plan_errors(spec.plan, spec, snap.policy, ns, snap.classes) \
            if spec.plan is not None else []
        want = d.plan.wire() if d.plan is not None else None
        old_spec = old.get("spec") if isinstance(old, dict) else None
        old_plan = old_spec.get("plan") if isinstance(old_spec, dict) else None
        # On CREATE the mutating webhook has just written spec.plan from its snapshot, which
        # may be one margin or policy update older than this one: comparing would refuse a
        # good job in that race. The plan launched is computed again at admission (never
        # read from spec.plan), so only a plan a user *changed* on UPDATE is refused here.
        if old is not None and raw_plan != want and raw_plan != old_plan:
            errors.append("spec.plan: written by yolofit admission only; it is not the plan "
                          "admission computes for this spec (remove spec.plan from the object)")
        if errors:
            raise Refused("; ".join(errors))


# --- GPUCapacityPolicy ----------------------------------------------------------------------

def policy_errors(raw: Any) -> list[str]:
    """Every field error of a GPUCapacityPolicy spec, including what the schema cannot say
    (memory quantities, preference and allowedClasses naming a class that is listed)."""
    if not isinstance(raw, dict):
        return [f"spec: must be an object, got {type(raw).__name__}"]
    try:
        spec = GPUCapacityPolicySpec.model_validate(raw)
    except ValidationError as exc:
        return [_field_errors(exc)]
    except RecursionError:
        return ["spec: nested too deeply"]
    return ([e for i, c in enumerate(spec.classes) for e in _class_size_errors(i, c)]
            + _name_errors(spec) + _density_errors(spec))


def _name_errors(spec: GPUCapacityPolicySpec) -> list[str]:
    errors = []
    names = [c.name for c in spec.classes]
    if len(set(names)) != len(names):
        errors.append("spec.classes: class names must be unique")
    if names:
        for i, n in enumerate(spec.preference):
            if n not in names:
                errors.append(f"spec.preference[{i}]: {n!r} is not a class of spec.classes")
        for i, rule in enumerate(spec.namespaces):
            for j, n in enumerate(rule.allowed_classes):
                if n not in names:
                    errors.append(f"spec.namespaces[{i}].allowedClasses[{j}]: {n!r} is not a "
                                  f"class of spec.classes")
    seen = [r.namespace for r in spec.namespaces]
    if len(set(seen)) != len(seen):
        errors.append("spec.namespaces: one rule per namespace")
    return errors


def _density_errors(spec: GPUCapacityPolicySpec) -> list[str]:
    mean, most = spec.default_mean_objects_per_image, spec.default_objects_per_image
    if mean <= most:
        return []
    return [f"spec.defaultMeanObjectsPerImage: {mean} is above spec.defaultObjectsPerImage "
            f"({most}); a mean cannot exceed the densest image: lower it or raise "
            f"defaultObjectsPerImage"]


def _class_size_errors(i: int, c: GpuClassSpec) -> list[str]:
    errors, sizes = [], {}
    for attr, wire in (("memory", "memory"), ("usable_memory", "usableMemory")):
        value = getattr(c, attr)
        if value is None:
            continue
        try:
            sizes[attr] = parse_bytes(value)
        except (ValueError, TypeError, OverflowError):
            errors.append(f"spec.classes[{i}].{wire}: {value!r} is not a size (e.g. 80GiB, "
                          f"15360Mi or a number of bytes)")
            continue
        if not 0 < sizes[attr] <= 2**50:
            errors.append(f"spec.classes[{i}].{wire}: {value!r} is out of range")
    if sizes.get("usable_memory", 0) > sizes.get("memory", 2**60):
        errors.append(f"spec.classes[{i}].usableMemory: larger than memory")
    return errors


def validate_policy(request: dict[str, Any]) -> None:
    obj = _object(request.get("object"), "object")
    errors = policy_errors(obj.get("spec", {}))
    if errors:
        raise Refused("; ".join(errors))


# --- AdmissionReview in, AdmissionReview out ------------------------------------------------

HANDLERS = ("mutate", "validate", "validate-policy")


def respond(kind: str, review: Any, snap: Snapshot) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body). A body that is not an AdmissionReview is a 400; a review is
    always answered 200 with allowed or a denial whose code is 4xx (5xx only for a bug)."""
    if not isinstance(review, dict) or not isinstance(review.get("request"), dict):
        return 400, {"error": "not an AdmissionReview (admission.k8s.io/v1)"}
    request = review["request"]
    uid = request.get("uid", "")
    response: dict[str, Any] = {"uid": uid if isinstance(uid, str) else "", "allowed": True}
    webhook = {"mutate": "mutate", "validate": "validate"}.get(kind, kind)
    try:
        if kind == "mutate":
            ops = mutate_job(snap, request)
            if ops:
                response["patchType"] = "JSONPatch"
                response["patch"] = base64.b64encode(json.dumps(ops).encode()).decode()
        elif kind == "validate":
            validate_job(snap, request)
        elif kind == "validate-policy":
            validate_policy(request)
        else:
            return 404, {"error": f"no webhook {kind!r}; serving {', '.join(HANDLERS)}"}
        metrics.WEBHOOK_REQUESTS.labels(webhook, "allowed").inc()
    except Refused as exc:
        metrics.WEBHOOK_REQUESTS.labels(webhook, "denied").inc()
        response["allowed"] = False
        response["status"] = {"code": exc.code, "message": exc.message[:4000],
                              "reason": "BadRequest" if exc.code == 400 else "Invalid"}
    except Exception as exc:  # noqa: BLE001 - a bug: answered, counted, alerted on
        metrics.WEBHOOK_REQUESTS.labels(webhook, "error").inc()
        response["allowed"] = False
        response["status"] = {"code": 500, "reason": "InternalError",
                              "message": f"yolofit admission failed: {type(exc).__name__}"}
    return 200, {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                 "response": response}

