"""Build a Profile by tracing: run the training step at four (batch, objects) points and
fit fixed + per_sample*b + per_object*b*objects for every quantity.

The peak of a step is the larger of two lines: L(b), the peak with few labels (end of the
loss, all activations alive), and A(b, o), the peak inside the TaskAlignedAssigner, whose
tensors grow with b x objects x anchors and overtake L for dense labels. `max` is not a
linear term, so the profile stores the upper bound L(b) + s*b*o, with s the assigner's
slope: exact for sparse labels up to s*b*o, and above the true peak for dense labels by
L(b) - A(b, 0) (measured for yolov8n@640: about 11 MB per sample, see RESULTS.md).

Points: (4, 4) and (8, 4) give L's fixed and per-sample terms; (2, o) and (2, 2o) with
o = max(128, 2 nc) give the assigner's slope s (cheaper at a small batch; the slope per
b x o is the same), doubled until the dense points are above the sparse line.
In compute="shape" mode a point costs about the same at any batch (activations are never
computed or touched), so the batch points sit nearer real training batches than 1 and 2,
where allocator rounding is a larger share of every number.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from yolofit.estimator.profile import Profile, ProfileKey, Terms, fit_upper_terms

BATCH_POINTS: tuple[tuple[int, int], ...] = ((4, 4), (8, 4))
OBJECT_POINTS: tuple[tuple[int, int], ...] = ((2, 128), (2, 256))
POINTS = BATCH_POINTS + OBJECT_POINTS
PROFILE_CATEGORIES = ("weights", "gradients", "optimizer_state", "ema", "activations", "loss",
                      "validation", "temporaries")


@dataclass(frozen=True)
class PointResult:
    batch: int
    objects: int
    allocated: int
    reserved: int
    reserved_default: int  # without expandable segments
    requested: int
    breakdown: dict[str, int]
    peak_phase: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"batch": self.batch, "objects": self.objects, "allocated": self.allocated,
                "reserved": self.reserved, "reserved_default": self.reserved_default,
                "requested": self.requested, "peak_phase": self.peak_phase,
                "seconds": round(self.seconds, 3)}


def trace_point(model: Any, key: ProfileKey, batch: int, objects: int,
                compute: str = "hollow", expandable_segments: bool = True) -> PointResult:
    """Trace one (batch, objects) point of `key` on a copy of `model`."""
    from yolofit.estimator.tracer import StepConfig, hollow_copy, trace_training_step

    cfg = StepConfig(batch=batch, imgsz=key.imgsz, objects=objects, amp=key.amp,
                     optimizer=key.optimizer, checkpointing=key.checkpointing, compute=compute)
    copied = hollow_copy(model) if compute == "hollow" else copy.deepcopy(model)
    result = trace_training_step(copied, cfg)
    main = result.replay(expandable_segments)
    other = result.replay(not expandable_segments)
    return PointResult(batch, objects, main.peak_allocated, main.peak_reserved,
                       other.peak_reserved if expandable_segments else main.peak_reserved,
                       main.peak_requested, main.breakdown, main.peak_phase, result.seconds)


def fit_terms(values: list[int], points: tuple[tuple[int, int], ...] = POINTS) -> Terms:
    """Upper-bound terms from the four points (see the module docstring), rounded up and
    raised until no traced point is under-predicted."""
    return fit_upper_terms(values, points)


def _fit_exact(values: list[int], points: tuple[tuple[int, int], ...]
               ) -> tuple[Fraction, Fraction, Fraction]:
    (b1, o1), (b2, o2), (b3, o3), (b4, o4) = points
    if not (o1 == o2 and b1 != b2 and b3 == b4 and o3 != o4):
        raise ValueError(f"points must be (b1,o),(b2,o),(b,o1),(b,o2): {points}")
    v1, v2, v3, v4 = (Fraction(v) for v in values)
    per_object = (v4 - v3) / (b3 * (o4 - o3))
    per_sample = (v2 - v1) / (b2 - b1)
    fixed = v1 - per_sample * b1
    return fixed, per_sample, per_object


def fit_breakdown(results: list[PointResult],
                  points: tuple[tuple[int, int], ...] = POINTS) -> dict[str, Terms]:
    """Per-component terms at the sparse-label peak (per_object from the dense points);
    allocator_overhead is reserved - allocated."""
    out: dict[str, Terms] = {}
    for name in PROFILE_CATEGORIES:
        values = [r.breakdown.get(name, 0) for r in results]
        if any(values):
            f = _fit_exact(values, points)
            out[name] = Terms(round(f[0]), round(f[1]), max(round(f[2]), 0))
    overhead = [r.reserved - r.allocated for r in results]
    f = _fit_exact(overhead, points)
    out["allocator_overhead"] = Terms(round(f[0]), round(f[1]), max(round(f[2]), 0))
    return out


def dense_objects(nc: int) -> tuple[int, int]:
    """Object counts for the assigner-slope points: the assigner overtakes the sparse peak
    at roughly 40 objects per sample per 80 classes (the sparse peak's loss tensors grow
    with anchors x nc, the assigner's with anchors x objects), so start well above that."""
    low = max(OBJECT_POINTS[0][1], 2 * nc)
    return low, 2 * low


def _dense_points(model: Any, key: ProfileKey, sparse: list[PointResult],
                  progress: Callable[[str], None] | None, compute: str,
                  expandable_segments: bool) -> list[PointResult]:
    """Trace the two dense points; if the first is not above the sparse line (the assigner
    does not yet set the peak), double the objects and try again (up to three times)."""
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
    points = tuple((r.batch, r.objects) for r in results)
    alloc = fit_terms([r.allocated for r in results], points)
    res = fit_terms([max(r.reserved, r.allocated) for r in results], points)
    return {"allocated": alloc.at(check.batch, check.objects) / check.allocated - 1,
            "reserved": res.at(check.batch, check.objects) / check.reserved - 1}


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
    batch_points = ((b, 0) for b, _ in BATCH_POINTS) if task == "classify" else BATCH_POINTS
    for i, (b, o) in enumerate(batch_points):
        if progress:
            progress(f"tracing {key.model} ({task}) imgsz={key.imgsz} amp={key.amp} "
                     f"batch={b} objects={o} ({i + 1}/{len(BATCH_POINTS) + 2})")
        results.append(trace_point(model, key, b, o, compute, expandable_segments))
    if task == "classify":
        b = OBJECT_POINTS[0][0]
        one = trace_point(model, key, b, 0, compute, expandable_segments)
        results += [one, dataclasses.replace(one, objects=1)]
    else:
        results += _dense_points(model, key, results, progress, compute, expandable_segments)
    points = tuple((r.batch, r.objects) for r in results)
    allocated = fit_terms([r.allocated for r in results], points)
    reserved = _not_below(fit_terms([max(r.reserved, r.allocated) for r in results], points),
                          allocated)
    reserved_default = _not_below(fit_terms([max(r.reserved_default, r.allocated)
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


def _not_below(reserved: Terms, allocated: Terms) -> Terms:
    """Reserved never below allocated, term by term (the dense slope of reserved can read
    low when its high-water mark was set in another phase at the small dense batch)."""
    return Terms(max(reserved.fixed, allocated.fixed),
                 max(reserved.per_sample, allocated.per_sample),
                 max(reserved.per_object, allocated.per_object))


def _ultralytics_version() -> str:
    import ultralytics

    return str(ultralytics.__version__)


def key_for(model: str, imgsz: int, amp: str = "fp16", optimizer: str = "AdamW",
            nc: int = 80, checkpointing: bool = False) -> ProfileKey:
    from yolofit.estimator.models import resolve

    ref = resolve(model)
    return ProfileKey(ref.name, ref.config_hash, imgsz, amp, optimizer, nc, checkpointing)
