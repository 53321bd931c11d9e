"""What the trainer reports back, and what the operator learns from it. Pure.

- `parse_summary`: a pod's termination message (JSON, yolofit/trainer/summary.py) ->
  PodReport: one RankMeasurement per local rank, bounded and finite, or rejected.
- `screen`: which reports count: only from pods whose controller ownerReference is the job
  (by UID) and whose attempt label is the current one, with peaks no larger than the class's
  device memory x PEAK_FACTOR; the rest are dropped with a reason (the reconciler's Event).
- `measured`: per-rank peaks, their max and the relative error vs the plan's estimate.
- `next_plan`: the OOM re-plan: smaller batch per GPU chosen as the planner chooses it
  (effective batch within the planner's tolerance of nbs, accumulation by Ultralytics' rule),
  checkpointing when batch 1 was already too big.
- `update_margin` / `decay_margin`, `learn` and the ConfigMap codec: the learned margin per
  (namespace, model, class), persisted in the cluster so it survives operator restarts. Each
  observation (job UID, attempt) is recorded with the margin it moved, so a crash between
  saving the margin and writing the job's status, or a second replica, never learns it twice.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from yolofit.estimator import planner
from yolofit.operator.api import Measured, ModelFound, Plan, RankMeasurement
from yolofit.units import format_bytes

OOM_EXIT_CODE = 88
BAD_INPUT_EXIT_CODE = 2
MARGIN_STEP = 0.10  # an OOM raises the margin by at least this much ...
MAX_MARGIN_STEP = 0.25  # ... and by at most this much per observation
DECAY_STEP = 0.05  # a successful run within the margin lowers it by at most this much
MAX_MARGIN = 1.0
MARGINS_KEY = "margins.json"
SEEN_KEPT = 64  # observation ids remembered per margin entry
PEAK_FACTOR = 1.5  # a peak above the class's memory x this is not a measurement
MAX_SUMMARY_CHARS = 16_384  # the kubelet keeps 4096 bytes; anything longer is not ours
MAX_COUNT = 2**53  # bytes/steps above this are not measurements (and lose float precision)
DATA_DENSER_EXIT_CODE = 3  # the data holds more objects per image than planned (replan.py)
MODEL_DIFFERS_EXIT_CODE = 4  # the checkpoint is a bigger model / more classes (replan.py)
_EXIT_REASONS = {0: "completed", 1: "error", 2: "data-missing",
                 DATA_DENSER_EXIT_CODE: "data-denser", MODEL_DIFFERS_EXIT_CODE: "model-differs",
                 88: "oom"}
MAX_OBJECTS_PER_IMAGE = 1_000_000  # a measured density above this is not a measurement
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # a name, never a path


@dataclass(frozen=True)
class PodReport:
    """One pod's termination summary, parsed. `rejected` says why its numbers were dropped."""

    pod: str
    ranks: list[RankMeasurement] = field(default_factory=list)
    exit_reason: str = ""
    message: str = ""
    attempt: int | None = None
    start_epoch: int = 0
    epochs_done: int = 0
    save_dir: str = ""
    resumed_from: str = ""
    objects_per_image: int | None = None  # the densest training image (data-denser)
    objects_per_image_mean: int | None = None  # the training split's mean, rounded up
    model_found: ModelFound | None = None  # what the checkpoint is (model-differs)
    rejected: str = ""


class _Bad(ValueError):
    """A summary field out of bounds."""


def _no_constant(name: str) -> Any:
    raise _Bad(f"{name} is not a number")


def _count(data: Mapping[str, Any], key: str, default: int = 0) -> int:
    value = data.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Bad(f"{key} is not a number")
    if not math.isfinite(value) or not 0 <= value <= MAX_COUNT:
        raise _Bad(f"{key}={value!r} is outside 0..2^53")
    return int(value)


def _rate(data: Mapping[str, Any], key: str) -> float:
    value = data.get(key) or 0.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Bad(f"{key} is not a number")
    if not math.isfinite(value) or not 0 <= value <= MAX_COUNT:
        raise _Bad(f"{key}={value!r} is outside 0..2^53")
    return float(value)


def _text(data: Mapping[str, Any], key: str, limit: int = 1024) -> str:
    value = data.get(key, "")
    return value[:limit] if isinstance(value, str) else ""


def parse_summary(message: str | None, rank: int, pod: str = "") -> PodReport | None:
    """The trainer's pod summary, or None when the message is not one (e.g. a log tail).
    Never raises: numbers that are not finite, negative or absurd reject the report."""
    if not message or len(message) > MAX_SUMMARY_CHARS:
        return None
    try:
        data = json.loads(message.strip(), parse_constant=_no_constant)
    except _Bad as exc:
        return PodReport(pod=pod, rejected=str(exc))
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    try:
        return _report(data, rank, pod)
    except (_Bad, TypeError, ValueError, OverflowError) as exc:
        return PodReport(pod=pod, rejected=str(exc) or type(exc).__name__)


