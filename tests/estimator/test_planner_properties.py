"""Properties of every plan: within budget, the largest batch that keeps the effective batch near
nbs, checkpointing only when needed, and a reason when nothing fits.

The scenarios are built backwards so that each asserted branch runs in a large share of the
examples (a random request mostly hits the nbs / world cap, issue 14): a scenario first draws
which branch to aim at, then the GPU's usable memory that puts the boundary there - the largest
fitting batch below the cap, a checkpointing-only fit, a pinned batch, or no fit at all - over
world sizes 1-16 and nbs values that mostly do not divide. `test_scenarios_reach_every_branch`
measures the share of each branch as the planner actually answers and fails if one gets rare.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from yolofit.estimator.gpu import GpuClass
from yolofit.estimator.planner import (
    Plan,
    PlanRequest,
    accumulate_for,
    nbs_tolerance,
    plan,
    plan_for_class,
)
from yolofit.estimator.profile import Profile, ProfileStore, Terms, estimate

from .builders import HASH, GiB, MiB, gpu, key, profile

BRANCHES = ("largest batch (memory-bound)", "capped at nbs / world", "checkpointing plan",
            "pinned batch", "does not fit")
AIMS = ("largest", "capped", "checkpointing", "pinned", "no_fit")
# Of the examples, per branch. Measured 12-30 % per branch over 5 seeds; but Hypothesis is an
# adaptive explorer, not an i.i.d. sampler, and the same derandomized run gave 7 % for one
# branch after other modules' tests ran in the session, so the floor is set below that.
MIN_SHARE = 0.05


@dataclass(frozen=True)
class Scenario:
    req: PlanRequest
    gpu: GpuClass
    store: ProfileStore
    aim: str


def device(p: Profile | None, batch: int, req: PlanRequest, g: GpuClass) -> int:
    assert p is not None
    return estimate(p, batch, req.objects, g, world_size=req.world_size).device_total_bytes


def cap(req: PlanRequest) -> int:
    return max(req.nbs // req.world_size, 1)


constants = st.fixed_dictionaries({
    "bf16": st.booleans(), "headroom": st.floats(0.0, 0.5),
    "context": st.integers(0, 1 * GiB), "cublas": st.integers(0, 64 * MiB),
    "cudnn": st.integers(0, 512 * MiB), "fragmentation": st.floats(0.0, 0.2),
    "nccl": st.integers(0, 1 * GiB)})


@st.composite
def stores(draw: st.DrawFn) -> ProfileStore:
    profiles = []
    for amp in ("off", "fp16", "bf16"):
        fixed = draw(st.integers(100 * MiB, 60 * GiB))
        per_sample = draw(st.integers(1 * MiB, 4 * GiB))
        per_object = draw(st.integers(0, 4 * MiB))
        per_mean = draw(st.integers(0, 4 * MiB))
        overhead = Terms(draw(st.integers(0, 512 * MiB)), draw(st.integers(0, 256 * MiB)))
        profiles.append(profile(key(amp=amp), fixed, per_sample, per_object, overhead,
                                per_mean_object=per_mean))
        shrink = draw(st.integers(2, 16))
        profiles.append(profile(key(amp=amp, ckpt=True), fixed // shrink, per_sample // shrink,
                                per_object, overhead))
    return ProfileStore.of(profiles)


def with_budget(g: GpuClass, low: int, high: int, u: float) -> GpuClass | None:
    """`g` with the usable memory that puts its budget in [low, high], or None if none does."""
    if high < low:
        return None
    target = low + int((high - low) * u)
    usable = int(target / (1 - g.headroom))
    for candidate in (usable - 1, usable, usable + 1, usable + 2):
        out = replace(g, usable_bytes=candidate, memory_bytes=candidate)
        if low <= out.budget_bytes <= high:
            return out
    return None


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    aim = draw(st.sampled_from(AIMS))
    world = draw(st.integers(1, 16))
    boundary = draw(st.integers(1, 48))  # the largest batch that fits, for the fitting aims
    # nbs above world x (boundary + 1) so memory, not the cap, binds - except when aiming at
    # the cap; odd offsets make most nbs values not divide by the world size.
    low = world * (boundary + 1) if aim in ("largest", "checkpointing") else 1
    nbs = draw(st.integers(low, low + 700))
    pinned = draw(st.integers(1, 64)) if aim == "pinned" else None
    req = PlanRequest(model="yolov8s.yaml", config_hash=HASH, imgsz=640, nbs=nbs,
                      world_size=world, amp=draw(st.sampled_from(["auto", "fp16", "off"])),
                      objects=draw(st.integers(0, 300)), batch_per_gpu=pinned,
                      allow_checkpointing=aim == "checkpointing" or (
                          aim != "largest" and draw(st.booleans())))
    store = draw(stores())
    g = gpu(usable=1 * GiB, **draw(constants))
    amp = "off" if req.amp == "off" else ("bf16" if req.amp == "auto" and g.bf16 else "fp16")
    plain, ckpt = store.get(key(amp=amp)), store.get(key(amp=amp, ckpt=True))
    u = draw(st.floats(0.0, 1.0, exclude_max=True))
    smallest = pinned or 1
    if aim == "largest":
        fitted = with_budget(g, device(plain, boundary, req, g),
                             device(plain, boundary + 1, req, g) - 1, u)
    elif aim == "capped":
        fitted = with_budget(g, device(plain, cap(req), req, g),
                             device(plain, cap(req), req, g) * 2, u)
    elif aim == "checkpointing":
        # the boundary must sit below where batch 1 fits without checkpointing
        while boundary > 1 and device(ckpt, boundary, req, g) >= device(plain, 1, req, g):
            boundary -= 1
        fitted = with_budget(g, device(ckpt, boundary, req, g),
                             min(device(ckpt, boundary + 1, req, g),
                                 device(plain, 1, req, g)) - 1, u)
    elif aim == "pinned":
        fitted = with_budget(g, device(plain, smallest, req, g),
                             device(plain, smallest, req, g) * 2, u)
    else:
        least = min(device(plain, smallest, req, g), device(ckpt, smallest, req, g))
        fitted = with_budget(g, least // 4, least - 1, u)
    return Scenario(req, fitted or replace(g, usable_bytes=draw(st.integers(2, 160)) * GiB), store,
                    aim)


def branch(s: Scenario, result: Plan) -> str:
    """Which claim a plan exercises, from the planner's answer (not from the aim)."""
    if not result.fits:
        return "does not fit"
    if result.checkpointing:
        return "checkpointing plan"
    if s.req.batch_per_gpu is not None:
        return "pinned batch"
    largest = max(b for b in range(1, cap(s.req) + 1)
                  if b == 1 or device(s.store.get(key(amp=result.amp)), b, s.req, s.gpu)
                  <= s.gpu.budget_bytes)
    return "capped at nbs / world" if largest == cap(s.req) else "largest batch (memory-bound)"


