"""Ultralytics train arguments that move memory, and how a plan accounts for each.

- multi_scale (float, fraction of imgsz): each batch is resized to a random multiple of 32 up
  to imgsz x (1 + multi_scale) + 32 (DetectionTrainer.preprocess_batch); the plan is made
  at the largest size it can draw (`memory_imgsz`). Ultralytics still gets the user's imgsz.
- rect=True or mosaic=0: no mosaic, so a sample carries one image's labels (objects x1,
  not x4); rectangular batches are at most imgsz x imgsz, so the square profile bounds them.
- freeze: frozen layers have no gradients and no optimizer state; the plan is traced
  without freezing, an upper bound (said in the notes, not refused).
- cache=ram / True: images are cached in the host's memory, not the GPU's: no VRAM term;
  the pod's memory request must hold the decoded training set (said in the notes).
- compile: torch.compile (inductor) fuses kernels and changes which activations are saved;
  an eager trace cannot estimate it: refused, with the reason.
- mask_ratio, overlap_mask (segment): profiles are traced at Ultralytics' defaults (masks at
  imgsz/4, one map of object indices per image). A smaller ratio (masks up to 16x larger)
  or one mask per object is refused; a larger ratio is planned at 4 (an upper bound).
Pure: no torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

STRIDE = 32


@dataclass(frozen=True)
class MemoryEffects:
    multi_scale: float = 0.0
    mosaic: bool = True
    notes: tuple[str, ...] = field(default_factory=tuple)
    refusals: tuple[str, ...] = field(default_factory=tuple)


def memory_imgsz(imgsz: int, multi_scale: float) -> int:
    """The largest batch size multi_scale can draw (a multiple of 32)."""
    if multi_scale <= 0:
        return imgsz
    top = int(imgsz * (1.0 + multi_scale) + STRIDE)  # randrange's exclusive upper end
    return max(imgsz, (top - 1) // STRIDE * STRIDE)


def _truthy(value: Any) -> bool:
    return value not in (None, False, 0, 0.0, "", "False", "false", "0")


def memory_effects(args: Mapping[str, Any], field_prefix: str = "spec.args",
                   task: str | None = None) -> MemoryEffects:
    """What the arguments do to the plan (see the module docstring), with one-line notes
    and refusals naming the argument (`task`: the job's, None when unknown)."""
    notes: list[str] = []
    refusals: list[str] = []
    if task in (None, "segment"):
        _mask_effects(args, field_prefix, notes, refusals)
    ms = args.get("multi_scale", 0.0)
    if isinstance(ms, bool):
        ms = 0.5 if ms else 0.0  # older Ultralytics: a bool meaning +-50 %
    try:
        multi_scale = float(ms)
    except (TypeError, ValueError):
        refusals.append(f"{field_prefix}.multi_scale: expected a fraction like 0.5, got {ms!r}")
        multi_scale = 0.0
    if not math.isfinite(multi_scale) or not 0.0 <= multi_scale <= 1.0:
        refusals.append(f"{field_prefix}.multi_scale: must be in [0, 1], got {ms!r}")
        multi_scale = 0.0
    if multi_scale:
        notes.append(f"multi_scale {multi_scale:g}: planned at the largest drawn size")
    mosaic = not (_truthy(args.get("rect")) or args.get("mosaic") in (0, 0.0))
    if not mosaic:
        notes.append("no mosaic (rect or mosaic=0): one image's labels per sample")
    if args.get("freeze") not in (None, 0, [], ""):
        notes.append("freeze: planned with every layer trainable (an upper bound)")
    cache = args.get("cache")
    if cache is True or str(cache).lower() in ("ram", "true"):
        notes.append("cache=ram: host memory, not GPU memory; size the pod's memory for the "
                     "decoded training images")
    if _truthy(args.get("compile")):
        refusals.append(f"{field_prefix}.compile: torch.compile changes what the step keeps "
                        "in memory and cannot be estimated from an eager trace; remove it")
    return MemoryEffects(multi_scale, mosaic, tuple(notes), tuple(refusals))


TRACED_MASK_RATIO = 4  # Ultralytics' default (cfg/default.yaml), what profiles are traced at


def _mask_effects(args: Mapping[str, Any], field_prefix: str, notes: list[str],
                  refusals: list[str]) -> None:
    ratio = args.get("mask_ratio", TRACED_MASK_RATIO)
    if isinstance(ratio, bool) or not isinstance(ratio, int) or ratio < 1:
        refusals.append(f"{field_prefix}.mask_ratio: expected a whole number like 4, got "
                        f"{ratio!r}")
    elif ratio < TRACED_MASK_RATIO:
        refusals.append(f"{field_prefix}.mask_ratio: {ratio} makes the segment loss's masks "
                        f"{(TRACED_MASK_RATIO / ratio) ** 2:.3g}x larger than yolofit's profiles "
                        f"are traced at ({TRACED_MASK_RATIO}, Ultralytics' default); use "
                        f"{TRACED_MASK_RATIO} or more")
    elif ratio > TRACED_MASK_RATIO:
        notes.append(f"mask_ratio {ratio}: planned at {TRACED_MASK_RATIO} (an upper bound)")
    if "overlap_mask" in args and not _truthy(args["overlap_mask"]):
        refusals.append(f"{field_prefix}.overlap_mask: false gives every object a mask of its "
                        "own (a batch holds objects x masks, not images x masks), which "
                        "yolofit's profiles do not trace; remove it (Ultralytics' default is "
                        "true)")
