"""Build a Profile by tracing: run the training step at five (batch, objects) points and
fit fixed + per_sample*b + per_object*b*max_objects + per_mean_object*b*mean_objects for
every quantity (profile.Terms: the densest sample's count pads the assigner's targets, the
typical count drives the foreground-anchor terms of the loss).

The peak of a step is the larger of two lines: L(b), the peak with few labels (end of the
loss, all activations alive), and A(b, o), the peak inside the TaskAlignedAssigner, whose
tensors grow with b x objects x anchors and overtake L for dense labels. `max` is not a
linear term, so the profile stores the upper bound L(b) + s*b*o, with s the assigner's
slope: exact for sparse labels up to s*b*o, and above the true peak for dense labels by
L(b) - A(b, 0) (measured for yolov8n@640: about 11 MB per sample, see RESULTS.md).

Points: (4, 4) and (8, 4) give L's fixed and per-sample terms; (2, o) and (2, 2o) with
o = max(128, 2 nc) give the assigner's slope s (cheaper at a small batch; the slope per
b x o is the same), doubled until the dense points are above the sparse line; (4, 16)
(MEAN_POINT) gives the slope of the sparse peak per label, the foreground-anchor terms
(segment: one 160x160 fp32 mask map and its fp32 target per anchor saved for backward,
~10 anchors per object; detect: a few hundred bytes). With it the sparse line is taken at
zero labels, the typical labels add `per_mean_object` each, and `per_object` is the dense
slope beyond that, raised until the dense points are covered: their excess over the line
(segment: mask-loss backward at 128+ labels a sample) appears only with dense labels, so
it is charged to the densest count, not to every sample (it used to go to per_sample: +17 %
of yolo26m-seg's slope, the field's segment rows over-predicted by 36-42 %).
Classifiers have no labels: four points, per_object 0, and their batch points sit higher
(CLASSIFY_BATCH_POINTS): with many classes the head's class branch and its state set the
peak of a small batch, at another moment of the step than the activations of a large one,
and the per-sample slope of batches 4 and 8 fell short of the one from 32 on (yolo11n-cls at
224, nc 1000: 8.55 MB against 8.80 MB a sample, 2.4 % under at batch 256; RESULTS.md). The
slope is taken from batches 32 and 64 and `fixed` raised to cover the batch-1 point
(classify_terms): raising the slope instead would charge a small batch's extra fixed bytes
to every sample of a large one. The peak is a maximum of lines in the batch (convex), so a
line at or above it at batches 1 and 32 is above it between them; from 32 on the slope
measured constant up to 512.
In compute="shape" mode a point costs about the same at any batch (activations are never
computed or touched), so the batch points sit nearer real training batches than 1 and 2,
where allocator rounding is a larger share of every number.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from yolofit.estimator.profile import (
    Profile,
    ProfileKey,
    Terms,
    exact_terms5,
    fit_upper_terms,
    not_below,
)

BATCH_POINTS: tuple[tuple[int, int], ...] = ((4, 4), (8, 4))
OBJECT_POINTS: tuple[tuple[int, int], ...] = ((2, 128), (2, 256))
MEAN_POINT: tuple[int, int] = (4, 16)  # batch as BATCH_POINTS[0], more (sparse) labels
CLASSIFY_BATCH_POINTS: tuple[tuple[int, int], ...] = ((32, 0), (64, 0))  # module docstring
POINTS: tuple[tuple[int, ...], ...] = (*BATCH_POINTS, *OBJECT_POINTS, MEAN_POINT)
# What a trace imports (build.py imports it lazily): a trace worker's server imports these
# once, so each worker forked from it starts without them (trace_worker.preload_modules).
TRACE_PRELOAD = ("yolofit.estimator.tracer", "yolofit.estimator.models",
                 "ultralytics.nn.tasks", "ultralytics.utils.loss", "torch._dynamo")
PROFILE_CATEGORIES = ("weights", "gradients", "optimizer_state", "ema", "activations", "loss",
                      "validation", "temporaries")


@dataclass(frozen=True)
class PointResult:
    batch: int
    objects: int  # labels of the densest sample
    allocated: int
    reserved: int
    reserved_default: int  # without expandable segments
    requested: int
    breakdown: dict[str, int]
    peak_phase: str
    seconds: float
    mean_objects: float | None = None  # mean labels per sample, when not `objects`
    assign_peak: int = 0  # allocated peak while the TaskAlignedAssigner ran (0: not seen)

    @property
    def point(self) -> tuple[int, ...]:
        if self.mean_objects is None:
            return (self.batch, self.objects)
        return (self.batch, self.objects, Fraction(self.mean_objects))  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        mean = {} if self.mean_objects is None else {"mean_objects": self.mean_objects}
        if self.assign_peak:
            mean["assign_peak"] = self.assign_peak
        return {**mean, "batch": self.batch, "objects": self.objects,
                "allocated": self.allocated,
                "reserved": self.reserved, "reserved_default": self.reserved_default,
                "requested": self.requested, "peak_phase": self.peak_phase,
                "seconds": round(self.seconds, 3)}


def trace_point(model: Any, key: ProfileKey, batch: int, objects: int,
                compute: str = "hollow", expandable_segments: bool = True,
                densest: int | None = None) -> PointResult:
    """Trace one (batch, objects) point of `key` on a copy of `model`; with `densest`, the
    first sample holds `densest` labels and the others `objects`."""
    from yolofit.estimator.tracer import (
        ReplayDiverged,
        StepConfig,
        hollow_copy,
        trace_training_step,
    )

    cfg = StepConfig(batch=batch, imgsz=key.imgsz, objects=objects, amp=key.amp,
                     optimizer=key.optimizer, checkpointing=key.checkpointing, compute=compute,
                     densest=densest)
    copied = hollow_copy(model) if compute == "hollow" else copy.deepcopy(model)
    try:
        result = trace_training_step(copied, cfg)
    except ReplayDiverged:  # a loss that does not repeat itself: every iteration computes it
        cfg = dataclasses.replace(cfg, replay_loss=False)
        copied = hollow_copy(model) if compute == "hollow" else copy.deepcopy(model)
        result = trace_training_step(copied, cfg)
    main = result.replay(expandable_segments)
    other = result.replay(not expandable_segments)
    most, mean = objects, None
    if densest is not None:
        most = densest
        exact = Fraction(densest + objects * (batch - 1), batch)
        mean = int(exact) if exact.denominator == 1 else float(exact)
    return PointResult(batch, most, main.peak_allocated, main.peak_reserved,
                       other.peak_reserved if expandable_segments else main.peak_reserved,
                       main.peak_requested, main.breakdown, main.peak_phase, result.seconds,
                       mean, main.phase_peaks.get("assign", 0))


def fit_terms(values: list[int], points: Sequence[tuple[int, ...]] = POINTS,
              assign: Sequence[int] | None = None) -> Terms:
    """Upper-bound terms from the points (see the module docstring), rounded up and raised
    until no traced point is under-predicted; `assign`: the assigner's own peaks at the
    points (per_object is never below their dense slope)."""
    return fit_upper_terms(values, points, assign)


def classify_terms(values: list[int], points: Sequence[tuple[int, ...]],
                   assign: Sequence[int] | None = None) -> Terms:
    """A classifier's terms: the slope through its two batch points (the first two), and
    `fixed` raised until no point is under-predicted (see the module docstring). `assign`
    is unused (no assigner): the signature is fit_terms'."""
    (b1, _), (b2, _) = points[0][:2], points[1][:2]
    per_sample = math.ceil(Fraction(values[1] - values[0], b2 - b1))
    fixed = max(v - per_sample * p[0] for v, p in zip(values, points, strict=True))
    return Terms(fixed, per_sample)


