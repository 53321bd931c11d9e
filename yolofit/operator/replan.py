"""Re-plan a job when its pods measured a plan input that admission could only assume. Pure.

Before its first step the trainer checks what admission had to take on trust, and stops
with a one-object summary (yolofit/trainer/summary.py) when the plan assumed too little:

- exit reason `data-denser` (exit code 3): the densest training image holds more objects
  than the plan's objectsPerImage (spec.maxObjectsPerImage or the policy's
  defaultObjectsPerImage); the summary carries `objects_per_image`.
- exit reason `model-differs` (exit code 4): the checkpoint is another architecture or has
  more classes than the plan assumed; the summary carries `model_found` {"model", "nc"}.

`found` turns the current attempt's trusted reports into the MeasuredInputs the job records
(status.measuredInputs; never lowered by a later report), or None when they say nothing the
plan did not already assume. `planning_spec` is the spec every later plan of the job is made
from: measured inputs win over the spec and the policy's defaults. `decide` plans with it on
the same path as the first plan (admission.decide: class preference, policy levers,
headroom, learned margins) and says what changed, or why nothing fits and what would.
A re-plan for a measured input is not an OOM: no margin is learned, it does not count
against maxReplans, and it does not use the failure policy's restart budget.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from yolofit.estimator.profile import ProfileKey, ProfileStore
from yolofit.operator import admission, weights
from yolofit.operator.api import (
    GPUCapacityPolicySpec,
    MeasuredInputs,
    Plan,
    ReplanCause,
    YOLOTrainingJobSpec,
)
from yolofit.operator.feedback import PodReport
from yolofit.operator.fleet import ClassInfo

DATA_DENSER, MODEL_DIFFERS = "data-denser", "model-differs"  # the trainer's exit reasons


@dataclass(frozen=True)
class Assumed:
    """What the job's current plan was made with."""

    objects: int
    model: str  # admission.model_id of the planned model
    classes: int


def planning_spec(spec: YOLOTrainingJobSpec, inputs: MeasuredInputs | None
                  ) -> YOLOTrainingJobSpec:
    """The spec the job's plans are made from: measured inputs over spec and defaults
    (a measured density never lowers an explicit, larger spec.maxObjectsPerImage)."""
    if inputs is None:
        return spec
    update: dict[str, object] = {}
    if inputs.objects_per_image is not None:
        update["max_objects_per_image"] = max(inputs.objects_per_image,
                                              spec.max_objects_per_image or 0)
    if inputs.model is not None:
        update["model"] = inputs.model
    if inputs.classes is not None:
        update["classes"] = inputs.classes
    return spec.model_copy(update=update) if update else spec


def launch_spec(spec: YOLOTrainingJobSpec, inputs: MeasuredInputs | None
                ) -> YOLOTrainingJobSpec:
    """The spec the pods train: the model and classes the plan was made for (measured inputs
    over the spec), from the user's own checkpoint. Without this the pod's pre-flight would
    compare the checkpoint with the model admission first assumed and stop again."""
    eff = planning_spec(spec, inputs)
    if eff.model == spec.model:
        return eff
    return eff.model_copy(update={"weights": weights.checkpoint(spec)})


def assumed(spec: YOLOTrainingJobSpec, policy: GPUCapacityPolicySpec, plan: Plan,
            inputs: MeasuredInputs | None) -> Assumed:
    eff = planning_spec(spec, inputs)
    objects = (plan.objects_per_image or eff.max_objects_per_image
               or policy.default_objects_per_image)
    return Assumed(objects, admission.model_id(eff.model), eff.classes)


def found(reports: Iterable[PodReport], before: Assumed, recorded: MeasuredInputs | None,
          attempt: int, now: str) -> MeasuredInputs | None:
    """The inputs to record after this attempt's reports, or None when no report says
    more than the plan assumed. Deterministic: the densest report wins, then pod order."""
    objects, model, source = 0, None, ""
    for rep in sorted(reports, key=lambda r: r.pod):
        n = rep.objects_per_image
        if rep.exit_reason == DATA_DENSER and n is not None and n > max(before.objects,
                                                                        objects):
            objects, source = n, rep.pod
        m = rep.model_found
        if (rep.exit_reason == MODEL_DIFFERS and m is not None and model is None
                and (m.model, m.nc) != (before.model, before.classes)):
            model, source = m, source or rep.pod
    if not objects and model is None:
        return None
    base = recorded or MeasuredInputs()
    return MeasuredInputs(
        objects_per_image=max(objects, base.objects_per_image or 0) or None,
        model=model.model if model is not None else base.model,
        classes=model.nc if model is not None else base.classes,
        source=source, attempt=attempt, time=now)


