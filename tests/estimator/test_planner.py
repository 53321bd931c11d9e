"""The planner's choices and its "does not fit" answers, on hand-made profiles."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from yolofit.estimator.planner import (
    PlanRequest,
    ProfileMissing,
    accumulate_for,
    auto_optimizer,
    plan,
    plan_for_class,
)
from yolofit.estimator.profile import Profile, ProfileStore, Terms

from .builders import HASH, GiB, MiB, gpu, key, profile

# Lab class: 10 GiB usable, 10 % headroom -> 9216 MiB budget, 500 MiB context, no workspaces.
# Base profile: 1 GiB + 512 MiB per sample -> device(b) = 1524 + 512 b MiB -> largest b = 15.
LAB = gpu()
BIG = gpu("big", usable=80 * GiB, bf16=True)


def req(**overrides: Any) -> PlanRequest:
    fields: dict[str, Any] = {"model": "yolov8s.yaml", "config_hash": HASH, "imgsz": 640,
                              "objects": 0, "nbs": 64}
    return PlanRequest(**{**fields, **overrides})


@dataclass
class Case:
    name: str
    request: PlanRequest
    profiles: list[Profile]
    expect: dict[str, Any]
    gpu: Any = field(default=LAB)


def _all_amps(**kw: Any) -> list[Profile]:
    return [profile(key(amp=a, **kw)) for a in ("off", "fp16", "bf16")]


CASES = [
    Case("auto amp is fp16 on a class without bf16", req(), _all_amps(),
         {"fits": True, "amp": "fp16", "batch_per_gpu": 15, "accumulate": 4}),
    Case("auto amp is bf16 where the class has it", req(), _all_amps(),
         {"fits": True, "amp": "bf16", "batch_per_gpu": 64, "accumulate": 1}, BIG),
    Case("pinned fp16 is kept on a bf16 class", req(amp="fp16"), _all_amps(),
         {"amp": "fp16"}, BIG),
    Case("pinned off is kept", req(amp="off"), _all_amps(), {"amp": "off"}),
    Case("policy without AMP lever: auto means off", req(allow_amp=False), _all_amps(),
         {"amp": "off"}),
    Case("bf16 falls back to the fp16 profile", req(), [profile(key(amp="fp16"))],
         {"fits": True, "amp": "bf16", "profile_id": key(amp="fp16").id}, BIG),
    Case("largest batch, capped at nbs/world", req(world_size=8), _all_amps(),
         {"batch_per_gpu": 8, "accumulate": 1}, BIG),
    Case("cap with nbs not divisible by world", req(world_size=3), _all_amps(),
         {"batch_per_gpu": 21, "accumulate": 1}, BIG),
    # 15 fits alone; DDP's gradient buckets leave 14, and 14 x 3 x 2 = 84 is nbs exactly.
    Case("DDP buckets cost a batch on a tight class", req(world_size=3, nbs=84), _all_amps(),
         {"batch_per_gpu": 14, "accumulate": 2}),
    # 14 fits, but 14 x 2 would step every 56 (or 84) images: 11 x 2 x 3 = 66 is within 10 %.
    Case("batch given up to keep the effective batch near nbs", req(world_size=2), _all_amps(),
         {"batch_per_gpu": 11, "accumulate": 3,
          "ultralytics_args": {"batch": 22, "nbs": 64, "amp": True, "imgsz": 640}}),
    Case("accumulation from the global batch", req(world_size=2, nbs=56), _all_amps(),
         {"batch_per_gpu": 14, "accumulate": 2,
          "ultralytics_args": {"batch": 28, "nbs": 56, "amp": True, "imgsz": 640}}),
    Case("objects per image x4 (mosaic) per sample",
         req(objects=10), [profile(key(), per_sample=256 * MiB, per_object=10 * MiB)],
         # device = 1524 + (256 + 10*40) b MiB <= 9216 -> b = 11
         {"batch_per_gpu": 11, "accumulate": 6}),
    Case("typical labels x5/3 (mosaic) per sample, the densest x4",
         req(objects=10, mean_objects=3),
         [profile(key(), per_sample=256 * MiB, per_object=1 * MiB, per_mean_object=10 * MiB)],
         # device = 1524 + (256 + 1*40 + 10*5) b MiB <= 9216 -> b = 22
         {"batch_per_gpu": 22, "accumulate": 3}),
    Case("pinned batch that fits is used as is", req(batch_per_gpu=4), _all_amps(),
         {"fits": True, "batch_per_gpu": 4, "accumulate": 16, "checkpointing": False}),
    Case("checkpointing only when batch 1 does not fit",
         req(), [profile(key(), fixed=9 * GiB), profile(key(ckpt=True), fixed=4 * GiB)],
         # ckpt: 4096 + 500 + 512 b <= 9216 -> b = 9
         {"fits": True, "checkpointing": True, "batch_per_gpu": 9, "accumulate": 7}),
    Case("no checkpointing while batch 1 fits, even if it is only batch 1",
         req(), [profile(key(), fixed=8 * GiB), profile(key(ckpt=True), fixed=2 * GiB)],
         {"fits": True, "checkpointing": False, "batch_per_gpu": 1, "accumulate": 64}),
    Case("checkpointing for a pinned batch that does not fit",
         req(batch_per_gpu=16), [profile(key()), profile(key(ckpt=True), per_sample=128 * MiB)],
         {"fits": True, "checkpointing": True, "batch_per_gpu": 16, "accumulate": 4}),
    Case("no imgsz reduction unless the policy allows it",
         req(imgsz=1280), [profile(key(1280), fixed=12 * GiB),
                           profile(key(1280, ckpt=True), fixed=11 * GiB),
                           profile(key(640))],
         {"fits": False}),
    Case("imgsz reduced to the largest traced size that fits",
         req(imgsz=1280, allow_imgsz_reduction=True, min_imgsz=320),
         [profile(key(1280), fixed=12 * GiB), profile(key(1280, ckpt=True), fixed=11 * GiB),
          profile(key(960), fixed=10 * GiB), profile(key(640)), profile(key(320))],
         {"fits": True, "imgsz": 640, "checkpointing": False, "batch_per_gpu": 15,
          "ultralytics_args": {"batch": 15, "nbs": 64, "amp": True, "imgsz": 640}}),
    Case("checkpointing before imgsz reduction",
         req(imgsz=1280, allow_imgsz_reduction=True),
         [profile(key(1280), fixed=12 * GiB), profile(key(1280, ckpt=True)), profile(key(640))],
         {"fits": True, "imgsz": 1280, "checkpointing": True}),
    Case("imgsz floor respected",
         req(imgsz=1280, allow_imgsz_reduction=True, min_imgsz=960),
         [profile(key(1280), fixed=12 * GiB), profile(key(1280, ckpt=True), fixed=11 * GiB),
          profile(key(640))],
         {"fits": False, "imgsz": 1280}),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_plan_choices(case: Case) -> None:
    result = plan_for_class(case.request, case.gpu, ProfileStore.of(case.profiles))
    got = {name: getattr(result, name) for name in case.expect}
    assert got == case.expect
    if result.fits:
        assert result.predicted_device_bytes <= case.gpu.budget_bytes
        assert result.ultralytics_args["batch"] == result.batch_per_gpu * case.request.world_size


def test_largest_batch_is_exact_at_the_boundary() -> None:
    # budget 9216 MiB; make batch 15 land exactly on it: 1524 + 512*15 = 9204; add 12 MiB fixed.
    store = ProfileStore.of([profile(key(), fixed=1 * GiB + 12 * MiB)])
    assert plan_for_class(req(), LAB, store).batch_per_gpu == 15
    store = ProfileStore.of([profile(key(), fixed=1 * GiB + 12 * MiB + 1)])
    assert plan_for_class(req(), LAB, store).batch_per_gpu == 14


def test_workspaces_fragmentation_and_context_count_against_the_budget() -> None:
    # Budget 9216 MiB. Per batch b: reserved 1024 + 512 b MiB, workspaces 64 + 256 MiB,
    # fragmentation 5 % of reserved rounded up to whole 2 MiB blocks, context 400 MiB.
    # b = 13: 7680 + 320 + 384 (5 % = 384.0) + 400 = 8784 MiB fits;
    # b = 14: 8192 + 320 + 410 (5 % = 409.6 -> 410) + 400 = 9322 MiB does not.
    g = gpu(cublas=64 * MiB, cudnn=256 * MiB, fragmentation=0.05, context=400 * MiB)
    result = plan_for_class(req(), g, ProfileStore.of([profile(key())]))
    assert (result.fits, result.batch_per_gpu, result.accumulate) == (True, 13, 5)
    assert result.breakdown["fragmentation"] == 384 * MiB
    assert result.predicted_reserved_bytes == (7680 + 320 + 384) * MiB
    assert result.predicted_device_bytes == 8784 * MiB <= g.budget_bytes
    pinned = plan_for_class(req(batch_per_gpu=14, allow_checkpointing=False), g,
                            ProfileStore.of([profile(key())]))
    assert not pinned.fits and pinned.predicted_device_bytes == 9322 * MiB


def test_ddp_adds_gradient_buckets_and_nccl() -> None:
    g = gpu(nccl=512 * MiB)
    store = ProfileStore.of([profile(key())])
    single = plan_for_class(req(batch_per_gpu=4), g, store)
    multi = plan_for_class(req(batch_per_gpu=4, world_size=2), g, store)
    grads = 4 * 10_000_000
    assert multi.breakdown["ddp_buckets"] == grads
    assert multi.predicted_reserved_bytes - single.predicted_reserved_bytes == grads
    assert multi.predicted_device_bytes - single.predicted_device_bytes == grads + 512 * MiB


def test_utilisation_and_usable() -> None:
    result = plan_for_class(req(), LAB, ProfileStore.of([profile(key())]))
    assert result.usable_bytes == 10 * GiB
    assert result.budget_bytes == int(10 * GiB * 0.9)
    assert result.utilisation == pytest.approx((1524 + 512 * 15) / 10240)


# --- does not fit ----------------------------------------------------------------------------

def _huge() -> list[Profile]:
    return [profile(key(1280), fixed=20 * GiB), profile(key(1280, ckpt=True), fixed=17 * GiB)]


def test_does_not_fit_names_needs_levers_usable_and_a_class_that_fits() -> None:
    t4 = gpu("t4", usable=15 * GiB)
    a100 = gpu("a100-80gb", usable=80 * GiB, bf16=True)
    h200 = gpu("h200", usable=140 * GiB, bf16=True)
    result = plan(req(imgsz=1280), [t4], ProfileStore.of(_huge()), all_classes=[h200, a100])
    assert not result.fits
    assert (result.batch_per_gpu, result.accumulate, result.ultralytics_args) == (0, 0, {})
    # needs at batch 1 with AMP and checkpointing: 17 GiB + 512 MiB + 500 MiB context
    assert result.reason == (
        "yolov8s at imgsz 1280 needs 18.0 GiB at batch 1 with AMP (fp16) and checkpointing; "
        "the largest class allowed (t4) has 13.5 GiB usable (15.0 GiB less 10% headroom); "
        "it would fit on a100-80gb")
    assert result.predicted_device_bytes == 17 * GiB + 512 * MiB + 500 * MiB


def test_does_not_fit_anywhere() -> None:
    result = plan(req(imgsz=1280), [LAB], ProfileStore.of(_huge()), all_classes=[])
    assert result.reason.endswith("; no known GPU class would fit it")


def test_does_not_fit_without_checkpointing_lever_says_so() -> None:
    result = plan(req(imgsz=1280, allow_checkpointing=False), [LAB], ProfileStore.of(_huge()),
                  all_classes=[])
    assert "needs 21.0 GiB at batch 1 with AMP (fp16);" in result.reason


def test_does_not_fit_after_imgsz_reduction_names_the_smallest_size() -> None:
    profiles = [*_huge(), profile(key(640), fixed=15 * GiB), profile(key(640, ckpt=True),
                                                                     fixed=12 * GiB)]
    result = plan(req(imgsz=1280, allow_imgsz_reduction=True, min_imgsz=320), [LAB],
                  ProfileStore.of(profiles), all_classes=[])
    assert result.reason.startswith(
        "yolov8s even at imgsz 640 (asked 1280) needs 13.0 GiB at batch 1 with AMP (fp16) and "
        "checkpointing")


def test_pinned_bf16_on_a_class_without_it() -> None:
    result = plan(req(amp="bf16"), [LAB], ProfileStore.of(_all_amps()), all_classes=[BIG])
    assert not result.fits
    assert result.reason.startswith("amp=bf16 is pinned but lab has no bf16")
    assert result.reason.endswith("it would fit on big")


def test_plan_picks_the_first_class_in_preference_order_that_fits() -> None:
    small = gpu("small", usable=2 * GiB)
    store = ProfileStore.of(_all_amps() + [profile(key(amp=a, ckpt=True), fixed=2 * GiB)
                                           for a in ("fp16", "bf16")])
    result = plan(req(), [small, LAB, BIG], store)
    assert result.gpu_class == "lab"
    assert plan(req(), [BIG, LAB], store).gpu_class == "big"


def test_missing_profile_raises_with_its_key() -> None:
    with pytest.raises(ProfileMissing) as err:
        plan_for_class(req(), LAB, ProfileStore.of([]))
    assert err.value.key == key()
    # the checkpointing profile is only needed when batch 1 does not fit
    with pytest.raises(ProfileMissing) as err:
        plan_for_class(req(), LAB, ProfileStore.of([profile(key(), fixed=9 * GiB)]))
    assert err.value.key == key(ckpt=True)


# --- small rules -----------------------------------------------------------------------------

@pytest.mark.parametrize(("batch", "world", "nbs", "acc"), [
    (16, 1, 64, 4), (16, 4, 64, 1), (15, 1, 64, 4), (6, 1, 64, 11), (1, 1, 64, 64),
    (1, 128, 64, 1), (21, 3, 64, 1), (5, 2, 64, 6),
])
def test_accumulate_matches_ultralytics(batch: int, world: int, nbs: int, acc: int) -> None:
    """The table is Ultralytics' rule (engine/trainer.py) worked by hand; what it means: no
    other accumulation brings the global batch nearer nbs (ties: 5 x 2 x 6 = 60 or 70)."""
    assert accumulate_for(batch, world, nbs) == acc
    nearest = min(abs(batch * world * k - nbs) for k in range(1, nbs + 1))
    assert abs(batch * world * acc - nbs) == nearest


@pytest.mark.parametrize(("images", "epochs", "expected"), [
    (118_287, 100, "MuSGD"),  # COCO: 1849 iterations/epoch at nbs 64
    (5_000, 100, "AdamW"),
    (640_000, 1, "AdamW"),
])
def test_auto_optimizer_follows_ultralytics(images: int, epochs: int, expected: str) -> None:
    assert auto_optimizer(images, epochs) == expected


@pytest.mark.parametrize(("overrides", "field"), [
    ({"imgsz": 100}, "imgsz"), ({"imgsz": 0}, "imgsz"), ({"nbs": 0}, "nbs"),
    ({"world_size": 0}, "world_size"), ({"amp": "fp8"}, "amp"), ({"objects": -1}, "objects"),
    ({"batch_per_gpu": 0}, "batch_per_gpu"), ({"optimizer": "Adam"}, "optimizer"),
    ({"min_imgsz": 33}, "min_imgsz"), ({"nc": 0}, "nc"),
    ({"objects": 5, "mean_objects": 6}, "mean_objects"), ({"mean_objects": -1}, "mean_objects"),
])
def test_request_validation_names_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}: "):
        req(**overrides)


def test_terms_max_batch_closed_form() -> None:
    t = Terms(100, 10, 1)
    assert t.max_batch(100) == 0
    assert t.max_batch(109) == 0
    assert t.max_batch(110) == 1
    assert t.max_batch(100 + 12 * 5, objects=2) == 5
    assert Terms(5, 0).max_batch(10) >= 2**30
