"""Profiles: what one trace of a training step learned, as a few linear terms.

A profile says how many bytes a training step of one model configuration needs as
``fixed + per_sample * batch + per_object * batch * objects_per_sample``, both allocated
and reserved (the CUDA caching allocator's view), with a per-component breakdown.
Profiles are keyed by the model's config hash, imgsz, AMP mode, optimizer, nc and
activation checkpointing; they ship in ``data/profiles.json`` and are cached on disk.

This module is pure: it imports neither torch nor ultralytics, so the operator's webhook
can look a profile up and plan in microseconds. Tracing lives in ``build.py``/``tracer.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

from yolofit.estimator.gpu import GpuClass
from yolofit.estimator.identity import (  # re-exported: the tracer and the CLI use them here
    ModelRef,
    UnknownModel,
    config_hash,
    model_families,
    model_name,
    resolve_model,
)

__all__ = [
    "AMP_MODES", "COMPONENTS", "MOSAIC_MEAN_FACTOR", "MOSAIC_OBJECTS_FACTOR", "OPTIMIZERS",
    "SHIPPED_PROFILES",
    "Estimate", "ModelRef", "Profile", "ProfileKey", "ProfileMissing", "ProfileStore", "Terms",
    "UnknownModel", "config_hash", "ddp_bucket_bytes", "default_cache_dir", "estimate",
    "mean_objects_per_sample", "model_families", "model_name", "not_below",
    "objects_per_sample", "resolve_model", "trace_points", "write_profiles",
]

AmpMode = Literal["off", "fp16", "bf16"]
Optimizer = Literal["SGD", "AdamW", "MuSGD"]
AMP_MODES: tuple[str, ...] = ("off", "fp16", "bf16")
OPTIMIZERS: tuple[str, ...] = ("SGD", "AdamW", "MuSGD")

# Ultralytics' mosaic puts four images into one training sample, so a sample can hold up
# to four times the labels of the densest image (ultralytics/data/augment.py Mosaic).
MOSAIC_OBJECTS_FACTOR = 4
# ...but on average far fewer: the four images fill a 2*imgsz canvas and RandomPerspective
# keeps an imgsz x imgsz window of it (border -imgsz/2), one image's area; its zoom (scale
# 0.5: E[1/s^2] = 4/3 over s in [0.5, 1.5]) and clipped boxes that survive box_candidates
# add to that. Measured with Ultralytics' own train pipeline (Mosaic + RandomPerspective,
# default hyperparameters, 2000 samples): x1.41-1.42 for boxes 1-5 % of a side, x1.66-1.67
# for 5-30 % (benchmarks/RESULTS.md, field section); the larger is used.
MOSAIC_MEAN_FACTOR = Fraction(5, 3)

# The components a profile's breakdown may hold, in display order. Their allocated parts
# sum to `allocated`; `allocator_overhead` is reserved - allocated.
COMPONENTS: tuple[str, ...] = (
    "weights", "gradients", "optimizer_state", "ema", "activations", "loss", "validation",
    "temporaries", "allocator_overhead",
)

SHIPPED_PROFILES = Path(__file__).with_name("data") / "profiles.json"
_SHIPPED = Path("<shipped profiles>")  # sentinel default of ProfileStore(shipped=...)


class ProfileMissing(LookupError):
    """No profile for this key: trace it (CLI) or mark the job Profiling (operator)."""

    def __init__(self, key: ProfileKey) -> None:
        super().__init__(f"no profile for {key.id}")
        self.key = key


@dataclass(frozen=True)
class ProfileKey:
    """What a trace depends on. `model` is a display name; `config_hash` is the identity."""

    model: str
    config_hash: str
    imgsz: int
    amp: str
    optimizer: str
    nc: int
    checkpointing: bool

    @property
    def id(self) -> str:
        """Stable string, e.g. ``yolov8s|3f2a9c0d1e4b|640|fp16|AdamW|nc80|ckpt0``."""
        return (f"{self.model}|{self.config_hash}|{self.imgsz}|{self.amp}|{self.optimizer}"
                f"|nc{self.nc}|ckpt{int(self.checkpointing)}")

    @classmethod
    def from_id(cls, text: str) -> ProfileKey:
        model, config_hash, imgsz, amp, optimizer, nc, ckpt = text.split("|")
        if not nc.startswith("nc") or ckpt not in ("ckpt0", "ckpt1"):
            raise ValueError(f"not a profile key id: {text!r}")
        return cls(model, config_hash, int(imgsz), amp, optimizer, int(nc[2:]), ckpt == "ckpt1")

    def replace(self, **changes: Any) -> ProfileKey:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "config_hash": self.config_hash, "imgsz": self.imgsz,
                "amp": self.amp, "optimizer": self.optimizer, "nc": self.nc,
                "checkpointing": self.checkpointing}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ProfileKey:
        return cls(str(d["model"]), str(d["config_hash"]), int(d["imgsz"]), str(d["amp"]),
                   str(d["optimizer"]), int(d["nc"]), bool(d["checkpointing"]))


@dataclass(frozen=True)
class Terms:
    """Bytes as fixed + per_sample*batch + per_object*batch*objects
    + per_mean_object*batch*mean_objects (both counts per training sample).

    Two object counts, because the loss has two kinds of label-dependent tensors:
    - `objects`, the densest sample of the batch: the TaskAlignedAssigner pads every sample's
      targets to it (b x max_n x anchors tensors), so `per_object` is paid per sample at the
      batch's densest count (and carries the upper-bound slack of build.py's fit);
    - `mean_objects`, the typical sample: the terms proportional to the foreground anchors
      the assigner picks (segment: one 160x160 mask map per anchor saved for backward; pose:
      keypoint losses) sum over the real labels of the batch, ~ batch x mean labels.
    `at(b, o)` without a mean counts every sample at the densest count (an upper bound: what
    profiles without a `per_mean_object` term, or callers without a mean, get)."""

    fixed: int
    per_sample: int
    per_object: int = 0
    per_mean_object: int = 0

    def at(self, batch: int, objects: int = 0, mean_objects: int | None = None) -> int:
        mean = objects if mean_objects is None else mean_objects
        return (self.fixed + self.per_sample * batch + self.per_object * batch * objects
                + self.per_mean_object * batch * mean)

    def slope(self, objects: int = 0, mean_objects: int | None = None) -> int:
        """Bytes per sample at these densities (at() = fixed + slope * batch)."""
        mean = objects if mean_objects is None else mean_objects
        return self.per_sample + self.per_object * objects + self.per_mean_object * mean

    def __add__(self, other: Terms) -> Terms:
        return Terms(self.fixed + other.fixed, self.per_sample + other.per_sample,
                     self.per_object + other.per_object,
                     self.per_mean_object + other.per_mean_object)

    def __sub__(self, other: Terms) -> Terms:
        return Terms(self.fixed - other.fixed, self.per_sample - other.per_sample,
                     self.per_object - other.per_object,
                     self.per_mean_object - other.per_mean_object)

    def max_batch(self, budget: int, objects: int = 0, mean_objects: int | None = None) -> int:
        """Largest batch b with at(b, objects, mean) <= budget (0 if even b=1 fails);
        closed form."""
        slope = self.slope(objects, mean_objects)
        room = budget - self.fixed
        if slope <= 0:
            return 0 if room < slope else 2**31
        return max(room // slope, 0)

    def to_dict(self) -> dict[str, int]:
        d = {"fixed": self.fixed, "per_sample": self.per_sample, "per_object": self.per_object}
        if self.per_mean_object:
            d["per_mean_object"] = self.per_mean_object
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Terms:
        return cls(int(d["fixed"]), int(d["per_sample"]), int(d.get("per_object", 0)),
                   int(d.get("per_mean_object", 0)))


Point = tuple[int, ...]  # (batch, objects) or (batch, densest, mean): labels per sample


def _triple(point: Point) -> tuple[int, int, Fraction]:
    """(batch, densest, mean) of a trace point; a (batch, objects) point has every sample
    at `objects`. The mean may be fractional (one dense sample among typical ones)."""
    if len(point) == 2:
        return point[0], point[1], Fraction(point[1])
    return point[0], point[1], Fraction(point[2])


def trace_points(traced_at: Sequence[Mapping[str, Any]]) -> list[Point]:
    """The fit's points of a profile's `traced_at` entries: (batch, densest, mean)."""
    return [(int(t["batch"]), int(t["objects"]), t.get("mean_objects", t["objects"]))
            for t in traced_at]


def fit_upper_terms(values: Sequence[int], points: Sequence[Point],
                    assign: Sequence[int] | None = None) -> Terms:
    """Upper-bound terms through the traced points (build.py's docstring says why).

    Four points (b1,o),(b2,o),(b,o1),(b,o2) (profiles before the mean-density point): the
    sparse line from the first two, the per-object slope from the last two, every label
    counted at the densest sample (`per_object`); rounded up and the per-sample term raised
    until no traced point is under-predicted.
    Five points (build.POINTS): the sparse pair, the dense pair, and a fifth at the first
    point's batch with more (still sparse) labels. The fifth's rise over the first is the
    slope of the typical labels (`per_mean_object`, the loss terms that follow the
    foreground anchors); the sparse line is taken at zero labels; `per_object` is the dense
    pair's slope beyond the mean slope, raised until the dense points are covered: that
    excess appears only with dense labels, so it is charged to the densest count, not to
    every sample of every batch. Since the densest count is never below the mean, a batch
    of dense samples is covered as traced, and one dense sample among sparse ones too.
    `assign` (five points): the peaks traced while the TaskAlignedAssigner ran; per_object
    is never below their slope over the dense pair - the targets padded to the densest
    sample (b x max x anchors) can hide under a larger mask-loss peak at the traced points
    and still set the peak of a batch whose densest sample is far above its mean."""
    if len(points) == 5:
        return _fit_upper_terms5(values, points, assign)
    (b1, o1), (b2, o2), (b3, o3), (b4, o4) = (p[:2] for p in points)
    if not (o1 == o2 and b1 != b2 and b3 == b4 and o3 != o4):
        raise ValueError(f"points must be (b1,o),(b2,o),(b,o1),(b,o2): {list(points)}")
    v1, v2, v3, v4 = (Fraction(v) for v in values)
    per_object = (v4 - v3) / (b3 * (o4 - o3))
    per_sample = (v2 - v1) / (b2 - b1)
    fixed = v1 - per_sample * b1
    terms = Terms(math.floor(fixed), math.ceil(per_sample), max(math.ceil(per_object), 0))
    return _raised(terms, values, points)


def exact_terms5(values: Sequence[int], points: Sequence[Point]
                 ) -> tuple[Fraction, Fraction, Fraction, Fraction]:
    """(fixed, per_sample, per_object, per_mean_object) through the five points exactly (see
    fit_upper_terms; each may be negative: callers clamp)."""
    (b1, o1, m1), (b2, o2, _), (b3, d3, m3), (b4, d4, m4), (b5, o5, m5) = map(_triple, points)
    if not (o1 == o2 == m1 and b1 != b2 and b3 == b4 and d3 != d4 and b5 == b1
            and o5 == m5 > o1):
        raise ValueError("points must be (b1,o),(b2,o),(b,d1,m1),(b,d2,m2),(b1,o3>o): "
                         f"{list(points)}")
    v1, v2, v3, v4, v5 = (Fraction(v) for v in values)
    per_mean = (v5 - v1) / (b1 * (o5 - o1))
    slope = (v2 - v1) / (b2 - b1)
    fixed = v1 - slope * b1
    per_object = (v4 - v3 - per_mean * b3 * (m4 - m3)) / (b3 * (d4 - d3))
    return fixed, slope - per_mean * o1, per_object, per_mean


def _fit_upper_terms5(values: Sequence[int], points: Sequence[Point],
                      assign: Sequence[int] | None) -> Terms:
    fixed, _, _, per_mean = exact_terms5(values, points)
    (b1, o1, _), (b2, _, _), (b, d3, m3), (_, d4, m4) = map(_triple, points[:4])
    per_mean = max(per_mean, Fraction(0))  # labels never make the sparse peak smaller
    per_sample = Fraction(values[1] - values[0], b2 - b1) - per_mean * o1
    per_object = max((values[3] - values[2] - per_mean * b * (m4 - m3)) / (b * (d4 - d3)),
                     Fraction(0))
    if assign is not None and assign[2] and assign[3]:
        per_object = max(per_object, Fraction(assign[3] - assign[2], b * (d4 - d3)))
    for v, point in zip(values[2:4], points[2:4], strict=True):  # cover the dense points
        pb, d, m = _triple(point)
        line = fixed + per_sample * pb + per_mean * pb * m
        per_object = max(per_object, (v - line) / (pb * d))
    terms = Terms(math.floor(fixed), math.ceil(per_sample), math.ceil(per_object),
                  math.ceil(per_mean))
    return _raised(terms, values, points)


def _at(terms: Terms, point: Point) -> Fraction:
    b, d, m = _triple(point)
    return (terms.fixed + terms.per_sample * b + terms.per_object * b * d
            + terms.per_mean_object * b * m)


def _raised(terms: Terms, values: Sequence[int], points: Sequence[Point]) -> Terms:
    """`terms` with per_sample raised until no traced point is under-predicted."""
    short = max((v - _at(terms, p)) / p[0] for v, p in zip(values, points, strict=True))
    if short > 0:
        terms = dataclasses.replace(terms, per_sample=terms.per_sample + math.ceil(short))
    return terms


def not_below(terms: Terms, floor: Terms) -> Terms:
    """`terms`, term by term never below `floor` (reserved never below allocated)."""
    return Terms(max(terms.fixed, floor.fixed), max(terms.per_sample, floor.per_sample),
                 max(terms.per_object, floor.per_object),
                 max(terms.per_mean_object, floor.per_mean_object))


@dataclass(frozen=True)
class Profile:
    """One traced model configuration. `traced_at` lists the trace points (free-form dicts,
    e.g. {"batch": 2, "objects": 8, "allocated": ..., "reserved": ..., "seconds": ...}).

    `reserved` is what the allocator model says with expandable segments (the yolofit
    trainer's setting); `reserved_default` the same trace replayed through the default
    allocator (stock Ultralytics, and every field measurement). `task` is the Ultralytics
    task whose model and loss were traced."""

    key: ProfileKey
    params: int
    allocated: Terms
    reserved: Terms
    breakdown: dict[str, Terms] = field(default_factory=dict)
    traced_at: list[dict[str, Any]] = field(default_factory=list)
    source: str = ""
    task: str = "detect"
    reserved_default: Terms | None = None

    def reserved_terms(self, expandable_segments: bool = True) -> Terms:
        """Reserved terms for the allocator mode: expandable segments, or the default
        allocator (fitted from the trace points' default replay when not stored)."""
        if expandable_segments:
            return self.reserved
        if self.reserved_default is not None:
            return self.reserved_default
        if len(self.traced_at) in (4, 5) and all("reserved_default" in t
                                                  for t in self.traced_at):
            points = trace_points(self.traced_at)
            fitted = fit_upper_terms([max(int(t["reserved_default"]), int(t["allocated"]))
                                      for t in self.traced_at], points)
            return not_below(fitted, self.allocated)
        return self.reserved

    def to_dict(self) -> dict[str, Any]:
        d = {"key": self.key.to_dict(), "id": self.key.id, "params": self.params,
             "allocated": self.allocated.to_dict(), "reserved": self.reserved.to_dict(),
             "breakdown": {k: v.to_dict() for k, v in self.breakdown.items()},
             "traced_at": list(self.traced_at), "source": self.source, "task": self.task}
        if self.reserved_default is not None:
            d["reserved_default"] = self.reserved_default.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Profile:
        default = d.get("reserved_default")
        return cls(key=ProfileKey.from_dict(d["key"]), params=int(d["params"]),
                   allocated=Terms.from_dict(d["allocated"]),
                   reserved=Terms.from_dict(d["reserved"]),
                   breakdown={k: Terms.from_dict(v) for k, v in d.get("breakdown", {}).items()},
                   traced_at=list(d.get("traced_at", [])), source=str(d.get("source", "")),
                   task=str(d.get("task", "detect")),
                   reserved_default=Terms.from_dict(default) if default else None)


@dataclass(frozen=True)
class Estimate:
    """Peak memory of one GPU for one training configuration, in bytes."""

    peak_allocated_bytes: int
    peak_reserved_bytes: int
    device_total_bytes: int
    breakdown: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {"peak_allocated_bytes": self.peak_allocated_bytes,
                "peak_reserved_bytes": self.peak_reserved_bytes,
                "device_total_bytes": self.device_total_bytes,
                "breakdown": dict(self.breakdown)}


def objects_per_sample(objects_per_image: int, mosaic: bool = True) -> int:
    """The most labels one training sample can carry (mosaic: four images per sample)."""
    return objects_per_image * (MOSAIC_OBJECTS_FACTOR if mosaic else 1)


def mean_objects_per_sample(mean_per_image: int | None, mosaic: bool = True) -> int | None:
    """The labels a typical training sample carries (mosaic: 5/3 of an image's mean, see
    MOSAIC_MEAN_FACTOR, rounded up); None (no mean known) stays None: count every sample as
    the densest."""
    if mean_per_image is None:
        return None
    return math.ceil(mean_per_image * MOSAIC_MEAN_FACTOR) if mosaic else mean_per_image


def ddp_bucket_bytes(profile: Profile) -> int:
    """DDP's gradient buckets: one fp32 copy of every gradient (Ultralytics wraps the model
    with gradient_as_bucket_view=False), allocated when DDP is built, kept for the run."""
    return 4 * profile.params


def estimate(profile: Profile, batch: int, objects: int, gpu: GpuClass,
             mosaic: bool = True, world_size: int = 1,
             expandable_segments: bool = True, epoch_emptied: bool = False,
             mean_objects: int | None = None) -> Estimate:
    """Peak per GPU at `batch` samples per GPU and `objects` labels in the densest *image*
    (the dataset property; mosaic multiplies it by four per sample unless `mosaic` is
    False), `mean_objects` the dataset's mean labels per image (a mosaic sample carries 5/3
    of it on average); without a mean every sample is counted at the densest (see Terms).

    The profile gives what the CPU trace saw through the allocator model. The GPU class adds
    what only a GPU has: cuBLAS/cuDNN workspaces (served by the caching allocator, so they
    count in allocated and reserved), fragmentation beyond the allocator model (reserved),
    and the CUDA context (outside the allocator, so only in the device total). With DDP
    (world_size > 1) it adds the gradient buckets (Ultralytics wraps the model with
    gradient_as_bucket_view=False, so DDP keeps a second copy of every gradient; PyTorch
    DistributedDataParallel docs) and NCCL's buffers (outside the allocator).
    Reserved bytes: with expandable segments (what the yolofit trainer sets) the allocator
    model's replay plus the class's `fragmentation` margin; with the default allocator (stock
    Ultralytics, `expandable_segments=False`) the traced *allocated* peak plus the
    field-fitted default-allocator overhead (`epoch_emptied`: the cache is emptied at every
    epoch end - Ultralytics <= 8.3.86, or later ones once reserved exceeds half the card;
    field.epoch_emptied decides it) - the allocator model's own default-mode replay misses the
    field runs by -11 to +9 % (benchmarks/RESULTS.md), the fitted fraction does not.
    """
    per_sample = objects_per_sample(objects, mosaic)
    mean = mean_objects_per_sample(mean_objects, mosaic)
    names = [c for c in COMPONENTS if c in profile.breakdown]
    names += [c for c in profile.breakdown if c not in COMPONENTS]
    breakdown = {name: profile.breakdown[name].at(batch, per_sample, mean) for name in names}
    extra_allocated = gpu.workspace_bytes
    extra_outside = gpu.cuda_context_bytes
    if world_size > 1:  # buckets live all run long, whatever the grads do at the peak
        grads = ddp_bucket_bytes(profile)
        breakdown["ddp_buckets"] = grads
        breakdown["nccl"] = gpu.nccl_bytes
        extra_allocated += grads
        extra_outside += gpu.nccl_bytes
    traced_allocated = profile.allocated.at(batch, per_sample, mean)
    allocated = traced_allocated + extra_allocated
    if expandable_segments:
        traced_reserved = profile.reserved.at(batch, per_sample, mean)
        fragmentation = gpu.fragmentation_bytes(traced_reserved)
    else:
        traced_reserved = traced_allocated
        fragmentation = gpu.default_allocator_overhead(traced_allocated, epoch_emptied)
        breakdown.pop("allocator_overhead", None)  # the fitted overhead stands for it
    reserved = traced_reserved + extra_allocated + fragmentation
    breakdown["cublas_workspace"] = gpu.cublas_workspace_bytes
    breakdown["cudnn_workspace"] = gpu.cudnn_workspace_bytes
    breakdown["fragmentation"] = fragmentation
    breakdown["cuda_context"] = gpu.cuda_context_bytes
    return Estimate(peak_allocated_bytes=allocated, peak_reserved_bytes=reserved,
                    device_total_bytes=reserved + extra_outside, breakdown=breakdown)


# --- store ----------------------------------------------------------------------------------

def default_cache_dir() -> Path:
    env = os.environ.get("YOLOFIT_PROFILE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "yolofit" / "profiles"


def _read_profiles(path: Path) -> Iterator[Profile]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if isinstance(data, dict):  # a cache file holds one profile, a shipped file many
        items = [data] if "key" in data else data.get("profiles", [])
    else:
        items = data
    for item in items:
        try:
            yield Profile.from_dict(item)
        except (KeyError, TypeError, ValueError):
            continue  # one bad entry must not hide the rest


class ProfileStore:
    """Shipped profiles, then the on-disk cache (one JSON file per profile). Never traces.

    Everything is loaded once into a dict keyed by `ProfileKey.id`, so `get` is a dict
    lookup (or, for a class count between two stored ones, an interpolation kept until the
    next put or refresh); `put` writes the file atomically and updates the dict.
    `refresh()` re-reads the directory (for a long-running operator that wants profiles
    traced elsewhere).
    """

    def __init__(self, cache_dir: Path | str | None = None,
                 shipped: Path | str | None = _SHIPPED) -> None:
        if shipped is _SHIPPED:  # read at call time, so SHIPPED_PROFILES can be redirected
            shipped = SHIPPED_PROFILES
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.shipped = Path(shipped) if shipped is not None else None
        self._lock = threading.Lock()
        self._profiles: dict[str, Profile] | None = None
        self._index: dict[str, list[tuple[int, int]]] | None = None
        self._derived: dict[str, Profile] = {}  # interpolated profiles, dropped with _index
        self._in_memory = False

    @classmethod
    def of(cls, profiles: list[Profile]) -> ProfileStore:
        """An in-memory store (tests, benchmarks): reads no files, `put` writes none."""
        store = cls(cache_dir=Path(os.devnull), shipped=None)
        store._profiles = {p.key.id: p for p in profiles}
        store._in_memory = True
        return store

    def _load(self) -> dict[str, Profile]:
        profiles: dict[str, Profile] = {}
        if self.shipped is not None and self.shipped.is_file():
            profiles.update((p.key.id, p) for p in _read_profiles(self.shipped))
        if self.cache_dir.is_dir():
            for path in sorted(self.cache_dir.glob("*.json")):
                profiles.update((p.key.id, p) for p in _read_profiles(path))
        return profiles

    @property
    def profiles(self) -> dict[str, Profile]:
        if self._profiles is None:
            with self._lock:
                if self._profiles is None:
                    self._profiles = self._load()
        return self._profiles

    def refresh(self) -> None:
        if self._in_memory:
            return
        with self._lock:
            self._profiles = self._load()
            self._index = None

    def traced(self, key: ProfileKey) -> Profile | None:
        """The stored profile of exactly `key` (shipped, cached or put)."""
        return self.profiles.get(key.id)

    def get(self, key: ProfileKey) -> Profile | None:
        """The stored profile of `key`, else one interpolated between the stored profiles of
        the nearest class counts below and above key.nc (nc_interpolation: an upper bound),
        else None."""
        profile = self.profiles.get(key.id)
        if profile is not None:
            return profile
        from yolofit.estimator.nc_interpolation import between, bracket, comparable

        traced = [n for s, n in self._siblings(key) if s == key.imgsz]
        pair = bracket(key.nc, traced)
        if pair is None:
            return None
        derived = self._derived.get(key.id)
        if derived is None:
            lo, hi = (self.profiles[key.replace(nc=n).id] for n in pair)
            if not comparable(lo, hi):
                return None
            derived = self._derived[key.id] = between(lo, hi, key.nc)
        return derived

    def require(self, key: ProfileKey) -> Profile:
        profile = self.get(key)
        if profile is None:
            raise ProfileMissing(key)
        return profile

    def _siblings(self, key: ProfileKey) -> list[tuple[int, int]]:
        """(imgsz, nc) of the stored profiles that match `key` in everything else (an index
        rebuilt after a put or refresh)."""
        index = self._index
        if index is None:
            index = {}
            for k in [p.key for p in self.profiles.values()]:
                index.setdefault(k.replace(imgsz=0, nc=0).id, []).append((k.imgsz, k.nc))
            self._index, self._derived = index, {}
        return index.get(key.replace(imgsz=0, nc=0).id, [])

    def keys(self) -> list[ProfileKey]:
        return [p.key for p in self.profiles.values()]

    def imgsz_available(self, key: ProfileKey) -> list[int]:
        """The imgsz values with a profile (stored, or interpolated in nc) that matches `key`
        in everything else, largest first (the planner's candidates when it may reduce
        imgsz)."""
        sizes = {s for s, _ in self._siblings(key)}
        return sorted((s for s in sizes if self.get(key.replace(imgsz=s)) is not None),
                      reverse=True)

    def put(self, profile: Profile) -> Path:
        name = hashlib.sha256(profile.key.id.encode()).hexdigest()[:16]
        path = self.cache_dir / f"{profile.key.model}-{name}.json"
        if not self._in_memory:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(profile.to_dict(), indent=1, sort_keys=True))
            tmp.replace(path)
        _ = self.profiles  # load before inserting, so the new entry is not lost to a reload
        with self._lock:
            assert self._profiles is not None
            self._profiles[profile.key.id] = profile
            self._index = None
        return path


def write_profiles(path: Path, profiles: list[Profile]) -> None:
    """Write a shipped-profiles file ({"profiles": [...]}, sorted by id for stable diffs)."""
    items = [p.to_dict() for p in sorted(profiles, key=lambda p: p.key.id)]
    path.write_text(json.dumps({"profiles": items}, indent=1, sort_keys=True) + "\n")

