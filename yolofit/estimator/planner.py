"""The fit planner: pure arithmetic from (request, GPU classes, profiles) to a Plan.

Levers, in order (issue 3, item 5): AMP (a pinned choice is kept; otherwise fp16, or bf16
where the class has it), the largest batch per GPU that fits and keeps the effective batch
batch x world x accumulate within NBS_TOLERANCE_PERCENT of nbs (issue 14), gradient
accumulation by Ultralytics' own rule, activation checkpointing only when even the smallest
batch does not fit, and - only when the policy allows it - a smaller imgsz.

The largest batch comes in closed form from the profile's linear terms, checked against
the exact estimate; no trace, no search over traces. No torch import.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

from yolofit.estimator.gpu import GpuClass, known_classes
from yolofit.estimator.profile import (
    OPTIMIZERS,
    Estimate,
    Profile,
    ProfileKey,
    ProfileMissing,
    ProfileStore,
    Terms,
    ddp_bucket_bytes,
    estimate,
    mean_objects_per_sample,
    model_name,
    objects_per_sample,
    resolve_model,
)
from yolofit.estimator.train_args import memory_imgsz
from yolofit.units import format_bytes

__all__ = ["AMP_CHOICES", "NBS_TOLERANCE_PERCENT", "GpuClass", "Plan", "PlanRequest",
           "ProfileMissing", "accumulate_for", "auto_optimizer", "batch_cap", "batch_for_nbs",
           "choose_amp", "effective_batch", "nbs_text", "nbs_tolerance", "plan",
           "plan_for_class", "validate_request"]

AMP_CHOICES: tuple[str, ...] = ("auto", "fp16", "bf16", "off")
IMGSZ_STEP = 32  # Ultralytics rounds imgsz to a multiple of the max stride (32)
# How far batch x world x accumulate may land from nbs before the planner gives up batch per GPU
# to come closer. Ultralytics scales weight decay by effective / nbs, so a few percent change
# nothing measurable, while hitting nbs exactly can cost most of the batch (nbs 62 on one GPU:
# only batch 31, 2 or 1 give 62). Never tighter than what batch 1 reaches (see nbs_tolerance).
NBS_TOLERANCE_PERCENT = 10
_BLOCK = 2 * 2**20  # slack for the 2 MiB rounding of the fragmentation margin


@dataclass(frozen=True)
class PlanRequest:
    """What the user asked for and what the policy lets the planner change.

    `objects` is the most labels one image of the dataset holds (mosaic x4 is applied): it
    sizes the assigner's padded targets. `mean_objects` is the dataset's mean labels per
    image (`yolofit data stats`): it sizes the foreground-anchor loss terms (segment masks,
    keypoints); None counts every sample at the densest, an upper bound.
    `batch_per_gpu` pins the batch; `min_imgsz` is the floor for imgsz reduction (default:
    half the requested imgsz). `config_hash` skips reading the model YAML when known.
    `optimizer` is what Ultralytics will use; "auto" is taken as AdamW (see auto_optimizer).
    """

    model: str
    nc: int = 80
    imgsz: int = 640
    nbs: int = 64
    world_size: int = 1
    amp: str = "auto"
    objects: int = 50
    optimizer: str = "AdamW"
    mean_objects: int | None = None
    allow_amp: bool = True
    allow_checkpointing: bool = True
    allow_imgsz_reduction: bool = False
    min_imgsz: int | None = None
    batch_per_gpu: int | None = None
    config_hash: str | None = None
    mosaic: bool = True
    multi_scale: float = 0.0  # Ultralytics multi_scale: plan at the largest size it draws

    def __post_init__(self) -> None:
        problems = validate_request(self)
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def imgsz_floor(self) -> int:
        if self.min_imgsz is not None:
            return self.min_imgsz
        return max(IMGSZ_STEP, self.imgsz // 2 // IMGSZ_STEP * IMGSZ_STEP)


def validate_request(req: PlanRequest) -> list[str]:
    """Every problem with a request, each naming its field (for webhooks and the CLI)."""
    problems = []
    if req.imgsz < IMGSZ_STEP or req.imgsz % IMGSZ_STEP:
        problems.append(f"imgsz: must be a positive multiple of 32, got {req.imgsz}")
    if req.min_imgsz is not None and (req.min_imgsz < IMGSZ_STEP or req.min_imgsz % IMGSZ_STEP):
        problems.append(f"min_imgsz: must be a positive multiple of 32, got {req.min_imgsz}")
    if req.nbs < 1:
        problems.append(f"nbs: must be at least 1, got {req.nbs}")
    if req.world_size < 1:
        problems.append(f"world_size: must be at least 1, got {req.world_size}")
    if req.nc < 1:
        problems.append(f"nc: must be at least 1, got {req.nc}")
    if not 0.0 <= req.multi_scale <= 1.0:
        problems.append(f"multi_scale: must be in [0, 1], got {req.multi_scale}")
    if req.objects < 0:
        problems.append(f"objects: must not be negative, got {req.objects}")
    if req.mean_objects is not None and not 0 <= req.mean_objects <= req.objects:
        problems.append(f"mean_objects: must be between 0 and objects ({req.objects}), got "
                        f"{req.mean_objects}; give the dataset's mean labels per image")
    if req.batch_per_gpu is not None and req.batch_per_gpu < 1:
        problems.append(f"batch_per_gpu: must be at least 1, got {req.batch_per_gpu}")
    if req.amp not in AMP_CHOICES:
        problems.append(f"amp: must be one of {', '.join(AMP_CHOICES)}, got {req.amp!r}")
    if req.optimizer not in (*OPTIMIZERS, "auto"):
        problems.append(f"optimizer: must be auto, {', '.join(OPTIMIZERS)}; got {req.optimizer!r}")
    return problems


@dataclass(frozen=True)
class Plan:
    """The planner's answer for one GPU class. Bytes are per GPU.

    `usable_bytes` is what a process can use on the class; `budget_bytes` is that less the
    policy headroom, which `predicted_device_bytes` never exceeds when `fits`. `utilisation`
    is predicted_device_bytes / usable_bytes. When nothing fits, batch_per_gpu and
    accumulate are 0, the predictions are those at the smallest batch with every allowed
    lever, and `reason` says why in one sentence.
    """

    fits: bool
    gpu_class: str
    batch_per_gpu: int
    accumulate: int
    amp: str
    checkpointing: bool
    imgsz: int
    predicted_allocated_bytes: int
    predicted_reserved_bytes: int
    predicted_device_bytes: int
    usable_bytes: int
    utilisation: float
    breakdown: dict[str, int] = field(default_factory=dict)
    reason: str = ""
    ultralytics_args: dict[str, Any] = field(default_factory=dict)
    budget_bytes: int = 0
    world_size: int = 1
    profile_id: str = ""
    task: str = "detect"
    # the profile has a typical-label term (per_mean_object: segment masks, keypoints), so
    # the request's mean_objects moved the estimate; False: every label counts at the densest
    uses_mean: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "fits": self.fits, "gpu_class": self.gpu_class, "batch_per_gpu": self.batch_per_gpu,
            "accumulate": self.accumulate, "amp": self.amp, "checkpointing": self.checkpointing,
            "imgsz": self.imgsz, "world_size": self.world_size,
            "predicted_allocated_bytes": self.predicted_allocated_bytes,
            "predicted_reserved_bytes": self.predicted_reserved_bytes,
            "predicted_device_bytes": self.predicted_device_bytes,
            "usable_bytes": self.usable_bytes, "budget_bytes": self.budget_bytes,
            "utilisation": self.utilisation, "breakdown": dict(self.breakdown),
            "reason": self.reason, "ultralytics_args": dict(self.ultralytics_args),
            "profile_id": self.profile_id, "task": self.task, "uses_mean": self.uses_mean,
        }


def auto_optimizer(images: int, epochs: int, nbs: int = 64, batch: int = 0) -> str:
    """What Ultralytics' optimizer=auto picks (engine/trainer.py build_optimizer, 8.4):
    MuSGD when iterations = ceil(images / max(batch, nbs)) * epochs exceed 10000, else AdamW."""
    iterations = math.ceil(images / max(batch, nbs)) * epochs
    return "MuSGD" if iterations > 10000 else "AdamW"


def accumulate_for(batch_per_gpu: int, world_size: int, nbs: int) -> int:
    """Ultralytics' own rule on the global batch: max(round(nbs / batch), 1). For a given
    global batch g this is the accumulation whose g x accumulate is nearest nbs (round() is
    the nearest integer), so Ultralytics, given the job's own nbs, always lands on the
    plan's accumulate; keeping the effective batch near nbs is the choice of the batch."""
    return max(round(nbs / (batch_per_gpu * world_size)), 1)


