"""The field measurements the estimator is calibrated and checked against.

`data/field/` holds two CSV files of published Ultralytics training runs (copied unchanged
from the project's shared field data, described in its README.md) and `rows.json`, which
says how each row is read: its model, task, classes, objects per image, optimizer, the
unit of its GPU_mem value and, where the notes name another peak, the measured value. Every
CSV row must have an entry (in file order) and every entry's unit must be the one the row's
notes state, so the reading cannot drift from the data.

GPU_mem is `torch.cuda.memory_reserved()` on rank 0 of stock Ultralytics (default
allocator, no expandable segments), without the CUDA context; so the quantity compared is
the estimate's peak *reserved* bytes with the default allocator's terms.
Pure: no torch.
"""

from __future__ import annotations

import csv
import json
import math
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yolofit.estimator.gpu import GpuClass, from_memory, get_gpu_class
from yolofit.estimator.identity import resolve_model, with_kpt_shape
from yolofit.estimator.profile import (
    Profile,
    ProfileKey,
    ProfileStore,
    estimate,
    mean_objects_per_sample,
    objects_per_sample,
)

FIELD_DIR = Path(__file__).with_name("data") / "field"
FILES: tuple[str, ...] = ("field_gpu_mem.csv", "field_gpu_mem_2.csv")
UNITS = {"GB": 1e9, "GiB": 2.0**30}
DENSITIES = ("sparse", "moderate", "dense")
# When stock Ultralytics empties the CUDA cache at an epoch's end (engine/trainer.py; checked
# in the wheels of 8.3.84-8.3.87, 8.3.100-8.3.110, 8.3.120, 8.3.149 and 8.4.19):
# - up to 8.3.86 `_clear_memory()` runs unconditionally at every epoch end (8.3.86's trainer
#   differs from 8.3.85's only in a file encoding; the field README says "up to 8.3.85");
# - from 8.3.87 only when `memory_reserved() / total_memory > threshold`: 0.9 up to 8.3.108,
#   0.5 from 8.3.109 (8.4.x also clears at 0.5 before validation; 8.4.190 the same).
EPOCH_EMPTIED_UNTIL = (8, 3, 86)
EMPTY_THRESHOLDS: tuple[tuple[tuple[int, ...], float], ...] = (((8, 3, 108), 0.9),)
EMPTY_THRESHOLD_LATEST = 0.5


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in version.split(".")[:3])


def empty_threshold(version: str) -> float | None:
    """The fraction of the card's total memory above which this Ultralytics version empties
    the cache at an epoch's end; None: it empties it at every epoch end, unconditionally."""
    v = version_tuple(version)
    if v <= EPOCH_EMPTIED_UNTIL:
        return None
    for until, threshold in EMPTY_THRESHOLDS:
        if v <= until:
            return threshold
    return EMPTY_THRESHOLD_LATEST


def empty_above_bytes(version: str, total_bytes: float) -> float:
    """The reserved bytes above which the run's cache is emptied at each epoch end: 0 for a
    version that always empties it, else the version's threshold x the card's total memory
    (`torch.cuda.get_device_properties().total_memory`: the data's gpu_total_mib, the MiB
    Ultralytics logs beside the device name)."""
    threshold = empty_threshold(version)
    return 0.0 if threshold is None else threshold * total_bytes


@dataclass(frozen=True)
class FieldRow:
    """One published run, read as `rows.json` says. `batch` is per GPU."""

    source: str  # "field_gpu_mem.csv:3" (1-based data row)
    model: str
    task: str
    imgsz: int
    batch: int
    amp: str
    nc: int
    objects: int  # per image (the stated mean, rounded up)
    optimizer: str
    mosaic: bool
    kpt_shape: tuple[int, int] | None
    gpu: str
    gpu_total_bytes: float  # the card's total memory as torch reports it (gpu_total_mib)
    measured_bytes: float  # GPU_mem (memory_reserved), in bytes
    density: str
    version: str
    why: str

    @property
    def always_emptied(self) -> bool:
        """Its Ultralytics (<= 8.3.86) empties the CUDA cache at every epoch end."""
        return empty_threshold(self.version) is None

    @property
    def empty_above_bytes(self) -> float:
        """Reserved bytes above which its cache is emptied at epoch end (0: always)."""
        return empty_above_bytes(self.version, self.gpu_total_bytes)

    @property
    def file(self) -> str:
        return self.source.split(":")[0]

    def key(self) -> ProfileKey:
        """The profile this row needs (nc and optimizer as the run had them)."""
        ref = with_kpt_shape(resolve_model(self.model), self.kpt_shape)
        return ProfileKey(ref.name, ref.config_hash, self.imgsz, self.amp, self.optimizer,
                          self.nc, False)


