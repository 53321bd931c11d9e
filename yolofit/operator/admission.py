"""Admission: (spec, policy, fleet, profiles, learned margins) -> a plan or field errors.

Pure and shared by the mutating/validating webhooks and the operator's create handler, so
a cluster without the webhooks installed plans exactly the same way. It never traces: a
missing profile comes back as `Decision.missing` and the job is admitted as Profiling.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from yolofit.estimator import planner
from yolofit.estimator.identity import default_imgsz, is_shipped_name, model_task
from yolofit.estimator.profile import ProfileKey, ProfileMissing, ProfileStore
from yolofit.estimator.train_args import memory_effects
from yolofit.operator import pod_rules, pod_spec_checks, ultralytics_args, weights
from yolofit.operator import policy as pol
from yolofit.operator.api import GPUCapacityPolicySpec, Plan, YOLOTrainingJobSpec
from yolofit.operator.feedback import margin_key
from yolofit.operator.fleet import ClassInfo
from yolofit.operator.launch import MAX_JOB_NAME
from yolofit.operator.sharing import apply as sharing
from yolofit.operator.sharing import mig
from yolofit.units import format_bytes


@dataclass(frozen=True)
class Decision:
    plan: Plan | None = None
    errors: tuple[str, ...] = ()
    missing: ProfileKey | None = None  # admit as Profiling; the operator traces it

    @property
    def refused(self) -> bool:
        return bool(self.errors)


def model_id(model: str) -> str:
    """The model as margins and metrics name it: the file stem (yolov8s.pt -> yolov8s)."""
    return re.sub(r"\.(ya?ml|pt)$", "", model.rsplit("/", 1)[-1])


def label_density(spec: YOLOTrainingJobSpec, policy: GPUCapacityPolicySpec
                  ) -> tuple[int, int]:
    """(densest, mean) objects per image a plan assumes. The densest: spec.maxObjectsPerImage,
    else the policy default, raised to spec.meanObjectsPerImage when only the mean is given
    (no image set has a mean above its densest image). The mean: spec.meanObjectsPerImage,
    else the policy default capped at the densest. A mean above an explicit max is refused
    by static_errors."""
    mean = spec.mean_objects_per_image
    densest = spec.max_objects_per_image or max(policy.default_objects_per_image, mean or 0)
    if mean is None:
        mean = min(policy.default_mean_objects_per_image, densest)
    return densest, mean


def plan_request(spec: YOLOTrainingJobSpec, policy: GPUCapacityPolicySpec,
                 batch_per_gpu: int | None = None) -> planner.PlanRequest:
    levers = policy.levers
    effects = memory_effects(spec.args, task=job_task(spec))
    densest, mean = label_density(spec, policy)
    return planner.PlanRequest(
        mosaic=effects.mosaic, multi_scale=effects.multi_scale,
        model=weights.architecture(spec), nc=spec.classes, imgsz=job_imgsz(spec), nbs=spec.nbs,
        world_size=spec.gpus.nodes * spec.gpus.per_node, amp=spec.amp,
        objects=densest, mean_objects=min(mean, densest),
        optimizer=spec.optimizer, allow_amp=levers.amp,
        allow_checkpointing=levers.checkpointing,
        allow_imgsz_reduction=levers.imgsz_reduction, min_imgsz=levers.min_imgsz,
        batch_per_gpu=batch_per_gpu)


def to_api_plan(p: planner.Plan, spec: YOLOTrainingJobSpec, margin: float) -> Plan:
    return Plan(
        gpu_class=p.gpu_class, nodes=spec.gpus.nodes, gpus_per_node=spec.gpus.per_node,
        gpus=spec.gpus.nodes * spec.gpus.per_node, batch_per_gpu=p.batch_per_gpu,
        accumulate=p.accumulate, amp=p.amp,  # type: ignore[arg-type]
        checkpointing=p.checkpointing, imgsz=p.imgsz,
        predicted_allocated_bytes=p.predicted_allocated_bytes,
        predicted_reserved_bytes=p.predicted_reserved_bytes,
        predicted_device_bytes=p.predicted_device_bytes, usable_bytes=p.usable_bytes,
        utilisation=round(p.utilisation, 4), estimate=format_bytes(p.predicted_device_bytes),
        margin=margin, breakdown=dict(p.breakdown), reason=p.reason, profile=p.profile_id,
        task=job_task(spec) or "detect")


def job_task(spec: YOLOTrainingJobSpec) -> str | None:
    """spec.task, else the model's own task (None: a model whose name says nothing, e.g. a
    custom YAML the webhook cannot read)."""
    return spec.task or model_task(spec.model)


def job_imgsz(spec: YOLOTrainingJobSpec) -> int:
    """spec.imgsz, else the task's Ultralytics default (640; classify 224)."""
    return spec.imgsz or default_imgsz(job_task(spec))


