"""The label terms of a profile: what the densest sample pads (`per_object`) and what the
typical labels cost (`per_mean_object`), checked against counts made from the shapes
Ultralytics' losses use, not from the tracer.

Ultralytics 8.4 v8SegmentationLoss.single_mask_loss, per foreground anchor of an image:
`pred_mask = einsum(coefficients, proto)` (n, 160, 160) at imgsz 640 (mask_ratio 4), then
`binary_cross_entropy_with_logits(pred_mask, gt_mask)` in fp32 (autocast's fp32 list), which
saves its fp32 input and its fp32 target (`gt_mask.float()`) for backward - two 160 x 160
fp32 maps a foreground anchor, alive until backward - and returns a third, the per-pixel loss,
cropped in place and averaged. The TaskAlignedAssigner gives each object at most `topk` (10)
foreground anchors and at least one. So a typical label of a segment sample costs between
2 and topk x 3 fp32 mask maps. YOLO26's SegTaskAlignedAssigner (before that loss) decodes
the masks of each object's 3 x topk best candidate anchors to score them: per candidate a
160 x 160 matmul output (fp32 at most), its bool threshold and the cast for the IoU matmul
(fp32 on CPU, fp16 on CUDA) - at most 9 bytes a pixel. Pose's keypoint loss works on
(n, k, 3) tensors: a label costs far less than one such map. The densest sample's labels
pad the assigner's (b, max labels, anchors) tensors: at imgsz 640, 80^2 + 40^2 + 20^2 = 8400
anchors, a few fp32/bool tensors of them - between 4 and 64 bytes an anchor.
"""

from __future__ import annotations

import json
import math

import pytest

import yolofit.cli
from yolofit.estimator.gpu import get_gpu_class
from yolofit.estimator.profile import (
    MOSAIC_MEAN_FACTOR,
    MOSAIC_OBJECTS_FACTOR,
    Profile,
    ProfileKey,
    ProfileStore,
    estimate,
    mean_objects_per_sample,
    resolve_model,
)