def _unit_in_notes(notes: str) -> str:
    m = re.search(r"unit (GiB|GB)", notes)
    if not m:
        raise ValueError(f"notes state no unit: {notes[:80]!r}")
    return m.group(1)


def load_rows(directory: Path = FIELD_DIR) -> list[FieldRow]:
    """Every row of both files, joined with its reading in rows.json."""
    readings = json.loads((directory / "rows.json").read_text())
    rows: list[FieldRow] = []
    for name in FILES:
        with (directory / name).open(newline="") as f:
            raw = list(csv.DictReader(f))
        entries = readings[name]
        if len(entries) != len(raw):
            raise ValueError(f"rows.json reads {len(entries)} rows of {name}, the file has "
                             f"{len(raw)}")
        for i, (r, e) in enumerate(zip(raw, entries, strict=True), start=1):
            source = f"{name}:{i}"
            unit = _unit_in_notes(r["notes"])
            if unit != e["unit"]:
                raise ValueError(f"{source}: rows.json says {e['unit']}, the notes say {unit}")
            model = re.sub(r"\.pt$", "", r["model"].split(" ")[0])
            if model != e["model"]:
                raise ValueError(f"{source}: rows.json says {e['model']}, the file {model}")
            if "task" in r and r["task"] and r["task"] != e["task"]:
                raise ValueError(f"{source}: rows.json says {e['task']}, the file {r['task']}")
            if e["density"] not in DENSITIES:
                raise ValueError(f"{source}: density must be one of {DENSITIES}")
            value = float(e.get("measured", r.get("gpu_mem_gb") or r["gpu_mem_value"]))
            world = int(r["n_gpus"])
            rows.append(FieldRow(
                source=source, model=model, task=e["task"], imgsz=int(r["imgsz"]),
                batch=int(r["batch"]) // world, amp="fp16" if r["amp"] == "True" else "off",
                nc=int(e["nc"]), objects=int(e["objects"]), optimizer=e["optimizer"],
                mosaic=bool(e.get("mosaic", True)),
                kpt_shape=tuple(e["kpt_shape"]) if e.get("kpt_shape") else None,  # type: ignore[arg-type]
                gpu=r["gpu"], gpu_total_bytes=float(r["gpu_total_mib"]) * 2**20,
                measured_bytes=value * UNITS[unit], density=e["density"],
                version=r["ultralytics_version"], why=e["why"]))
    return rows


def keys(rows: Iterable[FieldRow]) -> list[ProfileKey]:
    """The distinct profiles the rows need, in first-use order."""
    seen: dict[str, ProfileKey] = {}
    for row in rows:
        k = row.key()
        seen.setdefault(k.id, k)
    return list(seen.values())


def gpu_for(row: FieldRow) -> GpuClass:
    """The row's card as a known class (its constants), else one built from the defaults
    (reserved bytes do not depend on the card's size; the CUDA context is not in GPU_mem)."""
    try:
        return get_gpu_class(row.gpu)
    except KeyError:
        return from_memory(16 * 2**30, name=row.gpu)


def _densities(row: FieldRow, densest: int | None = None) -> tuple[int, int | None]:
    """(densest, typical) labels per training sample. Only the mean per image is published:
    it is the typical image, and stands in for the densest image too (mosaic x4), unless
    `densest` (per image) is given."""
    most = row.objects if densest is None else densest
    return (objects_per_sample(most, row.mosaic),
            mean_objects_per_sample(row.objects, row.mosaic))


