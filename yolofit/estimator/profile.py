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
    "AMP_MODES", "COMPONENTS", "MOSAIC_OBJECTS_FACTOR", "OPTIMIZERS", "SHIPPED_PROFILES",
    "Estimate", "ModelRef", "Profile", "ProfileKey", "ProfileMissing", "ProfileStore", "Terms",
    "UnknownModel", "config_hash", "ddp_bucket_bytes", "default_cache_dir", "estimate",
    "model_families", "model_name", "objects_per_sample", "resolve_model", "write_profiles",
]

AmpMode = Literal["off", "fp16", "bf16"]
Optimizer = Literal["SGD", "AdamW", "MuSGD"]
AMP_MODES: tuple[str, ...] = ("off", "fp16", "bf16")
OPTIMIZERS: tuple[str, ...] = ("SGD", "AdamW", "MuSGD")

# Ultralytics' mosaic puts four images into one training sample, so a sample can hold up
# to four times the labels of the densest image (ultralytics/data/augment.py Mosaic).
MOSAIC_OBJECTS_FACTOR = 4

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
    """Bytes as fixed + per_sample*batch + per_object*batch*objects (objects per sample)."""

    fixed: int
    per_sample: int
    per_object: int = 0

    def at(self, batch: int, objects: int = 0) -> int:
        return self.fixed + self.per_sample * batch + self.per_object * batch * objects

    def __add__(self, other: Terms) -> Terms:
        return Terms(self.fixed + other.fixed, self.per_sample + other.per_sample,
                     self.per_object + other.per_object)

    def __sub__(self, other: Terms) -> Terms:
        return Terms(self.fixed - other.fixed, self.per_sample - other.per_sample,
                     self.per_object - other.per_object)

    def max_batch(self, budget: int, objects: int = 0) -> int:
        """Largest batch b with at(b, objects) <= budget (0 if even b=1 fails); closed form."""
        slope = self.per_sample + self.per_object * objects
        room = budget - self.fixed
        if slope <= 0:
            return 0 if room < slope else 2**31
        return max(room // slope, 0)

    def to_dict(self) -> dict[str, int]:
        return {"fixed": self.fixed, "per_sample": self.per_sample, "per_object": self.per_object}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Terms:
        return cls(int(d["fixed"]), int(d["per_sample"]), int(d.get("per_object", 0)))


def fit_upper_terms(values: Sequence[int], points: Sequence[tuple[int, int]]) -> Terms:
    """Terms through four traced points (b1,o),(b2,o),(b,o1),(b,o2): the sparse line from
    the first two, the per-object slope from the last two; rounded up and raised until no
    traced point is under-predicted (build.py's docstring says why this is an upper bound)."""
    (b1, o1), (b2, o2), (b3, o3), (b4, o4) = points
    if not (o1 == o2 and b1 != b2 and b3 == b4 and o3 != o4):
        raise ValueError(f"points must be (b1,o),(b2,o),(b,o1),(b,o2): {list(points)}")
    v1, v2, v3, v4 = (Fraction(v) for v in values)
    per_object = (v4 - v3) / (b3 * (o4 - o3))
    per_sample = (v2 - v1) / (b2 - b1)
    fixed = v1 - per_sample * b1
    terms = Terms(math.floor(fixed), math.ceil(per_sample), max(math.ceil(per_object), 0))
    short = max(Fraction(v - terms.at(b, o), b) for v, (b, o) in zip(values, points,
                                                                    strict=True))
    if short > 0:
        terms = Terms(terms.fixed, terms.per_sample + math.ceil(short), terms.per_object)
    return terms


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
        if len(self.traced_at) == 4 and all("reserved_default" in t for t in self.traced_at):
            points = [(int(t["batch"]), int(t["objects"])) for t in self.traced_at]
            fitted = fit_upper_terms([max(int(t["reserved_default"]), int(t["allocated"]))
                                      for t in self.traced_at], points)
            return Terms(max(fitted.fixed, self.allocated.fixed),
                         max(fitted.per_sample, self.allocated.per_sample),
                         max(fitted.per_object, self.allocated.per_object))
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


def ddp_bucket_bytes(profile: Profile) -> int:
    """DDP's gradient buckets: one fp32 copy of every gradient (Ultralytics wraps the model
    with gradient_as_bucket_view=False), allocated when DDP is built, kept for the run."""
    return 4 * profile.params


def estimate(profile: Profile, batch: int, objects: int, gpu: GpuClass,
             mosaic: bool = True, world_size: int = 1,
             expandable_segments: bool = True, epoch_emptied: bool = False) -> Estimate:
    """Peak per GPU at `batch` samples per GPU and `objects` labels per *image* (the dataset
    property; mosaic multiplies it by four per sample unless `mosaic` is False).

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
    field-fitted default-allocator overhead (`epoch_emptied`: Ultralytics <= 8.3.85 empties
    the cache at every epoch end) - the allocator model's own default-mode replay misses the
    field runs by -11 to +9 % (benchmarks/RESULTS.md), the fitted fraction does not.
    """
    per_sample = objects_per_sample(objects, mosaic)
    names = [c for c in COMPONENTS if c in profile.breakdown]
    names += [c for c in profile.breakdown if c not in COMPONENTS]
    breakdown = {name: profile.breakdown[name].at(batch, per_sample) for name in names}
    extra_allocated = gpu.workspace_bytes
    extra_outside = gpu.cuda_context_bytes
    if world_size > 1:  # buckets live all run long, whatever the grads do at the peak
        grads = ddp_bucket_bytes(profile)
        breakdown["ddp_buckets"] = grads
        breakdown["nccl"] = gpu.nccl_bytes
        extra_allocated += grads
        extra_outside += gpu.nccl_bytes
    traced_allocated = profile.allocated.at(batch, per_sample)
    allocated = traced_allocated + extra_allocated
    if expandable_segments:
        traced_reserved = profile.reserved.at(batch, per_sample)
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
    lookup; `put` writes the file atomically and updates the dict. `refresh()` re-reads
    the directory (for a long-running operator that wants profiles traced elsewhere).
    """

    def __init__(self, cache_dir: Path | str | None = None,
                 shipped: Path | str | None = _SHIPPED) -> None:
        if shipped is _SHIPPED:  # read at call time, so SHIPPED_PROFILES can be redirected
            shipped = SHIPPED_PROFILES
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.shipped = Path(shipped) if shipped is not None else None
        self._lock = threading.Lock()
        self._profiles: dict[str, Profile] | None = None
        self._imgsz_index: dict[str, list[int]] | None = None
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
            self._imgsz_index = None

    def get(self, key: ProfileKey) -> Profile | None:
        return self.profiles.get(key.id)

    def require(self, key: ProfileKey) -> Profile:
        profile = self.get(key)
        if profile is None:
            raise ProfileMissing(key)
        return profile

    def keys(self) -> list[ProfileKey]:
        return [p.key for p in self.profiles.values()]

    def imgsz_available(self, key: ProfileKey) -> list[int]:
        """The imgsz values with a profile that matches `key` in everything else, largest
        first (the planner's candidates when it may reduce imgsz)."""
        index = self._imgsz_index
        if index is None:
            index = {}
            for k in [p.key for p in self.profiles.values()]:
                index.setdefault(k.replace(imgsz=0).id, []).append(k.imgsz)
            for sizes in index.values():
                sizes.sort(reverse=True)
            self._imgsz_index = index
        return index.get(key.replace(imgsz=0).id, [])

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
            self._imgsz_index = None
        return path


def write_profiles(path: Path, profiles: list[Profile]) -> None:
    """Write a shipped-profiles file ({"profiles": [...]}, sorted by id for stable diffs)."""
    items = [p.to_dict() for p in sorted(profiles, key=lambda p: p.key.id)]
    path.write_text(json.dumps({"profiles": items}, indent=1, sort_keys=True) + "\n")