def _fit_exact(values: list[int], points: Sequence[tuple[int, ...]]
               ) -> tuple[Fraction, ...]:
    if len(points) == 5:
        return exact_terms5(values, points)
    (b1, o1), (b2, o2), (b3, o3), (b4, o4) = points
    if not (o1 == o2 and b1 != b2 and b3 == b4 and o3 != o4):
        raise ValueError(f"points must be (b1,o),(b2,o),(b,o1),(b,o2): {points}")
    v1, v2, v3, v4 = (Fraction(v) for v in values)
    per_object = (v4 - v3) / (b3 * (o4 - o3))
    per_sample = (v2 - v1) / (b2 - b1)
    fixed = v1 - per_sample * b1
    return fixed, per_sample, per_object


def fit_breakdown(results: list[PointResult],
                  points: Sequence[tuple[int, ...]] = POINTS) -> dict[str, Terms]:
    """Per-component terms at the sparse-label peak (per_object from the dense points);
    allocator_overhead is reserved - allocated."""
    out: dict[str, Terms] = {}
    for name in PROFILE_CATEGORIES:
        values = [r.breakdown.get(name, 0) for r in results]
        if any(values):
            out[name] = _rounded(_fit_exact(values, points))
    overhead = [r.reserved - r.allocated for r in results]
    out["allocator_overhead"] = _rounded(_fit_exact(overhead, points))
    return out