def traced_allocated(row: FieldRow, profile: Profile) -> int:
    """The trace's peak allocated bytes at the row's batch and density (no GPU constant)."""
    return profile.allocated.at(row.batch, *_densities(row))


def traced_reserved_default(row: FieldRow, profile: Profile) -> int:
    """The allocator model's own default-mode replay (for comparison; not the estimate)."""
    return profile.reserved_terms(expandable_segments=False).at(row.batch, *_densities(row))


def _predict(row: FieldRow, profile: Profile, gpu: GpuClass, densest: int | None,
             epoch_emptied: bool) -> int:
    most = row.objects if densest is None else densest
    return estimate(profile, row.batch, most, gpu, mosaic=row.mosaic,
                    expandable_segments=False, epoch_emptied=epoch_emptied,
                    mean_objects=row.objects).peak_reserved_bytes


def epoch_emptied(row: FieldRow, profile: Profile, gpu: GpuClass,
                  densest: int | None = None) -> bool:
    """Whether the row's cache is emptied at each epoch end, decided from the *prediction*
    (a plan has no measurement): its Ultralytics always empties it (<= 8.3.86), or the
    emptied-regime prediction exceeds its threshold x the card's total memory
    (calibration.epoch_emptied states the rule and why the emptied prediction decides)."""
    return row.always_emptied or (
        _predict(row, profile, gpu, densest, True) > row.empty_above_bytes)


def cache_regime(row: FieldRow, profile: Profile, gpu: GpuClass,
                 densest: int | None = None) -> str:
    """The row's cache regime, for tables: "kept", "emptied (>50 %)" (the predicted reserved
    bytes cross the version's threshold) or "emptied (<=8.3.86)" (always)."""
    threshold = empty_threshold(row.version)
    if threshold is None:
        return "emptied (<={})".format(".".join(map(str, EPOCH_EMPTIED_UNTIL)))
    if epoch_emptied(row, profile, gpu, densest):
        return f"emptied (>{threshold:.0%})".replace("%", " %")
    return "kept"


def predict(row: FieldRow, profile: Profile, gpu: GpuClass, densest: int | None = None
            ) -> int:
    """The estimate's peak reserved bytes for the row: default allocator (stock
    Ultralytics), single GPU, the row's density (the stated mean as the typical image and,
    unless `densest` is given, as the densest), mosaic setting and cache regime
    (`epoch_emptied`: its version and, past 8.3.86, the predicted share of the card)."""
    return _predict(row, profile, gpu, densest, epoch_emptied(row, profile, gpu, densest))


@dataclass(frozen=True)
class Accuracy:
    """Signed relative errors (predicted / measured - 1) summarised."""

    n: int
    median_abs: float
    p90_abs: float
    bias: float  # median signed error
    max_over: float
    max_under: float  # most negative signed error (0 if none under)
    under_5pct: int  # rows predicted more than 5 % below the measurement

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v)
                for k, v in self.__dict__.items()}


def quantile(values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile (the value at rank ceil(q n))."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def accuracy(errors: Sequence[float]) -> Accuracy:
    if not errors:
        return Accuracy(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0)
    absolute = [abs(e) for e in errors]
    return Accuracy(len(errors), statistics.median(absolute), quantile(absolute, 0.9),
                    statistics.median(errors), max(max(errors), 0.0), min(min(errors), 0.0),
                    sum(e < -0.05 for e in errors))


def profiles_for(rows: Iterable[FieldRow], store: ProfileStore | None = None
                 ) -> dict[str, Profile]:
    """The profile of every row from the store (shipped + cache); KeyError naming the
    missing ones (precompute them: python -m yolofit.estimator.precompute --field)."""
    store = store or ProfileStore()
    found: dict[str, Profile] = {}
    missing = []
    for row in rows:
        p = store.traced(row.key())
        if p is None:
            missing.append(f"{row.source} ({row.key().id})")
        else:
            found[row.source] = p
    if missing:
        raise KeyError("no profile for " + ", ".join(missing))
    return found