def _report(data: dict[str, Any], rank: int, pod: str) -> PodReport:
    kind = data.get("memory_kind", "cuda")
    kind = kind if kind in ("cuda", "host-rss") else "cuda"
    reason = _text(data, "exit_reason", 32)
    message = _text(data, "message")
    first = _count(data, "rank", rank)
    base = RankMeasurement(
        rank=first, pod=pod, memory_kind=kind,
        peak_allocated_bytes=_count(data, "peak_allocated_bytes"),
        peak_reserved_bytes=_count(data, "peak_reserved_bytes"),
        device_total_bytes=_count(data, "device_total_bytes"),
        steps=_count(data, "steps"), images_per_second=_rate(data, "images_per_second"),
        exit_reason=reason, message=message)
    rows = data.get("ranks")
    ranks = [base]
    if rows is not None:  # per local rank: [rank, allocated, reserved, total, steps, exit]
        if not isinstance(rows, list) or not rows or len(rows) > 64:
            raise _Bad("ranks is not a list of 1..64 rows")
        ranks = []
        for row in rows:
            if not isinstance(row, list) or len(row) != 6:
                raise _Bad("a ranks row is not [rank, allocated, reserved, total, steps, exit]")
            r, alloc, reserved, total, steps, code = (
                _count({"v": v}, "v") for v in row)
            why = _EXIT_REASONS.get(code, "error")
            per_rank_ips = base.images_per_second / len(rows)
            ranks.append(RankMeasurement(
                rank=r, pod=pod, memory_kind=kind, peak_allocated_bytes=alloc,
                peak_reserved_bytes=reserved, device_total_bytes=total, steps=steps,
                images_per_second=round(per_rank_ips, 3), exit_reason=why,
                message=message if why == reason and why != "completed" else ""))
    attempt = data.get("attempt")
    return PodReport(
        pod=pod, ranks=ranks, exit_reason=reason, message=message,
        attempt=_count(data, "attempt") if attempt is not None else None,
        start_epoch=_count(data, "start_epoch"), epochs_done=_count(data, "epochs_done"),
        save_dir=_text(data, "save_dir", 512), resumed_from=_text(data, "resumed_from", 512),
        objects_per_image=_objects(data), model_found=_model_found(data),
        objects_per_image_mean=_objects(data, "objects_per_image_mean", least=0))


def _objects(data: Mapping[str, Any], key: str = "objects_per_image",
             least: int = 1) -> int | None:
    """`objects_per_image` or `objects_per_image_mean` (null or absent: None); out of bounds
    rejects the report (a mean may be 0: a split of background images)."""
    if data.get(key) is None:
        return None
    n = _count(data, key)
    if not least <= n <= MAX_OBJECTS_PER_IMAGE:
        raise _Bad(f"{key}={n} is outside {least}..{MAX_OBJECTS_PER_IMAGE}")
    return n


def _model_found(data: Mapping[str, Any]) -> ModelFound | None:
    """`model_found` {"model": name, "nc": classes} (null or absent: None); a model that is
    not a plain name (a path, markup) or an nc out of bounds rejects the report."""
    raw = data.get("model_found")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _Bad("model_found is not an object")
    model = raw.get("model")
    if not isinstance(model, str) or not _MODEL_NAME.fullmatch(model):
        raise _Bad("model_found.model is not a model name")
    nc = _count(raw, "nc")
    if not 1 <= nc <= 100_000:
        raise _Bad(f"model_found.nc={nc} is outside 1..100000")
    return ModelFound(model=model, nc=nc)


@dataclass(frozen=True)
class Trust:
    """What a report must match to count: the job's UID, its current attempt, and the
    class's memory per GPU (0 = unknown: only the parse bounds apply)."""

    job_uid: str
    attempt: int
    device_memory_bytes: int = 0


