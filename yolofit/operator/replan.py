"""Re-plan a job when its pods measured a plan input that admission could only assume. Pure.

Before its first step the trainer checks what admission had to take on trust, and stops
with a one-object summary (yolofit/trainer/summary.py) when the plan assumed too little:

- exit reason `data-denser` (exit code 3): the densest training image holds more objects
  than the plan's objectsPerImage (spec.maxObjectsPerImage or the policy's
  defaultObjectsPerImage), or the training split's mean is above the plan's
  meanObjectsPerImage (spec.meanObjectsPerImage or defaultMeanObjectsPerImage; checked
  only where the plan depends on it); the summary carries both measured figures,
  `objects_per_image` and `objects_per_image_mean` (rounded up).
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
    ModelFound,
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
    mean: int = 0  # mean objects per image; 0: the plan does not depend on it


def planning_spec(spec: YOLOTrainingJobSpec, inputs: MeasuredInputs | None
                  ) -> YOLOTrainingJobSpec:
    """The spec the job's plans are made from: measured inputs over spec and defaults
    (a measured density never lowers an explicit, larger spec.maxObjectsPerImage or
    spec.meanObjectsPerImage; the densest is never below the mean)."""
    if inputs is None:
        return spec
    update: dict[str, object] = {}
    densest = spec.max_objects_per_image
    if inputs.objects_per_image is not None:
        densest = update["max_objects_per_image"] = max(inputs.objects_per_image,
                                                        densest or 0)
    if inputs.mean_objects_per_image is not None:
        mean = max(inputs.mean_objects_per_image, spec.mean_objects_per_image or 0, 1)
        update["mean_objects_per_image"] = mean
        if densest is not None and densest < mean:
            update["max_objects_per_image"] = mean
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
    return Assumed(objects, admission.model_id(eff.model), eff.classes,
                   plan.mean_objects_per_image)


def _highest(reports: Iterable[PodReport], attr: str) -> tuple[int | None, str]:
    """The largest figure `attr` the reports carry and the first pod that says it."""
    best, pod = None, ""
    for rep in reports:
        n = getattr(rep, attr)
        if n is not None and (best is None or n > best):
            best, pod = n, rep.pod
    return best, pod


def _model(reports: Iterable[PodReport], before: Assumed) -> tuple[ModelFound | None, str]:
    for rep in reports:
        m = rep.model_found
        if (rep.exit_reason == MODEL_DIFFERS and m is not None
                and (m.model, m.nc) != (before.model, before.classes)):
            return m, rep.pod
    return None, ""


def _at_least(a: int | None, b: int | None) -> int | None:
    return None if a is None and b is None else max(a or 0, b or 0)


def found(reports: Iterable[PodReport], before: Assumed, recorded: MeasuredInputs | None,
          attempt: int, now: str) -> MeasuredInputs | None:
    """The inputs to record after this attempt's reports, or None when no report says
    more than the plan assumed (the densest image above its objects, or the mean above its
    mean where it assumed one). A data-denser report's mean is recorded with it, also when
    lower than the plan's (a measurement beats the policy default). Deterministic: the
    highest figure wins, then pod order; recorded figures are never lowered."""
    ordered = sorted(reports, key=lambda r: r.pod)
    denser = [r for r in ordered if r.exit_reason == DATA_DENSER]
    objects, objects_pod = _highest(denser, "objects_per_image")
    mean, mean_pod = _highest(denser, "objects_per_image_mean")
    model, model_pod = _model(ordered, before)
    new_objects = objects is not None and objects > before.objects
    new_mean = mean is not None and 0 < before.mean < mean
    if not new_objects and not new_mean and model is None:
        return None
    source = objects_pod if new_objects else mean_pod if new_mean else model_pod
    base = recorded or MeasuredInputs()
    return MeasuredInputs(
        objects_per_image=_at_least(objects if new_objects else None, base.objects_per_image),
        mean_objects_per_image=_at_least(mean, base.mean_objects_per_image),
        model=model.model if model is not None else base.model,
        classes=model.nc if model is not None else base.classes,
        source=source, attempt=attempt, time=now)


def _denser_mean(before: Assumed, inputs: MeasuredInputs) -> bool:
    return 0 < before.mean < (inputs.mean_objects_per_image or 0)


def causes(before: Assumed, inputs: MeasuredInputs) -> list[ReplanCause]:
    out: list[ReplanCause] = []
    if (inputs.objects_per_image or 0) > before.objects or _denser_mean(before, inputs):
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
    if _denser_mean(before, inputs):
        parts.append(f"data denser than planned: {inputs.mean_objects_per_image} objects/image "
                     f"on average measured, plan assumed {before.mean}")
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
        mean = spec.mean_objects_per_image
        s = spec.model_copy(update={"max_objects_per_image": objects,
                                    "mean_objects_per_image": min(mean, objects) if mean
                                    else None})
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
