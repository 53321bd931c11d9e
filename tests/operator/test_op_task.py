"""spec.task: defaulted from the model, refused in one line naming the field when it
disagrees, carried into the plan (TASK column) and the trainer's config; spec.imgsz
defaulted by task as Ultralytics does."""

from __future__ import annotations

import pytest

from yolofit.operator.admission import job_imgsz, job_task, plan_request, task_error
from yolofit.operator.api import GPUCapacityPolicySpec, Plan, YOLOTrainingJobSpec
from yolofit.operator.launch import train_config


@pytest.mark.parametrize(("model", "task", "effective", "refused"), [
    ("yolov8n", None, "detect", False),
    ("yolo11s-seg", None, "segment", False),
    ("yolo11s-pose.pt", "pose", "pose", False),
    ("yolo11s-cls", "detect", "detect", True),
    ("yolo11s-obb.yaml", "segment", "segment", True),
    ("yolov8s", "classify", "classify", True),
    ("/data/runs/best.pt", "pose", "pose", False),  # the pod checks the checkpoint
])
def test_task_default_and_refusal(model: str, task: str | None, effective: str,
                                  refused: bool) -> None:
    spec = YOLOTrainingJobSpec(model=model, data="/d/data.yaml", task=task)
    assert job_task(spec) == effective
    error = task_error(spec)
    assert (error is not None) == refused
    if error:
        assert error.startswith("spec.task: ") and "\n" not in error


def test_task_reaches_the_trainer() -> None:
    spec = YOLOTrainingJobSpec(model="yolo11s-seg", data="/d/data.yaml")
    plan = Plan(gpu_class="t4", nodes=1, gpus_per_node=1, gpus=1, batch_per_gpu=8,
                accumulate=8, amp="fp16", imgsz=640, task="segment")
    assert train_config("j", "ns", spec, plan, 0)["task"] == "segment"


@pytest.mark.parametrize(("model", "task", "imgsz", "planned"), [
    ("yolo11s-cls", None, None, 224),  # ClassificationTrainer's own default
    ("/data/runs/best.pt", "classify", None, 224),
    ("yolo11s", None, None, 640),
    ("yolo11s-seg", None, None, 640),
    ("yolo11s-cls", None, 320, 320),  # given: kept
])
def test_imgsz_defaults_to_what_ultralytics_trains_the_task_at(
        model: str, task: str | None, imgsz: int | None, planned: int) -> None:
    spec = YOLOTrainingJobSpec(model=model, data="/d/data.yaml", task=task, imgsz=imgsz)
    assert job_imgsz(spec) == planned
    policy = GPUCapacityPolicySpec.model_validate({"classes": [{"name": "t4"}]})
    assert plan_request(spec, policy).imgsz == planned