def screen(report: PodReport, owner_uid: str, attempt: int, trust: Trust) -> str:
    """'' when the report counts, else why it is dropped."""
    if owner_uid != trust.job_uid:
        return (f"pod {report.pod} is not controlled by this job (owner UID "
                f"{owner_uid or 'none'}); its summary is ignored")
    said = attempt if report.attempt is None else report.attempt
    if attempt != trust.attempt or said != trust.attempt:
        return (f"pod {report.pod} is of attempt {said}, the job is at attempt "
                f"{trust.attempt}; its summary is ignored")
    if report.rejected:
        return f"summary of pod {report.pod} dropped: {report.rejected}"
    bound = int(trust.device_memory_bytes * PEAK_FACTOR)
    if bound > 0:
        for r in report.ranks:
            peak = max(r.device_total_bytes, r.peak_reserved_bytes, r.peak_allocated_bytes)
            if peak > bound:
                return (f"summary of pod {report.pod} dropped: rank {r.rank} peak "
                        f"{format_bytes(peak)} exceeds the class's memory x {PEAK_FACTOR} "
                        f"({format_bytes(bound)})")
    return ""


def peak_of(r: RankMeasurement) -> int:
    return r.device_total_bytes or r.peak_reserved_bytes or r.peak_allocated_bytes


def measured(ranks: Iterable[RankMeasurement], estimate_bytes: int) -> Measured | None:
    ranks = sorted(ranks, key=lambda r: r.rank)
    if not ranks:
        return None
    peak = max(peak_of(r) for r in ranks)
    cuda = all(r.memory_kind == "cuda" for r in ranks)
    error = ((peak - estimate_bytes) / estimate_bytes
             if cuda and estimate_bytes > 0 and peak > 0 else None)
    label = format_bytes(peak) + ("" if cuda else " (host RSS)")
    return Measured(ranks=ranks, max_peak_bytes=peak, max_peak=label,
                    estimate_bytes=estimate_bytes,
                    relative_error=round(error, 4) if error is not None else None)


def accumulate_for(nbs: int, batch_per_gpu: int, gpus: int) -> int:
    """Ultralytics' rule: accumulate = max(round(nbs / global batch), 1) (the planner's)."""
    return planner.accumulate_for(batch_per_gpu, gpus, nbs)


@dataclass(frozen=True)
class Replanned:
    plan: Plan | None
    reason: str


def smaller_batch(old: int, cap: int, nbs: int, gpus: int) -> int:
    """The largest batch per GPU below `old` and at most `cap` whose effective batch is no
    farther from nbs than the old one's, nor than the planner's tolerance
    (planner.batch_for_nbs): a re-plan never moves the effective batch away from nbs
    (3 GPUs, nbs 64, 16 per GPU: 7 x 3 x 3 = 63, not 8 x 3 x 3 = 72). Batch 1 always
    qualifies: it reaches the multiple of the world size nearest nbs."""
    before = abs(planner.effective_batch(old, gpus, nbs) - nbs)
    tolerance = min(planner.nbs_tolerance(gpus, nbs), before)
    return planner.batch_for_nbs(max(min(old - 1, cap), 1), gpus, nbs, tolerance)


def next_plan(old: Plan, planned: Plan | None, nbs: int, allow_checkpointing: bool) -> Replanned:
    """The plan after an OOM. `planned` is the planner's answer with the learned margin
    (None when it could not plan); its batch caps the new one, else the batch is halved.
    At batch 1, checkpointing is the last lever."""
    if old.batch_per_gpu > 1:
        cap = old.batch_per_gpu // 2
        if (planned is not None and planned.gpu_class == old.gpu_class
                and planned.batch_per_gpu < old.batch_per_gpu):
            cap = planned.batch_per_gpu
        batch = smaller_batch(old.batch_per_gpu, cap, nbs, old.gpus)
        scale = batch / old.batch_per_gpu
        effective = planner.nbs_text(batch, old.gpus, nbs)
        new = old.model_copy(update={
            "batch_per_gpu": batch, "accumulate": accumulate_for(nbs, batch, old.gpus),
            "predicted_allocated_bytes": int(old.predicted_allocated_bytes * scale),
            "reason": f"OOM at batch {old.batch_per_gpu} per GPU"
                      + (f"; {effective}" if effective else "")})
        before = old.batch_per_gpu * old.gpus * old.accumulate
        after = batch * old.gpus * new.accumulate
        return Replanned(new, f"batch per GPU {old.batch_per_gpu} -> {batch}, accumulate "
                         f"{old.accumulate} -> {new.accumulate} (effective batch {before} -> "
                         f"{after}, nbs {nbs})")
    if allow_checkpointing and not old.checkpointing:
        new = old.model_copy(update={"checkpointing": True,
                                     "reason": "OOM at batch 1: activation checkpointing"})
        return Replanned(new, "batch 1 ran out of memory: activation checkpointing on")
    return Replanned(None, "out of memory at batch 1 with every allowed lever")


