"""Checkpoints at admission: which architecture a job is planned for, and where its weights
may come from. Pure, no torch: the webhook cannot read a tenant's volume.

`spec.model` is the architecture (yolo11m, yolo11m.yaml, ...). A `.pt` path there is a
checkpoint named like an Ultralytics release (`/data/yolo11m-seg.pt`): its file name is the
architecture and the file the weights. `spec.weights` is any checkpoint to start from
(`/data/runs/best.pt`), with the architecture in `spec.model`. The plan is always made from
the architecture; what the checkpoint really holds is checked by the trainer before its first
step (yolofit/trainer/preflight.py, exit reason model-differs).
"""

from __future__ import annotations

import posixpath

from yolofit.estimator.identity import AmbiguousModel, UnknownModel, checkpoint_architecture
from yolofit.operator.api import YOLOTrainingJobSpec


def is_checkpoint(model: str) -> bool:
    return model.endswith(".pt")


def architecture(spec: YOLOTrainingJobSpec) -> str:
    """The model the plan is made for: spec.model, or the architecture a .pt's name implies
    (spec.model itself when it implies none: `errors` refuses such a job first)."""
    if not is_checkpoint(spec.model):
        return spec.model
    try:
        return checkpoint_architecture(spec.model)
    except UnknownModel:
        return spec.model


def checkpoint(spec: YOLOTrainingJobSpec) -> str | None:
    """The checkpoint training starts from: spec.weights, or a .pt spec.model; None = the
    architecture's random initialisation."""
    if spec.weights:
        return spec.weights
    return spec.model if is_checkpoint(spec.model) else None


def errors(spec: YOLOTrainingJobSpec) -> list[str]:
    """One line per problem, each naming the field and the fix."""
    out = []
    if is_checkpoint(spec.model):
        out += _model_errors(spec)
    if spec.weights is not None:
        out += path_errors("spec.weights", spec.weights, spec)
    return out


def _model_errors(spec: YOLOTrainingJobSpec) -> list[str]:
    base = posixpath.basename(spec.model)
    weights = spec.model if spec.model.startswith("/") else f"/data/{base}"
    if spec.weights is not None:
        return [f"spec.model: {spec.model} is a checkpoint and spec.weights is {spec.weights}; "
                f"set spec.model to the architecture (e.g. yolo11m) and keep one checkpoint "
                f"in spec.weights"]
    try:
        checkpoint_architecture(spec.model)
    except AmbiguousModel as exc:
        return [f"spec.model: {exc}; set spec.model to the architecture (e.g. "
                f"{_example(base)}) and spec.weights: {weights}"]
    except UnknownModel:
        return [f"spec.model: {base} names no architecture; set spec.model to the "
                f"architecture (e.g. yolo11m) and spec.weights: {weights}"]
    return path_errors("spec.model", spec.model, spec)


def _example(base: str) -> str:
    """yolov8.pt -> yolov8s, yolo11-seg.pt -> yolo11s-seg: the name with a scale."""
    stem = base.removesuffix(".pt")
    head, dash, tail = stem.partition("-")
    return f"{head}s{dash}{tail}"


def path_errors(field: str, path: str, spec: YOLOTrainingJobSpec) -> list[str]:
    """A checkpoint path must be absolute, a .pt file, and inside one of the job's mounts
    (the pod sees nothing else; nothing is downloaded)."""
    if not path.startswith("/"):
        scratch = (f", or spec.model: {checkpoint_architecture(path)} to train the "
                   f"architecture from scratch" if field == "spec.model" else "")
        return [f"{field}: {path!r} is not an absolute path; give the checkpoint's path inside "
                f"a mounted volume (e.g. /data/runs/best.pt){scratch}; nothing is downloaded"]
    if not path.endswith(".pt"):
        return [f"{field}: {path!r} is not a .pt checkpoint; give an Ultralytics checkpoint "
                f"(e.g. /data/runs/best.pt)"]
    if posixpath.normpath(path) != path:
        return [f"{field}: {path!r} is not a normalised path; write it as "
                f"{posixpath.normpath(path)!r}"]
    paths = [m.get("mountPath") for m in spec.volume_mounts]
    mounts = [m.rstrip("/") or "/" for m in paths if isinstance(m, str) and m.startswith("/")]
    if not any(path.startswith(m if m == "/" else m + "/") for m in mounts):
        where = ", ".join(mounts) if mounts else "none"
        return [f"{field}: {path} is not under any of spec.volumeMounts (mountPath: {where}); "
                f"mount the volume that holds the checkpoint"]
    return []
