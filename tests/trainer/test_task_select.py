"""The trainer picks the task's Ultralytics trainer and refuses a plan whose task
disagrees with the model (fast: no training)."""

from __future__ import annotations

import pytest

from yolofit.trainer.config import TrainConfig
from yolofit.trainer.errors import PlanMismatch
from yolofit.trainer.trainer import model_task, trainer_class


def _cfg(model: str, task: str | None = None) -> TrainConfig:
    return TrainConfig(model=model, data="/d.yaml", batch_per_gpu=2, task=task)  # type: ignore[arg-type]


@pytest.mark.parametrize(("model", "task", "base"), [
    ("yolov8n.yaml", "detect", "DetectionTrainer"),
    ("yolo11n-seg.yaml", "segment", "SegmentationTrainer"),
    ("yolo11n-pose", "pose", "PoseTrainer"),
    ("yolo11n-obb.yaml", "obb", "OBBTrainer"),
    ("yolo11n-cls.yaml", "classify", "ClassificationTrainer"),
])
def test_task_trainer(model: str, task: str, base: str) -> None:
    assert model_task(_cfg(model)) == task
    cls = trainer_class(task)
    assert base in [b.__name__ for b in cls.__mro__] and hasattr(cls, "_setup_ddp")


def test_plan_task_that_disagrees_with_the_model_fails() -> None:
    with pytest.raises(PlanMismatch, match="task: the plan says detect"):
        model_task(_cfg("yolo11n-cls.yaml", "detect"))
