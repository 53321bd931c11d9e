"""Properties of every plan: within budget, maximal, and batch x world x accumulate ~ nbs."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from yolofit.estimator.planner import PlanRequest, plan_for_class
from yolofit.estimator.profile import ProfileStore, Terms, estimate

from .builders import HASH, GiB, MiB, gpu, key, profile

gpus = st.builds(
    gpu,
    usable=st.integers(2 * GiB, 160 * GiB),
    bf16=st.booleans(),
    headroom=st.floats(0.0, 0.5),
    context=st.integers(0, 1 * GiB),
    cublas=st.integers(0, 64 * MiB),
    cudnn=st.integers(0, 512 * MiB),
    fragmentation=st.floats(0.0, 0.2),
    nccl=st.integers(0, 1 * GiB),
)

requests = st.builds(
    PlanRequest,
    model=st.just("yolov8s.yaml"),
    config_hash=st.just(HASH),
    imgsz=st.just(640),
    nbs=st.integers(1, 512),
    world_size=st.integers(1, 64),
    amp=st.sampled_from(["auto", "fp16", "off"]),
    objects=st.integers(0, 500),
    batch_per_gpu=st.one_of(st.none(), st.integers(1, 256)),
    allow_checkpointing=st.booleans(),
)


@st.composite
def stores(draw: st.DrawFn) -> ProfileStore:
    profiles = []
    for amp in ("off", "fp16", "bf16"):
        fixed = draw(st.integers(100 * MiB, 60 * GiB))
        per_sample = draw(st.integers(0, 4 * GiB))
        per_object = draw(st.integers(0, 4 * MiB))
        overhead = Terms(draw(st.integers(0, 512 * MiB)), draw(st.integers(0, 256 * MiB)))
        profiles.append(profile(key(amp=amp), fixed, per_sample, per_object, overhead))
        shrink = draw(st.integers(1, 16))
        profiles.append(profile(key(amp=amp, ckpt=True), fixed, per_sample // shrink,
                                per_object, overhead))
    return ProfileStore.of(profiles)


@settings(max_examples=400, deadline=None)
@given(req=requests, g=gpus, store=stores())
def test_plan_never_exceeds_budget_and_keeps_nbs(req: PlanRequest, g, store: ProfileStore) -> None:
    result = plan_for_class(req, g, store)
    if not result.fits:
        assert result.batch_per_gpu == 0 and result.reason
        return
    budget = int(g.usable_bytes * (1 - g.headroom))
    assert result.predicted_device_bytes <= budget
    assert (result.predicted_reserved_bytes + g.cuda_context_bytes
            + (g.nccl_bytes if req.world_size > 1 else 0)) == result.predicted_device_bytes
    global_batch = result.batch_per_gpu * req.world_size
    assert abs(global_batch * result.accumulate - req.nbs) <= global_batch
    assert result.ultralytics_args["batch"] == global_batch
    assert result.accumulate == max(round(req.nbs / global_batch), 1)


@settings(max_examples=300, deadline=None)
@given(req=requests, g=gpus, store=stores())
def test_plan_takes_the_largest_batch_and_checkpoints_only_when_needed(
        req: PlanRequest, g, store: ProfileStore) -> None:
    result = plan_for_class(req, g, store)
    amp = result.amp
    plain = store.get(key(amp=amp))
    assert plain is not None

    def device(p, batch: int) -> int:
        return estimate(p, batch, req.objects, g, world_size=req.world_size).device_total_bytes

    smallest = req.batch_per_gpu or 1
    plain_fits = device(plain, smallest) <= g.budget_bytes
    if result.fits:
        assert result.checkpointing == (not plain_fits)
        if req.batch_per_gpu is None and result.batch_per_gpu < max(req.nbs // req.world_size, 1):
            used = store.get(key(amp=amp, ckpt=result.checkpointing))
            assert device(used, result.batch_per_gpu + 1) > g.budget_bytes
    else:
        assert not plain_fits
        if req.allow_checkpointing:
            ckpt = store.get(key(amp=amp, ckpt=True))
            assert device(ckpt, smallest) > g.budget_bytes


@settings(max_examples=300, deadline=None)
@given(req=requests, g=gpus, store=stores(), batch=st.integers(1, 512))
def test_planner_arithmetic_equals_estimate(req: PlanRequest, g, store: ProfileStore,
                                            batch: int) -> None:
    from yolofit.estimator.planner import _Fit

    for p in store.profiles.values():
        fast = _Fit(p, g, req).device(batch)
        slow = estimate(p, batch, req.objects, g, world_size=req.world_size).device_total_bytes
        assert fast == slow


@settings(max_examples=200, deadline=None)
@given(req=requests, classes=st.lists(gpus, min_size=1, max_size=4), store=stores())
def test_plan_takes_the_first_class_that_fits(req: PlanRequest, classes, store) -> None:
    from yolofit.estimator.planner import plan

    named = [g.__class__(**{**g.__dict__, "name": f"g{i}"}) for i, g in enumerate(classes)]
    result = plan(req, named, store, all_classes=[])
    singles = [plan_for_class(req, g, store) for g in named]
    first = next((p for p in singles if p.fits), None)
    if first is None:
        assert not result.fits
        assert result.gpu_class == max(named, key=lambda g: g.budget_bytes).name
    else:
        assert result == first