def _rounded(f: tuple[Fraction, ...]) -> Terms:
    return Terms(round(f[0]), round(f[1]), *(max(round(x), 0) for x in f[2:]))


def dense_objects(nc: int) -> tuple[int, int]:
    """Object counts for the assigner-slope points: the assigner overtakes the sparse peak
    at roughly 40 objects per sample per 80 classes (the sparse peak's loss tensors grow
    with anchors x nc, the assigner's with anchors x objects), so start well above that."""
    low = max(OBJECT_POINTS[0][1], 2 * nc)
    return low, 2 * low


def _dense_points(model: Any, key: ProfileKey, sparse: list[PointResult],
                  progress: Callable[[str], None] | None, compute: str,
                  expandable_segments: bool) -> list[PointResult]:
    """Trace the two dense points (every sample dense: the per-label cost of a dense batch,
    mask-loss backward included, is what per_object must cover); if the first is not above
    the sparse line (the assigner does not yet set the peak), double the objects and try
    again (up to three times)."""
    (b1, o1), (b2, _) = ((r.batch, r.objects) for r in sparse)
    slope = Fraction(sparse[1].allocated - sparse[0].allocated, b2 - b1)
    batch = OBJECT_POINTS[0][0]
    low, high = dense_objects(key.nc)
    for _attempt in range(3):
        dense = []
        for o in (low, high):
            if progress:
                progress(f"tracing {key.model} imgsz={key.imgsz} amp={key.amp} "
                         f"batch={batch} objects={o} (dense labels)")
            dense.append(trace_point(model, key, batch, o, compute, expandable_segments))
        sparse_line = sparse[0].allocated + slope * (batch - b1)
        if dense[0].allocated > sparse_line and dense[1].allocated > dense[0].allocated:
            return dense
        low, high = 2 * low, 2 * high
    return dense


def linearity(results: list[PointResult], check: PointResult) -> dict[str, float]:
    """Relative error of the fitted terms at a point that was not used for fitting."""
    points = tuple(r.point for r in results)
    alloc = fit_terms([r.allocated for r in results], points)
    res = fit_terms([max(r.reserved, r.allocated) for r in results], points)
    mean = None if check.mean_objects is None else round(check.mean_objects)
    return {"allocated": alloc.at(check.batch, check.objects, mean) / check.allocated - 1,
            "reserved": res.at(check.batch, check.objects, mean) / check.reserved - 1}


def build_profile(key: ProfileKey, progress: Callable[[str], None] | None = None,
                  compute: str = "hollow", expandable_segments: bool = True,
                  model: Any = None) -> Profile:
    """Trace `key` at the four points and fit its Profile (`model`: a prebuilt
    DetectionModel of the key's config and nc, else it is built from `key.model`). Hollow
    compute that meets a value it never made (HollowRead) traces in shape compute instead."""
    from yolofit.estimator.tracer import HollowRead

    if compute == "hollow":
        try:
            return _build_profile(key, progress, compute, expandable_segments, model)
        except HollowRead:
            compute = "shape"
    return _build_profile(key, progress, compute, expandable_segments, model)