def task_error(spec: YOLOTrainingJobSpec) -> str | None:
    """One line when spec.task disagrees with the model (e.g. a -cls model, task detect)."""
    if spec.task is None:
        return None
    own = model_task(spec.model)
    if own is not None and own != spec.task:
        return (f"spec.task: {spec.model} trains task {own}, not {spec.task}; "
                f"set task: {own} or omit it")
    return None


def mean_error(spec: YOLOTrainingJobSpec) -> str | None:
    """One line when spec.meanObjectsPerImage is above spec.maxObjectsPerImage."""
    mean, densest = spec.mean_objects_per_image, spec.max_objects_per_image
    if mean is None or densest is None or mean <= densest:
        return None
    return (f"spec.meanObjectsPerImage: {mean} exceeds spec.maxObjectsPerImage {densest} (a "
            f"mean is never above the densest image); set it to the training split's mean "
            f"per image (`yolofit data stats`) or raise maxObjectsPerImage")


# A Service name (DNS-1035 label). Job names are refused, not mapped: the job's Service,
# pods and PodGroup carry its name, so `kubectl get pods -l yolofit.io/job=<name>` and the
# DDP rendezvous address stay what a user expects.
SERVICE_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def suggest_name(name: str) -> str:
    """A valid name close to `name` (for the refusal message only)."""
    fixed = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    if not fixed or not fixed[0].isalpha():
        fixed = "job-" + fixed
    return fixed[:MAX_JOB_NAME].rstrip("-")


def name_errors(name: str) -> list[str]:
    """The job's name must name its headless Service, pods and their DNS subdomain."""
    errors = []
    if name and not SERVICE_NAME.fullmatch(name):
        errors.append(f"metadata.name: {name!r} cannot name the job's headless Service and its "
                      f"pods' DNS subdomain: it must be a DNS-1035 label (lowercase letters, "
                      f"digits and '-', starting with a letter and ending with a letter or "
                      f"digit); try {suggest_name(name)!r}")
    if len(name) > MAX_JOB_NAME:
        errors.append(f"metadata.name: at most {MAX_JOB_NAME} characters (pods are named "
                      f"<name>-worker-<i>), got {len(name)}")
    return errors


def model_path_error(spec: YOLOTrainingJobSpec, policy: GPUCapacityPolicySpec) -> str | None:
    """One line when spec.model names a file admission may not read: a tenant names any
    path, and the operator's own filesystem is not theirs to probe or to have parsed. A
    shipped architecture's name (yolo11m, yolo11s-seg.yaml) and a checkpoint (planned from
    the architecture its name implies, read only by the job's pods) are fine; a custom YAML
    must be an absolute path under policy.modelDirs (symlinks and '..' resolved)."""
    model = spec.model
    if weights.is_checkpoint(model) or is_shipped_name(model):
        return None
    where = ", ".join(policy.model_dirs) or "none configured"
    if "/" not in model:  # not looked up as a file in the operator's working directory
        return (f"spec: unknown model {model!r}: not a shipped architecture (e.g. yolo11m, "
                f"yolo11s-seg, yolov8x.yaml); a custom model YAML is an absolute path under "
                f"the policy's modelDirs ({where})")
    if model.startswith("/"):
        real = os.path.realpath(model)
        for d in policy.model_dirs:
            top = os.path.realpath(d).rstrip("/") + "/"
            if real.startswith(top):
                return None
    return (f"spec.model: {model} is not a shipped architecture (e.g. yolo11m, "
            f"yolo11s-seg), and admission reads custom model YAMLs only from the policy's "
            f"modelDirs ({where}); name a shipped architecture, or have the platform team put "
            f"the YAML under one of them (the same path in the operator and the job's pods)")