def causes(before: Assumed, inputs: MeasuredInputs) -> list[ReplanCause]:
    out: list[ReplanCause] = []
    if (inputs.objects_per_image or 0) > before.objects:
        out.append("DataDenser")
    if inputs.model is not None and (inputs.model, inputs.classes) != (before.model,
                                                                       before.classes):
        out.append("ModelDiffers")
    return out


def describe(before: Assumed, inputs: MeasuredInputs) -> str:
    """What was measured against what the plan assumed, in a user's words."""
    parts = []
    if (inputs.objects_per_image or 0) > before.objects:
        parts.append(f"data denser than planned: {inputs.objects_per_image} objects/image "
                     f"measured, plan assumed {before.objects}")
    if inputs.model is not None and (inputs.model, inputs.classes) != (before.model,
                                                                       before.classes):
        parts.append(f"checkpoint differs from the plan: {inputs.model} with "
                     f"{inputs.classes} classes found, plan assumed {before.model} with "
                     f"{before.classes} classes")
    return "; ".join(parts)


def change(old: Plan, new: Plan) -> str:
    """What the re-plan changed, e.g. 'batch 16 -> 6 per GPU, accumulate 4 -> 11'."""
    parts = [f"batch {old.batch_per_gpu} -> {new.batch_per_gpu} per GPU"]
    if new.accumulate != old.accumulate:
        parts.append(f"accumulate {old.accumulate} -> {new.accumulate}")
    if new.gpu_class != old.gpu_class:
        parts.append(f"class {old.gpu_class} -> {new.gpu_class}")
    if new.checkpointing != old.checkpointing:
        parts.append("activation checkpointing " + ("on" if new.checkpointing else "off"))
    if new.imgsz != old.imgsz:
        parts.append(f"imgsz {old.imgsz} -> {new.imgsz}")
    if new.amp != old.amp:
        parts.append(f"amp {old.amp} -> {new.amp}")
    return ", ".join(parts)


@dataclass(frozen=True)
class Decision:
    action: Literal["replan", "profile", "fail"]
    cause: ReplanCause
    message: str  # for the condition, the Event and the Replan entry
    plan: Plan | None = None
    missing: ProfileKey | None = None  # "profile": trace this, then plan (Profiling)


@dataclass(frozen=True)
class Fleet:
    """What admission plans against (the operator's World, as plain data)."""

    policy: GPUCapacityPolicySpec
    classes: Mapping[str, ClassInfo]
    store: ProfileStore
    margins: Mapping[str, float]


def decide(name: str, namespace: str, spec: YOLOTrainingJobSpec, fleet: Fleet, old: Plan,
           before: Assumed, inputs: MeasuredInputs) -> Decision:
    """The job's plan with the measured inputs, made as its first plan was."""
    what = describe(before, inputs)
    cause = (causes(before, inputs) or ["DataDenser"])[0]
    eff = planning_spec(spec, inputs).model_copy(update={"plan": None})
    d = admission.decide(name, namespace, eff, fleet.policy, fleet.classes, fleet.store,
                         fleet.margins)
    if d.missing is not None:
        return Decision("profile", cause, f"{what}; tracing {d.missing.model} (profile "
                        f"{d.missing.id}) before planning again", missing=d.missing)
    if d.plan is None:
        hint = fits_at_most(name, namespace, eff, fleet) if cause == "DataDenser" else ""
        return Decision("fail", cause, f"{what}; " + "; ".join(d.errors) + hint)
    return Decision("replan", cause, f"{what}; {change(old, d.plan)}", plan=d.plan)


def fits_at_most(name: str, namespace: str, spec: YOLOTrainingJobSpec, fleet: Fleet) -> str:
    """'; at most N objects/image fit (...)': the densest data the job could train on,
    found by bisection on the same admission path ('' when not even one object fits)."""
    def plan_at(objects: int) -> Plan | None:
        s = spec.model_copy(update={"max_objects_per_image": objects})
        return admission.decide(name, namespace, s, fleet.policy, fleet.classes, fleet.store,
                                fleet.margins).plan

    lo, hi = 0, (spec.max_objects_per_image or 1) - 1  # lo fits (0: none known), hi unknown
    best: Plan | None = None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        p = plan_at(mid)
        if p is not None:
            lo, best = mid, p
        else:
            hi = mid - 1
    if best is None:
        return ""
    return (f"; at most {lo} objects/image fit (batch {best.batch_per_gpu} per GPU on "
            f"{best.gpu_class}): filter the densest images or allow a larger class")
