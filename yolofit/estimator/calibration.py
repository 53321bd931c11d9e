"""Fit the per-GPU-class constants from measured training steps (benchmarks/calibrate_gpu.py).

What a CPU trace cannot see is modelled per class (gpu.py) as
    measured reserved = traced reserved * (1 + fragmentation) + workspaces
    measured device   = measured reserved + CUDA context
A calibration run records, per training configuration, what PyTorch measured on the GPU
and what the profile predicts before any per-class constant; this module fits the
constants from those rows and writes them into gpu_classes.json with their provenance.
Rows must come from single-GPU runs (DDP adds buckets and NCCL, modelled separately).
Pure: no torch.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yolofit.estimator.gpu import DATA, MiB, known_classes

# CSV columns calibrate_gpu.py writes; the fit needs the first five.
COLUMNS = (
    "gpu_class", "measured_reserved_bytes", "measured_device_bytes",
    "traced_reserved_bytes",  # profile.reserved.at(batch, objects per sample), no GPU terms
    "predicted_reserved_bytes",  # estimate() with the constants in use during the run
    "measured_allocated_bytes", "predicted_allocated_bytes", "predicted_device_bytes",
    "model", "imgsz", "batch", "amp", "objects", "checkpointing", "world_size", "profile_id",
)
_COVER = 0.95  # the fitted workspace allowance covers this share of the measured rows


@dataclass(frozen=True)
class Row:
    gpu_class: str
    measured_reserved: int
    measured_device: int
    traced_reserved: int

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any]) -> Row:
        return cls(str(d["gpu_class"]), int(float(d["measured_reserved_bytes"])),
                   int(float(d["measured_device_bytes"])), int(float(d["traced_reserved_bytes"])))


@dataclass(frozen=True)
class Fitted:
    """Constants for one class, and how well they predict the rows they came from."""

    gpu_class: str
    rows: int
    cuda_context_bytes: int
    workspace_bytes: int  # cuBLAS + cuDNN allowance
    fragmentation: float
    median_rel_error: float  # |predicted - measured| / measured, reserved
    p95_rel_error: float

    def to_json(self, cublas_bytes: int) -> dict[str, Any]:
        return {
            "cuda_context_mib": round(self.cuda_context_bytes / MiB, 1),
            "cudnn_workspace_mib": round(max(self.workspace_bytes - cublas_bytes, 0) / MiB, 1),
            "fragmentation": round(self.fragmentation, 4),
            "calibrated": True,
            "calibration": {"rows": self.rows, "median_rel_error": round(self.median_rel_error, 4),
                            "p95_rel_error": round(self.p95_rel_error, 4)},
        }


def read_rows(path: Path) -> list[Row]:
    with path.open(newline="") as f:
        return [Row.from_mapping(r) for r in csv.DictReader(f) if r.get("measured_reserved_bytes")]


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def fit_class(rows: Sequence[Row]) -> Fitted:
    """Least squares of extra = measured - traced reserved on traced reserved gives the
    fragmentation slope and a workspace intercept; the intercept is then raised so the model
    covers 95 % of the rows (an under-prediction is an OOM). Context: the largest observed."""
    if not rows:
        raise ValueError("no calibration rows")
    xs = [float(r.traced_reserved) for r in rows]
    ys = [float(r.measured_reserved - r.traced_reserved) for r in rows]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    var_x = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var_x \
        if var_x > 0 else 0.0
    slope = max(slope, 0.0)
    residuals = [y - slope * x for x, y in zip(xs, ys, strict=True)]
    intercept = max(_quantile(residuals, _COVER), 0.0)
    context = max(r.measured_device - r.measured_reserved for r in rows)
    errors = [abs(x * (1 + slope) + intercept - r.measured_reserved) / r.measured_reserved
              for x, r in zip(xs, rows, strict=True)]
    block = 2 * MiB
    return Fitted(
        gpu_class=rows[0].gpu_class, rows=len(rows),
        cuda_context_bytes=-(-max(context, 0) // block) * block,
        workspace_bytes=-(-int(intercept) // block) * block, fragmentation=slope,
        median_rel_error=statistics.median(errors), p95_rel_error=_quantile(errors, 0.95))


def fit_classes(rows: Iterable[Row]) -> dict[str, Fitted]:
    by_class: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_class[row.gpu_class].append(row)
    return {name: fit_class(group) for name, group in sorted(by_class.items())}


def write_calibration(fitted: Mapping[str, Fitted], source: str, path: Path = DATA) -> None:
    """Merge fitted constants into gpu_classes.json (classes it knows; others are listed
    under `calibrated_unknown_classes` for a human to add with their product label)."""
    data = json.loads(path.read_text())
    known = known_classes()
    for name, fit in fitted.items():
        cublas = known[name].cublas_workspace_bytes if name in known else 0
        entry = fit.to_json(cublas)
        entry["calibration"]["source"] = source
        if name in data["classes"]:
            data["classes"][name].update(entry)
        else:
            data.setdefault("calibrated_unknown_classes", {})[name] = entry
    path.write_text(json.dumps(data, indent=2) + "\n")


# --- calibration from field measurements (data/field) -------------------------------------

# The physically plausible box the field fit searches (and may not leave):
# cuDNN workspace allowance: 0 (workspace-free algorithms) to 1 GiB (the largest workspaces
# deterministic conv algorithms ask for YOLO-sized convs at large batches);
# default-allocator overhead over the peak allocated bytes: 0 to 25 % (what caching
# allocators are commonly seen to hold above the live bytes in long training runs).
CUDNN_RANGE_MIB = (0.0, 1024.0)
OVERHEAD_RANGE = (0.0, 0.25)
STEP_MIB = 8.0
STEP_OVERHEAD = 0.0025
UNDER_WEIGHT = 3.0  # an under-prediction is an OOM: it weighs three times an over-prediction


@dataclass(frozen=True)
class FieldPoint:
    """One field run for the fit: the trace's peak allocated bytes at its configuration,
    the measured reserved bytes, and the reserved bytes above which its Ultralytics empties
    the cache at epoch end (field.empty_above_bytes: 0 for <= 8.3.86, which always empties
    it; else the version's threshold x the card's total memory)."""

    traced_allocated: float
    measured: float
    empty_above: float


@dataclass(frozen=True)
class FieldFit:
    """The three constants a field fit sets, and the rows it saw."""

    cudnn_workspace_mib: float
    overhead: float  # default allocator, cache kept across epochs
    overhead_epoch_emptied: float  # default allocator, cache emptied at each epoch end
    rows: int
    loss: float


def _blocks(n: float) -> int:
    block = 2 * MiB
    return -(-int(n) // block) * block


def _reserved(point: FieldPoint, cublas_bytes: int, cudnn_mib: float, rate: float) -> float:
    return (point.traced_allocated + _blocks(point.traced_allocated * rate) + cublas_bytes
            + cudnn_mib * MiB)


def epoch_emptied(point: FieldPoint, cublas_bytes: int, cudnn_mib: float,
                  overhead_epoch_emptied: float) -> bool:
    """The cache rule of stock Ultralytics, decided from the prediction: emptied at every
    epoch end when its version always empties it (empty_above 0), or when the *emptied*
    prediction exceeds empty_above (threshold x total memory); otherwise kept.

    Why the emptied prediction decides, not the kept one: the first epoch's end sees the
    reserved bytes of one epoch (nothing has accumulated yet), which is what the emptied
    regime predicts. Above the threshold, the cache is emptied then and at every later epoch
    end, so every epoch looks like the first: emptied. Below it, nothing is emptied and the
    pools grow across epochs towards the kept prediction; if that crosses the threshold the
    cache is emptied at some later epoch end, but only after an epoch has run above it, so
    the reading lies anywhere between the two predictions and the kept one bounds it.
    Deciding from the kept prediction would predict the emptied value for runs whose kept
    prediction alone crosses the threshold - an under-prediction in that band. The rule
    also keeps the fit separable: membership does not depend on the kept overhead."""
    return _reserved(point, cublas_bytes, cudnn_mib, overhead_epoch_emptied) > point.empty_above


def field_prediction(point: FieldPoint, cublas_bytes: int, cudnn_mib: float,
                     overhead: float, overhead_epoch_emptied: float) -> float:
    """Predicted reserved = allocated + overhead (2 MiB blocks) + cuBLAS + cuDNN, as
    profile.estimate computes it with the default allocator, at the overhead of the point's
    cache regime (epoch_emptied)."""
    emptied = epoch_emptied(point, cublas_bytes, cudnn_mib, overhead_epoch_emptied)
    return _reserved(point, cublas_bytes, cudnn_mib,
                     overhead_epoch_emptied if emptied else overhead)


def _loss(points: Sequence[FieldPoint], cublas: int, cudnn: float, rate: float) -> float:
    total = 0.0
    for p in points:
        e = _reserved(p, cublas, cudnn, rate) / p.measured - 1
        total += abs(e) * (UNDER_WEIGHT if e < 0 else 1.0)
    return total


def fit_field(points: Sequence[FieldPoint], cublas_bytes: int) -> FieldFit:
    """Grid search over the plausible box for the cuDNN allowance (shared) and the two
    overhead fractions (one per cache regime), minimising sum(w(e) |e|) with
    w = UNDER_WEIGHT below the measurement and 1 above. A grid (not a gradient) because the
    2 MiB rounding makes the loss piecewise constant; ties go to the smaller constants.

    Which points are in the emptied regime depends on the candidate cuDNN allowance and
    emptied overhead (epoch_emptied), not on the kept overhead: for each (cuDNN, emptied
    overhead) the emptied points are scored at that overhead and the kept points at their
    best kept overhead. Where one regime has no points the other's fraction is shared
    (candidates with one overhead for all points; with equal fractions the regime does not
    change the prediction)."""
    if not points:
        raise ValueError("no field rows to fit")
    rates = [OVERHEAD_RANGE[0] + i * STEP_OVERHEAD for i in
             range(int(round((OVERHEAD_RANGE[1] - OVERHEAD_RANGE[0]) / STEP_OVERHEAD)) + 1)]
    best: tuple[tuple[float, float, float, float], FieldFit] | None = None
    for j in range(int((CUDNN_RANGE_MIB[1] - CUDNN_RANGE_MIB[0]) / STEP_MIB) + 1):
        cudnn = CUDNN_RANGE_MIB[0] + j * STEP_MIB
        kept_best: dict[tuple[int, ...], tuple[float, float]] = {}
        # (loss, emptied rate, kept rate): one shared rate, then one per regime
        candidates = [(_loss(points, cublas_bytes, cudnn, r), r, r) for r in rates]
        for r_e in rates:
            flags = [epoch_emptied(p, cublas_bytes, cudnn, r_e) for p in points]
            emptied = [p for p, f in zip(points, flags, strict=True) if f]
            kept_idx = tuple(i for i, f in enumerate(flags) if not f)
            if not emptied or not kept_idx:
                continue
            if kept_idx not in kept_best:
                kept = [points[i] for i in kept_idx]
                kept_best[kept_idx] = min(
                    ((_loss(kept, cublas_bytes, cudnn, r), r) for r in rates),
                    key=lambda lr: (round(lr[0], 12), lr[1]))
            k_loss, r_k = kept_best[kept_idx]
            candidates.append((_loss(emptied, cublas_bytes, cudnn, r_e) + k_loss, r_e, r_k))
        loss, r_e, r_k = min(candidates, key=lambda c: (round(c[0], 12), c[1] + c[2], c[1]))
        rank = (round(loss, 12), cudnn, r_e + r_k, r_e)
        if best is None or rank < best[0]:
            best = (rank, FieldFit(cudnn, round(r_k, 6), round(r_e, 6), len(points), loss))
    assert best is not None
    return best[1]


def write_field_fit(fit: FieldFit, provenance: Mapping[str, Any], path: Path = DATA) -> None:
    """Write the fitted constants into gpu_classes.json's defaults with their provenance
    (rows, ranges, in-sample and hold-out accuracy)."""
    data = json.loads(path.read_text())
    defaults = data["defaults"]
    defaults["cudnn_workspace_mib"] = fit.cudnn_workspace_mib
    defaults["fragmentation_default_allocator"] = fit.overhead
    defaults["fragmentation_default_allocator_epoch_emptied"] = fit.overhead_epoch_emptied
    defaults["field_fit"] = {
        "cudnn_workspace_range_mib": list(CUDNN_RANGE_MIB),
        "overhead_range": list(OVERHEAD_RANGE), "under_weight": UNDER_WEIGHT,
        "rows": fit.rows, **provenance}
    path.write_text(json.dumps(data, indent=2) + "\n")