@settings(max_examples=400, deadline=None)
@given(s=scenarios())
def test_plan_stays_in_budget_and_near_nbs(s: Scenario) -> None:
    req, g = s.req, s.gpu
    result = plan_for_class(req, g, s.store)
    if not result.fits:
        assert result.batch_per_gpu == 0 and result.accumulate == 0
        assert "needs" in result.reason or "bf16" in result.reason
        return
    assert result.predicted_device_bytes <= g.budget_bytes
    assert (result.predicted_reserved_bytes + g.cuda_context_bytes
            + (g.nccl_bytes if req.world_size > 1 else 0)) == result.predicted_device_bytes
    global_batch = result.batch_per_gpu * req.world_size
    assert result.ultralytics_args == {"batch": global_batch, "nbs": req.nbs, "amp": True
                                       if result.amp != "off" else False, "imgsz": 640}
    # Ultralytics derives accumulate = max(round(nbs / batch), 1) from these args itself:
    assert result.accumulate == accumulate_for(result.batch_per_gpu, req.world_size, req.nbs)
    effective = global_batch * result.accumulate
    assert abs(effective - req.nbs) <= global_batch  # no other accumulation is nearer
    if req.batch_per_gpu is None:
        assert abs(effective - req.nbs) <= nbs_tolerance(req.world_size, req.nbs)


