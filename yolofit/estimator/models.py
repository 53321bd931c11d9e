"""Resolve a model name, shipped YAML or local .yaml/.pt to an Ultralytics model of its task.

Name lookup and the config hash live in `profile.py` (`resolve_model`, `config_hash`:
sha256 of the canonical model dict; nc is keyed separately in `ProfileKey`), so the
planner and the tracer agree on identities without importing torch. This module adds the
torch side: building the model from its config, never downloading weights (memory does
not depend on weight values, so a YAML build is exact for a .pt of the same config).
"""

from __future__ import annotations

import contextlib
import io
import os
from typing import Any

from yolofit.estimator.profile import ModelRef, UnknownModel, model_families, resolve_model

# The detection families Ultralytics ships and their scale names, for docs and messages.
FAMILIES: dict[str, tuple[str, ...]] = {
    "yolov3": ("yolov3", "yolov3-spp", "yolov3-tiny"),
    "yolov5u": tuple(f"yolov5{s}u" for s in "nsmlx") + tuple(f"yolov5{s}6u" for s in "nsmlx"),
    "yolov6": tuple(f"yolov6{s}" for s in "nsmlx"),
    "yolov8": tuple(f"yolov8{s}" for s in "nsmlx"),
    "yolov9": ("yolov9t", "yolov9s", "yolov9m", "yolov9c", "yolov9e"),
    "yolov10": tuple(f"yolov10{s}" for s in "nsmblx"),
    "yolo11": tuple(f"yolo11{s}" for s in "nsmlx"),
    "yolo12": tuple(f"yolo12{s}" for s in "nsmlx"),
    "yolo26": tuple(f"yolo26{s}" for s in "nsmlx"),
}


def resolve(model: str) -> ModelRef:
    """`profile.resolve_model` with an error that names the model and lists the families."""
    try:
        return resolve_model(model)
    except UnknownModel as exc:
        families = ", ".join(FAMILIES)
        raise UnknownModel(
            f"unknown model {model!r} ({exc}); expected a local .yaml/.pt or a shipped "
            f"detection model of the families {families} "
            f"(e.g. yolov8s.yaml, yolo11m, yolo26n.yaml); shipped YAMLs: "
            f"{', '.join(model_families())}") from None


# The Ultralytics model class each task trains (ultralytics.nn.tasks).
TASK_MODELS: dict[str, str] = {"detect": "DetectionModel", "segment": "SegmentationModel",
                               "pose": "PoseModel", "obb": "OBBModel",
                               "classify": "ClassificationModel"}


def build_model(ref: ModelRef | str, nc: int = 80) -> Any:
    """A fresh model of the config's task (`DetectionModel`, `SegmentationModel`,
    `PoseModel`, `OBBModel` or `ClassificationModel`, as Ultralytics' trainers build it)
    with `nc` classes, on CPU in fp32, built from the config dict. A pose config carries its
    kpt_shape (see identity.with_kpt_shape)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    if isinstance(ref, str):
        ref = resolve(ref)
    import ultralytics.nn.tasks as tasks

    task = ref.task
    if task not in TASK_MODELS:
        raise UnknownModel(f"{ref.name}: task {task!r} is not one yolofit trains "
                           f"({', '.join(TASK_MODELS)})")
    cfg = dict(ref.config)
    cfg["nc"] = nc
    kwargs: dict[str, Any] = {"ch": 3, "nc": nc, "verbose": False}
    if task == "pose" and "kpt_shape" in cfg:
        kwargs["data_kpt_shape"] = tuple(cfg["kpt_shape"])
    with contextlib.redirect_stdout(io.StringIO()):
        model = getattr(tasks, TASK_MODELS[task])(cfg, **kwargs)
    return model.float().cpu()