def effective_batch(batch_per_gpu: int, world_size: int, nbs: int) -> int:
    """Images per optimizer step: batch x world x accumulate, accumulate by Ultralytics."""
    return batch_per_gpu * world_size * accumulate_for(batch_per_gpu, world_size, nbs)


def nbs_tolerance(world_size: int, nbs: int) -> int:
    """How far the effective batch may be from nbs: NBS_TOLERANCE_PERCENT of nbs, or how
    close any batch gets if that is farther. Every effective batch is a multiple of the world
    size and batch 1 reaches the multiple nearest nbs, so batch 1 is always within it."""
    closest = abs(effective_batch(1, world_size, nbs) - nbs)
    return max(nbs * NBS_TOLERANCE_PERCENT // 100, closest)


def batch_for_nbs(largest: int, world_size: int, nbs: int, tolerance: int | None = None) -> int:
    """The largest batch per GPU in [1, largest] whose effective batch is within `tolerance`
    (default nbs_tolerance) of nbs; batch 1 when none is (it is the closest any batch gets).
    `largest` is what memory allows. Plans and OOM re-plans both choose through this."""
    if tolerance is None:
        tolerance = nbs_tolerance(world_size, nbs)
    for batch in range(max(largest, 1), 1, -1):
        if abs(effective_batch(batch, world_size, nbs) - nbs) <= tolerance:
            return batch
    return 1


def nbs_text(batch_per_gpu: int, world_size: int, nbs: int, largest: int | None = None) -> str:
    """Why the effective batch is what it is, in words ("" when it is nbs at the largest
    batch that fits)."""
    eff = effective_batch(batch_per_gpu, world_size, nbs)
    acc = accumulate_for(batch_per_gpu, world_size, nbs)
    text = ""
    if largest is not None and largest > batch_per_gpu:
        far = effective_batch(largest, world_size, nbs)
        text = (f"batch {batch_per_gpu} per GPU, not the {largest} that fits: {largest} x "
                f"{world_size} GPU(s) would step every {far} images, {abs(far - nbs)} from "
                f"nbs {nbs}; ")
    if eff != nbs or text:
        text += (f"effective batch {batch_per_gpu} x {world_size} x accumulate {acc} = {eff} "
                 f"(nbs {nbs}; Ultralytics derives accumulate {acc} = round({nbs} / "
                 f"{batch_per_gpu * world_size}) itself)")
    return text


def batch_cap(req: PlanRequest) -> int:
    """The batch per GPU never goes above nbs / world: beyond it accumulate is already 1,
    so a larger batch only raises the effective batch above nbs - and Ultralytics scales
    weight decay by batch * accumulate / nbs - changing the training recipe, not its memory
    fit."""
    return max(req.nbs // req.world_size, 1)


# --- choosing ------------------------------------------------------------------------------

def choose_amp(req: PlanRequest, gpu: GpuClass) -> str:
    if req.amp != "auto":
        return req.amp
    if not req.allow_amp:
        return "off"
    return "bf16" if gpu.bf16 else "fp16"


@lru_cache(maxsize=1024)
def _identity(model: str) -> tuple[str, str]:
    ref = resolve_model(model)
    return ref.name, ref.config_hash


def _base_key(req: PlanRequest, amp: str) -> ProfileKey:
    if req.config_hash:
        name, chash = model_name(req.model), req.config_hash
    else:
        name, chash = _identity(req.model)
    optimizer = "AdamW" if req.optimizer == "auto" else req.optimizer
    return ProfileKey(name, chash, req.imgsz, amp, optimizer, req.nc, False)


def _lookup(store: ProfileStore, key: ProfileKey) -> Profile | None:
    """bf16 and fp16 autocast keep the same element sizes, so without a bf16 trace the fp16
    profile stands in for it (GradScaler's state is a few scalars)."""
    profile = store.get(key)
    if profile is None and key.amp == "bf16":
        profile = store.get(key.replace(amp="fp16"))
    return profile


class _Fit:
    """One (profile, GPU class, request) triple. `device(b)` is estimate()'s device total
    with the arithmetic unrolled (no dicts: the planner calls it a few times per class);
    `guess()` solves it for b in closed form."""

    def __init__(self, profile: Profile, gpu: GpuClass, req: PlanRequest) -> None:
        self.profile, self.gpu, self.req = profile, gpu, req
        self.budget = gpu.budget_bytes
        objects = objects_per_sample(req.objects, req.mosaic)
        mean = mean_objects_per_sample(req.mean_objects, req.mosaic)
        self.res_fixed = profile.reserved.fixed
        self.res_slope = profile.reserved.slope(objects, mean)
        extra, self.outside = Terms(gpu.workspace_bytes, 0), gpu.cuda_context_bytes
        if req.world_size > 1:  # as estimate(): DDP buckets (allocator) + NCCL (outside)
            extra = extra + Terms(ddp_bucket_bytes(profile), 0)
            self.outside += gpu.nccl_bytes
        self.extra_fixed = extra.fixed
        self.extra_slope = extra.slope(objects, mean)

    def estimate(self, batch: int) -> Estimate:
        return estimate(self.profile, batch, self.req.objects, self.gpu,
                        mosaic=self.req.mosaic, world_size=self.req.world_size,
                        mean_objects=self.req.mean_objects)

    def device(self, batch: int) -> int:
        traced = self.res_fixed + self.res_slope * batch
        return (traced + self.gpu.fragmentation_bytes(traced) + self.extra_fixed
                + self.extra_slope * batch + self.outside)

    def fits(self, batch: int) -> bool:
        return self.device(batch) <= self.budget

    def guess(self) -> int:
        """device(b) <= budget solved for b, the fragmentation margin's 2 MiB rounding taken
        as slack; exact up to that rounding."""
        grow = 1.0 + self.gpu.fragmentation
        room = (self.budget - self.outside - self.extra_fixed - _BLOCK
                - self.res_fixed * grow)
        slope = self.res_slope * grow + self.extra_slope
        if slope <= 0:
            return 2**31 if room >= 0 else 0
        return max(int(room // slope), 0)

    def largest(self, cap: int) -> int:
        """Largest batch in [1, cap] that fits, 0 if none. The guess is almost always exact;
        the exact check corrects it, falling back to bisection if the terms mislead."""
        guess = min(max(self.guess(), 1), cap)
        if self.fits(guess):
            if guess == cap or not self.fits(guess + 1):
                return guess
            if self.fits(cap):
                return cap
            lo, hi = guess + 1, cap
        else:
            if guess == 1 or self.fits(guess - 1):
                return guess - 1
            lo, hi = 0, guess - 1
        while hi - lo > 1:  # invariant: fits(lo) or lo == 0; not fits(hi)
            mid = (lo + hi) // 2
            if self.fits(mid):
                lo = mid
            else:
                hi = mid
        return lo


def _imgsz_candidates(req: PlanRequest, store: ProfileStore, key: ProfileKey) -> list[int]:
    if not req.allow_imgsz_reduction:
        return [req.imgsz]
    floor = req.imgsz_floor
    traced = set(store.imgsz_available(key)) | set(
        store.imgsz_available(key.replace(checkpointing=True)))
    if key.amp == "bf16":
        fp16 = key.replace(amp="fp16")
        traced |= set(store.imgsz_available(fp16))
        traced |= set(store.imgsz_available(fp16.replace(checkpointing=True)))
    smaller = sorted((s for s in traced if floor <= s < req.imgsz and s % IMGSZ_STEP == 0),
                     reverse=True)
    return [req.imgsz, *smaller]


def _fitted(fit: _Fit, batch: int, req: PlanRequest, amp: str, imgsz: int,
            reason: str = "") -> Plan:
    est = fit.estimate(batch)
    gpu, key = fit.gpu, fit.profile.key
    acc = accumulate_for(batch, req.world_size, req.nbs)
    return Plan(
        fits=True, gpu_class=gpu.name, batch_per_gpu=batch, accumulate=acc, amp=amp,
        checkpointing=key.checkpointing, imgsz=imgsz,
        predicted_allocated_bytes=est.peak_allocated_bytes,
        predicted_reserved_bytes=est.peak_reserved_bytes,
        predicted_device_bytes=est.device_total_bytes, usable_bytes=gpu.usable_bytes,
        utilisation=est.device_total_bytes / gpu.usable_bytes, breakdown=est.breakdown,
        ultralytics_args={"batch": batch * req.world_size, "nbs": req.nbs, "amp": amp != "off",
                          "imgsz": imgsz},
        budget_bytes=gpu.budget_bytes, world_size=req.world_size, profile_id=key.id,
        reason=reason, task=fit.profile.task, uses_mean=_uses_mean(fit.profile))


def _uses_mean(profile: Profile) -> bool:
    return bool(profile.reserved.per_mean_object or profile.allocated.per_mean_object)


def _levers_text(amp: str, checkpointing: bool) -> str:
    parts = [f"AMP ({amp})" if amp != "off" else "no AMP"]
    if checkpointing:
        parts.append("checkpointing")
    return " and ".join(parts)


def _no_fit(fit: _Fit | None, gpu: GpuClass, req: PlanRequest, amp: str, imgsz: int,
            reason: str) -> Plan:
    batch = req.batch_per_gpu or 1
    est = fit.estimate(batch) if fit is not None else None
    return Plan(
        fits=False, gpu_class=gpu.name, batch_per_gpu=0, accumulate=0, amp=amp,
        checkpointing=bool(fit and fit.profile.key.checkpointing), imgsz=imgsz,
        predicted_allocated_bytes=est.peak_allocated_bytes if est else 0,
        predicted_reserved_bytes=est.peak_reserved_bytes if est else 0,
        predicted_device_bytes=est.device_total_bytes if est else 0,
        usable_bytes=gpu.usable_bytes,
        utilisation=(est.device_total_bytes / gpu.usable_bytes) if est else 0.0,
        breakdown=est.breakdown if est else {}, reason=reason, ultralytics_args={},
        budget_bytes=gpu.budget_bytes, world_size=req.world_size,
        profile_id=fit.profile.key.id if fit else "",
        task=fit.profile.task if fit else "detect",
        uses_mean=_uses_mean(fit.profile) if fit else False)


def _usable_text(gpu: GpuClass) -> str:
    return (f"{format_bytes(gpu.budget_bytes)} usable ({format_bytes(gpu.usable_bytes)} less "
            f"{gpu.headroom:.0%} headroom)")


@dataclass(frozen=True)
class _Outcome:
    amp: str
    fit: _Fit | None  # the profile that fits, or the last one tried; None: amp impossible
    batch: int  # 0 when nothing fits
    largest: int = 0  # the largest batch that fits (batch is at most this, for nbs)
    imgsz: int = 0  # the training imgsz (the profile's may be larger: multi_scale)


def _search(req: PlanRequest, gpu: GpuClass, store: ProfileStore) -> _Outcome:
    """The levers in order; arithmetic only, no Plan or text (plan() runs it per class)."""
    amp = choose_amp(req, gpu)
    if amp == "bf16" and not gpu.bf16:
        return _Outcome(amp, None, 0)
    base = _base_key(req, amp)
    checkpointing = [False, True] if req.allow_checkpointing else [False]
    last: _Fit | None = None
    train_imgsz = req.imgsz
    for imgsz in _imgsz_candidates(req, store, base):
        for ckpt in checkpointing:
            key = base.replace(imgsz=memory_imgsz(imgsz, req.multi_scale),
                               checkpointing=ckpt)
            profile = _lookup(store, key)
            if profile is None:
                if imgsz == req.imgsz:
                    raise ProfileMissing(key)
                continue
            last = fit = _Fit(profile, gpu, req)
            train_imgsz = imgsz
            if req.batch_per_gpu is not None:
                batch = largest = req.batch_per_gpu if fit.fits(req.batch_per_gpu) else 0
            else:
                largest = fit.largest(batch_cap(req))
                batch = batch_for_nbs(largest, req.world_size, req.nbs) if largest else 0
            if batch >= 1:
                return _Outcome(amp, fit, batch, largest, train_imgsz)
    return _Outcome(amp, last, 0, 0, train_imgsz if last is not None else req.imgsz)


def _as_plan(out: _Outcome, req: PlanRequest, gpu: GpuClass) -> Plan:
    if out.batch:
        assert out.fit is not None
        return _fitted(out.fit, out.batch, req, out.amp, out.imgsz or out.fit.profile.key.imgsz,
                       nbs_text(out.batch, req.world_size, req.nbs, out.largest))
    if out.fit is None:
        return _no_fit(None, gpu, req, out.amp, req.imgsz,
                       f"amp=bf16 is pinned but {gpu.name} has no bf16 (needs sm80 or newer)")
    return _no_fit(out.fit, gpu, req, out.amp, out.imgsz or out.fit.profile.key.imgsz,
                   _needs_text(req, out.fit) + f"; {gpu.name} has {_usable_text(gpu)}")


def plan_for_class(req: PlanRequest, gpu: GpuClass, store: ProfileStore) -> Plan:
    """The plan on one GPU class. Raises ProfileMissing when a profile the levers need is
    neither shipped nor cached (at the requested imgsz; smaller ones come from the store)."""
    return _as_plan(_search(req, gpu, store), req, gpu)


def _needs_text(req: PlanRequest, fit: _Fit) -> str:
    key = fit.profile.key
    batch = req.batch_per_gpu or 1
    needs = fit.estimate(batch).device_total_bytes
    where = f"at imgsz {key.imgsz}"
    if key.imgsz != req.imgsz:
        where = f"even at imgsz {key.imgsz} (asked {req.imgsz})"
    world = f" per GPU with {req.world_size} GPUs" if req.world_size > 1 else ""
    return (f"{key.model} {where} needs {format_bytes(needs)} at batch {batch}{world} with "
            f"{_levers_text(choose_amp(req, fit.gpu), key.checkpointing)}")


def plan(req: PlanRequest, classes_in_preference_order: Sequence[GpuClass],
         store: ProfileStore, all_classes: Sequence[GpuClass] | None = None) -> Plan:
    """The first class (in the caller's preference order) on which the job fits. When none
    does, the answer for the largest allowed class, whose reason also names the smallest
    class in `all_classes` (default: every known class, same headroom) that would fit."""
    classes = list(classes_in_preference_order)
    if not classes:
        raise ValueError("no GPU classes to plan for")
    outcomes = []
    for gpu in classes:
        out = _search(req, gpu, store)
        if out.batch:
            return _as_plan(out, req, gpu)
        outcomes.append(out)
    largest = max(range(len(classes)), key=lambda i: classes[i].budget_bytes)
    largest_gpu = classes[largest]
    answer = _as_plan(outcomes[largest], req, largest_gpu)
    allowed = {g.name for g in classes}
    candidates = all_classes if all_classes is not None else _known_with(largest_gpu.headroom)
    would_fit = _smallest_fitting(req, [g for g in candidates if g.name not in allowed], store)
    head = answer.reason.split("; ")[0]
    if len(classes) > 1 or not head.startswith("amp="):
        head += (f"; the largest class allowed ({largest_gpu.name}) has "
                 f"{_usable_text(largest_gpu)}")
    tail = f"; it would fit on {would_fit}" if would_fit else "; no known GPU class would fit it"
    return replace(answer, reason=head + tail)


@lru_cache(maxsize=16)
def _known_with(headroom: float) -> tuple[GpuClass, ...]:
    return tuple(g.with_headroom(headroom) for g in known_classes().values())


def _smallest_fitting(req: PlanRequest, classes: Sequence[GpuClass],
                      store: ProfileStore) -> str | None:
    for gpu in sorted(classes, key=lambda g: (g.budget_bytes, g.name)):
        try:
            if _search(req, gpu, store).batch:
                return gpu.name
        except ProfileMissing:
            continue
    return None