def _build_profile(key: ProfileKey, progress: Callable[[str], None] | None, compute: str,
                   expandable_segments: bool, model: Any) -> Profile:
    from yolofit.estimator.models import resolve

    t0 = time.perf_counter()
    if model is None:
        ref = resolve(key.model)
        if ref.config_hash != key.config_hash:
            raise ValueError(f"{key.model} resolves to config {ref.config_hash}, "
                             f"key says {key.config_hash}")
        model = _build(ref, key.nc, compute)
    from yolofit.estimator.tracer import model_task

    task = model_task(model)
    params = sum(p.numel() for p in model.parameters())
    results = []
    # A classifier has no labels but one class per image: its batch points carry no
    # objects, and the dense pair is one trace (per_object is 0 by construction).
    batch_points = CLASSIFY_BATCH_POINTS if task == "classify" else BATCH_POINTS
    for i, (b, o) in enumerate(batch_points):
        if progress:
            progress(f"tracing {key.model} ({task}) imgsz={key.imgsz} amp={key.amp} "
                     f"batch={b} objects={o} ({i + 1}/{len(POINTS)})")
        results.append(trace_point(model, key, b, o, compute, expandable_segments))
    if task == "classify":
        one = trace_point(model, key, 1, 0, compute, expandable_segments)  # batch 1: fixed
        results += [one, dataclasses.replace(one, objects=1)]
    else:
        results += _dense_points(model, key, results, progress, compute, expandable_segments)
        if progress:
            progress(f"tracing {key.model} ({task}) imgsz={key.imgsz} batch={MEAN_POINT[0]} "
                     f"objects={MEAN_POINT[1]} (labels' slope)")
        results.append(trace_point(model, key, *MEAN_POINT, compute, expandable_segments))
    points = tuple(r.point for r in results)
    assign = [r.assign_peak for r in results] if len(results) == 5 else None
    fit: Callable[..., Terms] = classify_terms if task == "classify" else fit_terms
    allocated = fit([r.allocated for r in results], points, assign)
    reserved = not_below(fit([max(r.reserved, r.allocated) for r in results], points),
                         allocated)
    reserved_default = not_below(fit([max(r.reserved_default, r.allocated)
                                      for r in results], points), allocated)
    breakdown = fit_breakdown(results, points)
    seconds = time.perf_counter() - t0
    mode = "expandable_segments:True" if expandable_segments else "default allocator"
    source = (f"traced on CPU ({compute} compute), {mode}, {task} training step of Ultralytics "
              f"{_ultralytics_version()}, {seconds:.1f}s")
    return Profile(key=key, params=params, allocated=allocated, reserved=reserved,
                   breakdown=breakdown, traced_at=[r.to_dict() for r in results],
                   source=source, task=task, reserved_default=reserved_default)


def _build(ref: Any, nc: int, compute: str) -> Any:
    """The model to trace: built hollow for hollow compute (its weights' values are never
    read), unless its constructor decides something from an initialised value (yolo12's
    trunc_normal_ init): then built for real, as for the other modes."""
    from yolofit.estimator.models import build_model
    from yolofit.estimator.tracer import HollowRead, build_hollow

    if compute == "hollow":
        try:
            return build_hollow(ref, nc=nc)
        except HollowRead:
            pass
    return build_model(ref, nc=nc)


def _ultralytics_version() -> str:
    import ultralytics

    return str(ultralytics.__version__)


def key_for(model: str, imgsz: int, amp: str = "fp16", optimizer: str = "AdamW",
            nc: int = 80, checkpointing: bool = False) -> ProfileKey:
    from yolofit.estimator.models import resolve

    ref = resolve(model)
    return ProfileKey(ref.name, ref.config_hash, imgsz, amp, optimizer, nc, checkpointing)
