"""Arguments that move memory: multi_scale plans at the largest drawn size, rect/mosaic=0
drop the mosaic x4, compile is refused naming the argument, cache=ram and freeze are notes."""

from __future__ import annotations

import pytest

from yolofit.estimator.gpu import get_gpu_class
from yolofit.estimator.planner import PlanRequest, plan
from yolofit.estimator.profile import ProfileStore
from yolofit.estimator.train_args import memory_effects, memory_imgsz


@pytest.mark.parametrize(("imgsz", "ms", "want"), [(640, 0.0, 640), (640, 0.5, 960),
                                                   (640, 1.0, 1280), (320, 0.25, 416)])
def test_memory_imgsz(imgsz: int, ms: float, want: int) -> None:
    assert memory_imgsz(imgsz, ms) == want


@pytest.mark.parametrize(("args", "mosaic", "ms", "refused", "note"), [
    ({}, True, 0.0, False, None),
    ({"rect": True}, False, 0.0, False, "no mosaic"),
    ({"mosaic": 0.0}, False, 0.0, False, "no mosaic"),
    ({"multi_scale": 0.5}, True, 0.5, False, "multi_scale"),
    ({"multi_scale": 2}, True, 0.0, True, None),
    ({"compile": True}, True, 0.0, True, None),
    ({"cache": "ram"}, True, 0.0, False, "host memory"),
    ({"freeze": 10}, True, 0.0, False, "upper bound"),
    ({"mask_ratio": 4, "overlap_mask": True}, True, 0.0, False, None),
    ({"mask_ratio": 1}, True, 0.0, True, None),
    ({"mask_ratio": 8}, True, 0.0, False, "planned at 4"),
    ({"mask_ratio": "4"}, True, 0.0, True, None),
    ({"overlap_mask": False}, True, 0.0, True, None),
])
def test_memory_effects(args: dict, mosaic: bool, ms: float, refused: bool,  # type: ignore[type-arg]
                        note: str | None) -> None:
    e = memory_effects(args)
    assert (e.mosaic, e.multi_scale, bool(e.refusals)) == (mosaic, ms, refused)
    assert all(r.startswith("spec.args.") and "\n" not in r for r in e.refusals)
    if note:
        assert any(note in n for n in e.notes)


def test_mask_arguments_matter_to_segment_jobs_only() -> None:
    """Profiles trace segment masks at mask_ratio 4, one index map per image (Ultralytics'
    defaults): a job that asks for larger or per-object masks is refused with the factor;
    other tasks ignore both arguments, as Ultralytics does."""
    (refusal,) = memory_effects({"mask_ratio": 2}, task="segment").refusals
    assert refusal.startswith("spec.args.mask_ratio: 2 makes the segment loss's masks 4x "
                              "larger"), refusal
    for task in ("detect", "pose", "obb", "classify"):
        assert memory_effects({"mask_ratio": 1, "overlap_mask": False}, task=task) == \
            memory_effects({})


def test_multi_scale_plans_at_the_largest_size_and_keeps_imgsz() -> None:
    store, gpu = ProfileStore(cache_dir="/nonexistent"), [get_gpu_class("a100-80gb")]
    base = plan(PlanRequest(model="yolov8s", imgsz=640, amp="fp16"), gpu, store)
    multi = plan(PlanRequest(model="yolov8s", imgsz=640, amp="fp16", multi_scale=1.0), gpu,
                 store)  # draws up to 1280: the shipped 1280 profile
    assert multi.imgsz == 640 and multi.ultralytics_args["imgsz"] == 640
    assert "|1280|" in multi.profile_id and multi.batch_per_gpu < base.batch_per_gpu or \
        multi.predicted_device_bytes > base.predicted_device_bytes