STORE = ProfileStore(cache_dir="/nonexistent")
TOPK = 10  # v8DetectionLoss(tal_topk=10)
MASK_SIDE = 640 // 4  # imgsz / mask_ratio (Ultralytics' default cfg)
MASK_MAP = MASK_SIDE * MASK_SIDE * 4  # one fp32 160 x 160 map
ANCHORS = sum((640 // stride) ** 2 for stride in (8, 16, 32))


def _profile(model: str, nc: int = 80) -> Profile:
    ref = resolve_model(model)
    profile = STORE.get(ProfileKey(ref.name, ref.config_hash, 640, "fp16", "AdamW", nc, False))
    assert profile is not None, f"no shipped profile for {model} nc {nc}"
    return profile


@pytest.mark.parametrize(("model", "nc"), [("yolo11n-seg", 80), ("yolo11s-seg", 80),
                                           ("yolo11s-seg", 2), ("yolo26m-seg", 18)])
def test_segment_label_costs_its_mask_maps(model: str, nc: int) -> None:
    terms = _profile(model, nc).allocated
    most = TOPK * 3 * MASK_MAP
    if model.startswith("yolo26"):  # the mask-aware assigner's decoded candidates
        most = max(most, 3 * TOPK * MASK_SIDE * MASK_SIDE * 9)
    assert 2 * MASK_MAP <= terms.per_mean_object <= most, terms


@pytest.mark.parametrize("model", ["yolo11n-pose", "yolo11s-pose"])
def test_pose_label_costs_no_map(model: str) -> None:
    terms = _profile(model).allocated
    assert terms.per_mean_object < MASK_MAP, terms


@pytest.mark.parametrize(("model", "nc"), [("yolo11s-seg", 80), ("yolo11s-seg", 2),
                                           ("yolo11n-pose", 80), ("yolo11s-pose", 80),
                                           ("yolo26m-seg", 18)])
def test_densest_label_pads_the_assigner(model: str, nc: int) -> None:
    terms = _profile(model, nc).allocated
    assert 4 * ANCHORS <= terms.per_object, terms  # never below the padded targets
    if not model.endswith("seg"):  # seg: also the dense mask-loss excess (build.py)
        assert terms.per_object <= 64 * ANCHORS, terms


def test_profiles_without_the_mean_point_count_every_label_at_the_densest() -> None:
    """Detection profiles were traced at four points (no mean point): per_mean_object is 0,
    so an estimate with or without a mean is the same upper bound as before."""
    det = _profile("yolo11s")
    assert len(det.traced_at) == 4 and det.allocated.per_mean_object == 0
    gpu = get_gpu_class("l4")
    assert (estimate(det, 16, 20, gpu, mean_objects=3).peak_allocated_bytes
            == estimate(det, 16, 20, gpu).peak_allocated_bytes)


def test_mosaic_counts() -> None:
    assert mean_objects_per_sample(6) == math.ceil(6 * MOSAIC_MEAN_FACTOR) == 10
    assert mean_objects_per_sample(6, mosaic=False) == 6
    assert mean_objects_per_sample(None) is None
    assert MOSAIC_MEAN_FACTOR < MOSAIC_OBJECTS_FACTOR


@pytest.mark.parametrize(("batch", "most", "mean"), [(8, 2, 2), (16, 6, 5), (32, 40, 8)])
def test_segment_exceeds_detection_by_its_mask_terms(batch: int, most: int, mean: int) -> None:
    """Segment minus detection of the same scale, batch and densities: at least the
    prototypes (32 x 160 x 160 fp16 a sample), the overlap mask the loss makes (one fp32 map
    a sample) and two fp32 maps per foreground anchor of every typical label; and the
    difference grows with the typical labels by the traced mask term, not by the densest."""
    gpu = get_gpu_class("l4")
    seg, det = _profile("yolo11s-seg"), _profile("yolo11s")

    def extra(o: int, m: int) -> int:
        return (estimate(seg, batch, o, gpu, mean_objects=m).peak_allocated_bytes
                - estimate(det, batch, o, gpu, mean_objects=m).peak_allocated_bytes)

    per_sample = 32 * MASK_SIDE * MASK_SIDE * 2 + MASK_MAP
    typical = mean_objects_per_sample(mean)
    assert typical is not None
    assert extra(0, 0) >= batch * per_sample
    assert extra(most, mean) - extra(most, 0) >= batch * typical * 2 * MASK_MAP
    assert (extra(most, mean) - extra(most, 0)
            == batch * typical * seg.allocated.per_mean_object)
    # the densest count moves it by the padded term only, far less than the masks
    padded = extra(most, mean) - extra(mean, mean)
    assert padded <= batch * MOSAIC_OBJECTS_FACTOR * (most - mean) * seg.allocated.per_object


def test_cli_takes_the_mean(monkeypatch: pytest.MonkeyPatch, tmp_path,  # type: ignore[no-untyped-def]
                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(yolofit.cli, "_COMMAND_MODULES", ("yolofit.estimator.cli",))
    monkeypatch.setenv("YOLOFIT_PROFILE_DIR", str(tmp_path))
    base = ["estimate", "--model", "yolo11s-seg", "--batch", "16", "--objects", "6", "--json"]
    assert yolofit.cli.main(base) == 0
    densest = json.loads(capsys.readouterr().out)
    assert yolofit.cli.main([*base, "--mean-objects", "2"]) == 0
    typical = json.loads(capsys.readouterr().out)
    assert typical["mean_objects_per_image"] == 2 and densest["mean_objects_per_image"] is None
    assert typical["peak_allocated_bytes"] < densest["peak_allocated_bytes"]
    assert yolofit.cli.main([*base, "--mean-objects", "7"]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--mean-objects" in err and "--objects (6)" in err


@pytest.mark.slow  # seven real traced training steps of a small segment model at imgsz 128
def test_fitted_terms_bound_a_batch_with_one_dense_sample() -> None:
    """The profile is fitted on batches whose samples all hold the same labels; a real
    batch has one dense sample among typical ones (the assigner pads to it, the masks follow
    the real labels). Traced such batches stay under the estimate at (densest, mean), and
    far under the old count with every sample at the densest."""
    from yolofit.estimator.build import build_profile, key_for, trace_point
    from yolofit.estimator.models import build_model, resolve

    key = key_for("yolo11n-seg", 128, nc=2)
    model = build_model(resolve("yolo11n-seg"), nc=2)
    profile = build_profile(key, model=model)
    terms = profile.allocated
    assert terms.per_mean_object > 0
    for batch, typical, densest in ((4, 2, 40), (8, 3, 60)):
        point = trace_point(model, key, batch, typical, densest=densest)
        mean = math.ceil((densest + typical * (batch - 1)) / batch)
        bound = terms.at(batch, densest, mean)
        assert point.allocated <= bound, (batch, typical, densest, point.allocated, bound)
        assert bound < terms.at(batch, densest)  # the old count: every sample the densest