def update_margin(margin: float, estimate_bytes: int, peak_bytes: int) -> float:
    """After an OOM: at least one step more, at least what the measured peak implies, and
    never more than MAX_MARGIN_STEP above the old margin (one report moves it boundedly)."""
    implied = peak_bytes / estimate_bytes - 1.0 + MARGIN_STEP / 2 if estimate_bytes > 0 else 0
    up = min(max(margin + MARGIN_STEP, implied), margin + MAX_MARGIN_STEP)
    return round(min(up, MAX_MARGIN), 4)


def decay_margin(margin: float, estimate_bytes: int, peak_bytes: int) -> float:
    """After a successful run measured on the GPU: down by at most DECAY_STEP, never below
    what the measured peak implies, never up (only an OOM raises a margin)."""
    implied = peak_bytes / estimate_bytes - 1.0 if estimate_bytes > 0 and peak_bytes else 0.0
    return round(max(margin - DECAY_STEP, min(implied, margin), 0.0), 4)


def observation_id(job_uid: str, attempt: int) -> str:
    return f"{job_uid}/{attempt}"


@dataclass(frozen=True)
class Learned:
    """The margins after one observation, or unchanged when it was seen before."""

    margins: dict[str, dict[str, Any]]
    margin: float
    changed: bool


def learn(margins: Mapping[str, Mapping[str, Any]], key: str, obs: str, margin: float) -> Learned:
    """Record observation `obs` moving `key`'s margin to `margin`; a second call with the same
    observation changes nothing (idempotent across crashes and replicas)."""
    out = {k: dict(v) for k, v in margins.items()}
    entry = out.get(key, {"margin": 0.0, "observations": 0, "seen": []})
    seen = list(entry.get("seen", []))
    if obs in seen:
        return Learned(out, float(entry.get("margin", 0.0)), False)
    entry = {"margin": margin, "observations": int(entry.get("observations", 0)) + 1,
             "seen": [*seen, obs][-SEEN_KEPT:]}
    out[key] = entry
    return Learned(out, margin, True)


def merge_margins(stored: Mapping[str, Mapping[str, Any]],
                  mine: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The ConfigMap's entries and this replica's, each observation counted once: an entry
    whose observations the other already has yields to it; two that saw different
    observations keep the larger margin and the union of what they saw."""
    out = {k: dict(v) for k, v in stored.items()}
    for key, entry in mine.items():
        other = out.get(key)
        seen, theirs = set(entry.get("seen", [])), set((other or {}).get("seen", []))
        if other is None or theirs < seen or (theirs == seen and entry == other):
            out[key] = dict(entry)
        elif not seen <= theirs:
            union = [*other.get("seen", []), *[s for s in entry.get("seen", [])
                                               if s not in theirs]][-SEEN_KEPT:]
            out[key] = {"margin": max(float(entry["margin"]), float(other["margin"])),
                        "observations": len(seen | theirs), "seen": union}
    return out


def margin_key(namespace: str, model: str, gpu_class: str) -> str:
    return f"{namespace}|{model}|{gpu_class}"


def split_key(key: str) -> tuple[str, str, str]:
    namespace, model, gpu_class = key.split("|")
    return namespace, model, gpu_class


def _entry(v: Any) -> dict[str, Any] | None:
    """One ConfigMap entry, or None when it is broken (skipped, never fatal)."""
    if not isinstance(v, dict):
        return None
    try:
        margin = float(v.get("margin", 0.0))
        observations = int(v.get("observations", 0))
    except (TypeError, ValueError, OverflowError):
        return None
    if not math.isfinite(margin) or not 0 <= margin <= MAX_MARGIN or observations < 0:
        return None
    seen = [s for s in v.get("seen", []) if isinstance(s, str)] if isinstance(
        v.get("seen", []), list) else []
    return {"margin": margin, "observations": observations, "seen": seen[-SEEN_KEPT:]}


def decode_margins(data: Mapping[str, str] | None) -> dict[str, dict[str, Any]]:
    """ConfigMap data -> {"namespace|model|class": {"margin", "observations", "seen"}}.
    Entries that do not parse, are out of range, or use the old (model|class) key that every
    namespace shared, are skipped."""
    try:
        # NaN/Infinity parse as NaN: that entry is skipped below, the others are kept.
        raw = json.loads((data or {}).get(MARGINS_KEY, "{}"), parse_constant=lambda _: math.nan)
    except (ValueError, TypeError):
        return {}
    if not isinstance(raw, dict):
        return {}
    out = {}
    for k, v in raw.items():
        entry = _entry(v)
        if entry is not None and isinstance(k, str) and k.count("|") == 2:
            out[k] = entry
    return out


def encode_margins(margins: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    return {MARGINS_KEY: json.dumps(dict(sorted(margins.items())), sort_keys=True)}