@settings(max_examples=400, deadline=None)
@given(s=scenarios())
def test_plan_takes_the_largest_batch_and_checkpoints_only_when_needed(s: Scenario) -> None:
    req, g, store = s.req, s.gpu, s.store
    result = plan_for_class(req, g, store)
    plain = store.get(key(amp=result.amp))
    smallest = req.batch_per_gpu or 1
    plain_fits = device(plain, smallest, req, g) <= g.budget_bytes
    if not result.fits:  # does not fit: not even with checkpointing, when allowed
        assert not plain_fits
        if req.allow_checkpointing:
            assert device(store.get(key(amp=result.amp, ckpt=True)), smallest, req,
                          g) > g.budget_bytes
        return
    assert result.checkpointing == (not plain_fits)
    if req.batch_per_gpu is not None:
        assert result.batch_per_gpu == req.batch_per_gpu
        return
    used = store.get(key(amp=result.amp, ckpt=result.checkpointing))
    assert device(used, result.batch_per_gpu, req, g) <= g.budget_bytes
    # Every larger batch up to the cap either does not fit or lands farther from nbs than
    # the tolerance: the plan's batch is the largest that keeps nbs.
    tolerance = nbs_tolerance(req.world_size, req.nbs)
    for b in range(result.batch_per_gpu + 1, cap(req) + 1):
        fits = device(used, b, req, g) <= g.budget_bytes
        near = abs(b * req.world_size * accumulate_for(b, req.world_size, req.nbs)
                   - req.nbs) <= tolerance
        assert not (fits and near), b


def test_scenarios_reach_every_branch() -> None:
    """The share of each branch the scenarios reach, as the planner answers them."""
    seen: Counter[str] = Counter()

    @settings(max_examples=1000, deadline=None, database=None, derandomize=True)
    @given(s=scenarios())
    def sample(s: Scenario) -> None:
        seen[branch(s, plan_for_class(s.req, s.gpu, s.store))] += 1

    sample()
    total = sum(seen.values())
    shares = {b: round(seen[b] / total, 3) for b in BRANCHES}
    print(f"branch shares over {total} examples: {shares}")
    assert all(share >= MIN_SHARE for share in shares.values()), shares


# --- arithmetic and class order, on free-form requests --------------------------------------

gpus = st.builds(
    gpu, usable=st.integers(2 * GiB, 160 * GiB), bf16=st.booleans(),
    headroom=st.floats(0.0, 0.5), context=st.integers(0, 1 * GiB),
    cublas=st.integers(0, 64 * MiB), cudnn=st.integers(0, 512 * MiB),
    fragmentation=st.floats(0.0, 0.2), nccl=st.integers(0, 1 * GiB))

requests = st.builds(
    PlanRequest, model=st.just("yolov8s.yaml"), config_hash=st.just(HASH), imgsz=st.just(640),
    nbs=st.integers(1, 512), world_size=st.integers(1, 16),
    amp=st.sampled_from(["auto", "fp16", "off"]), objects=st.integers(0, 500),
    batch_per_gpu=st.one_of(st.none(), st.integers(1, 256)), allow_checkpointing=st.booleans())


@settings(max_examples=300, deadline=None)
@given(req=requests, g=gpus, store=stores(), batch=st.integers(1, 512),
       mean=st.one_of(st.none(), st.integers(0, 500)))
def test_planner_arithmetic_equals_estimate(req: PlanRequest, g: Any, store: ProfileStore,
                                            batch: int, mean: int | None) -> None:
    from yolofit.estimator.planner import _Fit

    req = dataclasses.replace(req, mean_objects=None if mean is None else min(mean, req.objects))
    for p in store.profiles.values():
        fast = _Fit(p, g, req).device(batch)
        slow = estimate(p, batch, req.objects, g, world_size=req.world_size,
                        mean_objects=req.mean_objects).device_total_bytes
        assert fast == slow


@settings(max_examples=200, deadline=None)
@given(s=scenarios(), others=st.lists(gpus, min_size=0, max_size=3), first=st.integers(0, 3))
def test_plan_takes_the_first_class_that_fits(s: Scenario, others: list[Any], first: int) -> None:
    classes = [*others[:first], s.gpu, *others[first:]]
    named = [replace(g, name=f"g{i}") for i, g in enumerate(classes)]
    result = plan(s.req, named, s.store, all_classes=[])
    singles = [plan_for_class(s.req, g, s.store) for g in named]
    fitting = next((p for p in singles if p.fits), None)
    if fitting is None:
        assert not result.fits
        assert result.gpu_class == max(named, key=lambda g: g.budget_bytes).name
    else:
        assert result == fitting
