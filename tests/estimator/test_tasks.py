"""Every task is traced with its own model and loss on targets of the right shape.

Each task's loss builds target buffers whose shape follows from the batch alone; the test
counts them independently (bytes from the shapes) and finds exactly those storages among the
traced loss-phase allocations:
- detect: `v8DetectionLoss.preprocess` pads targets to (batch, max objects, 5) fp32;
- obb: `v8OBBLoss.preprocess` pads to (batch, max objects, 6) fp32 (cls + xywhr);
- pose: `_batch_keypoints` pads keypoints to (batch, max objects, k, 3) fp32;
- segment: the overlap masks (batch, imgsz/4, imgsz/4) become fp32 in the loss;
- classify: cross-entropy's log-softmax of (batch, nc) fp32 logits.
A segment step also holds the mask prototypes and mask loss: its traced peak exceeds the
detection model of the same scale by at least the prototype output and the fp32 masks.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("YOLO_OFFLINE", "1")

from yolofit.estimator import tracer as T  # noqa: E402
from yolofit.estimator.identity import model_task, resolve_model, task_from_name  # noqa: E402
from yolofit.estimator.models import build_model  # noqa: E402

BATCH, IMGSZ, OBJECTS, NC = 2, 64, 3, 3


def _loss_allocs(model_name: str, imgsz: int = IMGSZ) -> tuple[list[int], T.TraceResult]:
    model = build_model(resolve_model(model_name), nc=NC)
    cfg = T.StepConfig(batch=BATCH, imgsz=imgsz, objects=OBJECTS, amp="off", iterations=1,
                       validate=False, compute="shape")
    result = T.trace_training_step(model, cfg)
    return [e.nbytes for e in result.tracker.events if e.alloc and e.phase == "loss"], result


EXPECTED = {  # task -> bytes of the task's target buffer, from shapes alone
    "detect": BATCH * OBJECTS * 5 * 4,
    "obb": BATCH * OBJECTS * 6 * 4,
    "pose": BATCH * OBJECTS * 17 * 3 * 4,
    "segment": BATCH * (IMGSZ // 4) ** 2 * 4,
    "classify": BATCH * NC * 4,
}
MODELS = {"detect": "yolo11n", "obb": "yolo11n-obb", "pose": "yolo11n-pose",
          "segment": "yolo11n-seg", "classify": "yolo11n-cls"}


@pytest.mark.parametrize("task", sorted(EXPECTED))
def test_task_loss_builds_its_target_buffers(task: str) -> None:
    allocs, result = _loss_allocs(MODELS[task])
    assert T.model_task(result_model := build_model(MODELS[task], nc=NC)) == task
    del result_model
    assert EXPECTED[task] in allocs, (task, sorted(set(allocs))[:40])


def test_synthetic_batches_have_the_task_shapes() -> None:
    seg = T.synthetic_batch(2, 64, 3, shape=T.TaskShape("segment"))
    assert seg["masks"].shape == (2, 16, 16) and seg["masks"].max() == 3
    assert T.synthetic_batch(1, 64, 300, shape=T.TaskShape("segment"))["masks"].dtype.itemsize == 4
    pose = T.synthetic_batch(2, 64, 3, shape=T.TaskShape("pose", kpt_shape=(5, 3)))
    assert pose["keypoints"].shape == (6, 5, 3)
    assert T.synthetic_batch(2, 64, 3, shape=T.TaskShape("obb"))["bboxes"].shape == (6, 5)
    cls = T.synthetic_batch(4, 32, 0, nc=3, shape=T.TaskShape("classify"))
    assert cls["cls"].shape == (4,) and cls["img"].dtype.is_floating_point


def test_segment_exceeds_detection_by_the_mask_terms() -> None:
    imgsz = 128
    _, det = _loss_allocs("yolo11n", imgsz)
    _, seg = _loss_allocs("yolo11n-seg", imgsz)
    det_peak, seg_peak = det.replay().peak_allocated, seg.replay().peak_allocated
    proto = BATCH * 32 * (imgsz // 4) ** 2 * 4  # Proto output (b, 32, h/4, w/4), fp32 (no AMP)
    masks = BATCH * (imgsz // 4) ** 2 * 4  # the fp32 masks of the loss
    assert seg_peak - det_peak >= proto + masks, (seg_peak, det_peak)


@pytest.mark.parametrize(("name", "task"), [
    ("yolo11s-seg", "segment"), ("yolo11s-pose.pt", "pose"), ("yolo11s-obb.yaml", "obb"),
    ("yolo11s-cls", "classify"), ("yolov8n", "detect"), ("/data/best.pt", None),
    ("/data/my-seg.pt", "segment")])
def test_task_from_model(name: str, task: str | None) -> None:
    assert model_task(name) == task
    if not name.startswith("/"):
        assert resolve_model(name).task == task
    assert task_from_name(name) == (None if task == "detect" else task)