def static_errors(name: str, namespace: str, spec: YOLOTrainingJobSpec,
                  policy: GPUCapacityPolicySpec, classes: Mapping[str, ClassInfo]) -> list[str]:
    """Everything that can be refused without a profile."""
    errors = ultralytics_args.validate(spec.args) + pod_spec_checks.errors(spec)
    errors += pod_rules.errors(spec, policy, namespace)
    errors += name_errors(name)
    errors += weights.errors(spec)
    if (wrong_task := task_error(spec)) is not None:
        errors.append(wrong_task)
    errors += memory_effects(spec.args, task=job_task(spec)).refusals
    if (wrong_mean := mean_error(spec)) is not None:
        errors.append(wrong_mean)
    gpus = spec.gpus.nodes * spec.gpus.per_node
    rule = pol.namespace_rule(policy, namespace)
    if rule is not None and rule.max_gpus_per_job is not None and gpus > rule.max_gpus_per_job:
        errors.append(f"spec.gpus: {spec.gpus.nodes} x {spec.gpus.per_node} = {gpus} GPUs "
                      f"exceeds the {rule.max_gpus_per_job} GPUs per job allowed in namespace "
                      f"{namespace}")
    # A namespace whose jobs Kueue admits (kueueQueue) has Kueue's quota, not this one.
    if (rule is not None and rule.max_gpus_admitted is not None and not rule.kueue_queue
            and gpus > rule.max_gpus_admitted):
        errors.append(f"spec.gpus: {gpus} GPUs can never be admitted in namespace {namespace} "
                      f"(at most {rule.max_gpus_admitted} GPUs at once)")
    allowed = pol.allowed_classes(policy, namespace, classes)
    if not classes:
        errors.append("spec.gpuClass: the fleet has no GPU classes (no node carries "
                      "nvidia.com/gpu.product and the policy lists none)")
    elif spec.gpu_class is not None:
        if spec.gpu_class not in classes:
            errors.append(f"spec.gpuClass: unknown class {spec.gpu_class!r}; the fleet has "
                          f"{', '.join(classes)}")
        elif spec.gpu_class not in allowed:
            errors.append(f"spec.gpuClass: class {spec.gpu_class!r} is not allowed in namespace "
                          f"{namespace} (allowed: {', '.join(allowed) or 'none'})")
        elif _placeable(classes[spec.gpu_class], spec) is not None:
            errors.append(f"spec.gpus: {_placeable(classes[spec.gpu_class], spec)}")
        elif classes[spec.gpu_class].sharing.is_mig and gpus > 1:
            errors.append(mig.multi_rank_error(spec.gpu_class, gpus))
    elif not allowed:
        errors.append(f"spec.gpuClass: namespace {namespace} may use no GPU class of the fleet")
    return errors


def _placeable(info: ClassInfo, spec: YOLOTrainingJobSpec) -> str | None:
    """Why the class cannot hold the job's pods, or None."""
    if info.gpus_per_node < spec.gpus.per_node:
        return (f"{spec.gpus.per_node} GPUs per node, but {info.name} nodes have at most "
                f"{info.gpus_per_node}")
    if info.nodes < spec.gpus.nodes:
        return f"{spec.gpus.nodes} nodes, but the fleet has {info.nodes} {info.name} nodes"
    return None


