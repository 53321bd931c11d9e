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
