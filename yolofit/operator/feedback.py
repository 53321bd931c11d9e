"""What the trainer reports back, and what the operator learns from it. Pure.

- `parse_summary`: a rank's termination message (JSON, ARCHITECTURE.md) -> RankMeasurement.
- `measured`: per-rank peaks, their max and the relative error vs the plan's estimate.
- `next_plan`: the OOM re-plan: smaller batch per GPU chosen as the planner chooses it
  (effective batch within the planner's tolerance of nbs, accumulation by Ultralytics' rule),
  checkpointing when batch 1 was already too big.
- `update_margin` and the ConfigMap codec: the learned margin per (model, class),
  persisted in the cluster so it survives operator restarts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from yolofit.estimator import planner
from yolofit.operator.api import Measured, Plan, RankMeasurement
from yolofit.units import format_bytes

OOM_EXIT_CODE = 88
BAD_INPUT_EXIT_CODE = 2
MARGIN_STEP = 0.10
MAX_MARGIN = 1.0
MARGINS_KEY = "margins.json"


def parse_summary(message: str | None, rank: int, pod: str = "") -> RankMeasurement | None:
    """The trainer's JSON summary, or None when the message is not one (e.g. a log tail)."""
    if not message:
        return None
    try:
        data = json.loads(message.strip())
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    kind = data.get("memory_kind", "cuda")
    try:
        return RankMeasurement(
            rank=int(data.get("rank", rank)), pod=pod,
            memory_kind=kind if kind in ("cuda", "host-rss") else "cuda",
            peak_allocated_bytes=int(data.get("peak_allocated_bytes") or 0),
            peak_reserved_bytes=int(data.get("peak_reserved_bytes") or 0),
            device_total_bytes=int(data.get("device_total_bytes") or 0),
            steps=int(data.get("steps") or 0),
            images_per_second=float(data.get("images_per_second") or 0.0),
            exit_reason=str(data.get("exit_reason", "")),
            message=str(data.get("message", ""))[:1024])
    except (TypeError, ValueError):
        return None


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
    """After an OOM: at least one step more, and at least what the measured peak implies."""
    implied = peak_bytes / estimate_bytes - 1.0 + MARGIN_STEP / 2 if estimate_bytes > 0 else 0
    return round(min(max(margin + MARGIN_STEP, implied), MAX_MARGIN), 4)


def margin_key(model: str, gpu_class: str) -> str:
    return f"{model}|{gpu_class}"


def decode_margins(data: Mapping[str, str] | None) -> dict[str, dict[str, Any]]:
    """ConfigMap data -> {"model|class": {"margin": float, "observations": int}}."""
    try:
        raw = json.loads((data or {}).get(MARGINS_KEY, "{}"))
    except ValueError:
        return {}
    if not isinstance(raw, dict):
        return {}
    out: dict[str, dict[str, Any]] = {}
    for k, v in raw.items():
        try:  # a broken entry is skipped, never allowed to stop admission
            margin, obs = float(v["margin"]), int(v.get("observations") or 0)
        except (AttributeError, KeyError, TypeError, ValueError, OverflowError):
            continue
        if 0.0 <= margin <= MAX_MARGIN:
            out[k] = {"margin": margin, "observations": obs}
    return out


def encode_margins(margins: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    return {MARGINS_KEY: json.dumps(dict(sorted(margins.items())), sort_keys=True)}