def decide(name: str, namespace: str, spec: YOLOTrainingJobSpec, policy: GPUCapacityPolicySpec,
           classes: Mapping[str, ClassInfo], store: ProfileStore,
           margins: Mapping[str, float] | None = None,
           batch_per_gpu: int | None = None) -> Decision:
    """Plan the job, or say why not. `batch_per_gpu` pins the batch (OOM re-plans)."""
    unreadable = model_path_error(spec, policy)  # first: the checks below resolve spec.model
    if unreadable:
        return Decision(errors=(unreadable,))
    if spec.task is None:  # the model's own task, resolved once (job_task reads it from here)
        spec = spec.model_copy(update={"task": job_task(spec)})
    errors = static_errors(name, namespace, spec, policy, classes)
    if errors:
        return Decision(errors=tuple(errors))
    margins = margins or {}
    model = model_id(spec.model)
    names, note = [spec.gpu_class or ""], ""
    if not spec.gpu_class:  # MIG rule first, so a multi-rank job hears why slices are out
        names, note = mig.order(pol.allowed_classes(policy, namespace, classes), classes,
                                spec.gpus.nodes * spec.gpus.per_node, policy.mig_preference)
        names = [n for n in names if _placeable(classes[n], spec) is None]
    if not names:
        return Decision(errors=(f"spec.gpus: no allowed class has {spec.gpus.nodes} nodes with "
                                f"{spec.gpus.per_node} GPUs each" + (f"; {note}" if note
                                                                     else ""),))

    def gpu_of(n: str) -> planner.GpuClass:
        margin = margins.get(margin_key(namespace, model, n), 0.0)
        return pol.with_margin(classes[n].gpu, margin)

    try:
        req = plan_request(spec, policy, batch_per_gpu)
        world = spec.gpus.nodes * spec.gpus.per_node
        others = [gpu_of(n) for n in classes if n not in names
                  and not (world > 1 and classes[n].sharing.is_mig)]
        result = planner.plan(req, [gpu_of(n) for n in names], store, all_classes=others)
    except ProfileMissing as exc:
        return Decision(missing=exc.key)
    except ValueError as exc:  # the planner's own field checks, or an unknown model
        return Decision(errors=(f"spec: {exc}",))
    except (OSError, RecursionError, ImportError) as exc:  # a path it may not read, or a
        # custom .pt, which needs torch (not on the admission path)
        return Decision(errors=(f"spec.model: cannot read {spec.model!r} "
                                f"({type(exc).__name__}); use a model name or a YAML the "
                                f"operator can read",))
    if not result.fits:
        reason = result.reason.replace("the largest class allowed (",
                                       f"the largest class allowed in namespace {namespace} (")
        return Decision(errors=(f"spec: does not fit: {reason}" + (f"; {note}" if note
                                                                    else ""),))
    margin = margins.get(margin_key(namespace, model, result.gpu_class), 0.0)
    plan = to_api_plan(result, spec, margin).model_copy(
        update={"objects_per_image": req.objects,  # the mean only where it moved the plan
                "mean_objects_per_image": (req.mean_objects or 0) if result.uses_mean else 0})
    if note:
        plan = plan.model_copy(update={"reason": f"{plan.reason}; {note}".lstrip("; ")})
    return Decision(plan=sharing.describe(plan, classes[result.gpu_class]))


def plan_errors(plan: Plan, spec: YOLOTrainingJobSpec, policy: GPUCapacityPolicySpec,
                namespace: str, classes: Mapping[str, ClassInfo]) -> list[str]:
    """Why `plan` cannot be the plan of this job under the current policy (consistency and
    bounds only; whether it is *the* plan admission would choose is checked by comparing
    with `decide`)."""
    out = []
    if plan.gpus != plan.nodes * plan.gpus_per_node:
        out.append(f"spec.plan.gpus: {plan.gpus} is not nodes x gpusPerNode = "
                   f"{plan.nodes} x {plan.gpus_per_node}")
    if (plan.nodes, plan.gpus_per_node) != (spec.gpus.nodes, spec.gpus.per_node):
        out.append(f"spec.plan.nodes: {plan.nodes} x {plan.gpus_per_node} differs from "
                   f"spec.gpus {spec.gpus.nodes} x {spec.gpus.per_node}")
    allowed = pol.allowed_classes(policy, namespace, classes)
    if plan.gpu_class not in allowed:
        out.append(f"spec.plan.gpuClass: {plan.gpu_class!r} is not a class namespace "
                   f"{namespace} may use (allowed: {', '.join(allowed) or 'none'})")
    rule = pol.namespace_rule(policy, namespace)
    if rule is not None and rule.max_gpus_per_job is not None and \
            plan.gpus > rule.max_gpus_per_job:
        out.append(f"spec.plan.gpus: {plan.gpus} exceeds the {rule.max_gpus_per_job} GPUs per "
                   f"job allowed in namespace {namespace}")
    return out
