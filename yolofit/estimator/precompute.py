"""Precompute the shipped profiles (`yolofit/estimator/data/profiles.json`).

    python -m yolofit.estimator.precompute --models yolov8n yolov8s --imgsz 320 640 \
        --amp fp16 off --optimizer AdamW --checkpointing off on [--out PATH] [--budget 3600]

Resumable: profiles already in the output file are kept and not traced again, and the file
is rewritten after every new profile, so an interrupted run loses at most one trace.
nc is 80 for shipped keys, and 1 for the AdamW ones (`--nc 1`; classifiers also 1000):
a class count between them is interpolated from the two (nc_interpolation.py), never
traced. nc changes the head's class branch and the loss's batch x anchors x nc tensors:
measured for yolov8n@640 fp16, per-sample bytes are 104 MB at nc=1, 120 MB at nc=80 and
292 MB at nc=1000 (~0.2 MB per class per sample at 640), so it is not negligible; a
detection nc above 80 is a key of its own, traced once on demand.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from yolofit.estimator.profile import (
    SHIPPED_PROFILES,
    Profile,
    ProfileKey,
    _read_profiles,
    write_profiles,
)

SHIPPED_MODELS: tuple[str, ...] = tuple(
    f"{family}{scale}" for family in ("yolov8", "yolo11", "yolo26") for scale in "nsmlx")
SHIPPED_IMGSZ: tuple[int, ...] = (320, 640, 1280)
# Shipped beyond the full detection grid: one family per other task (yolo11 n/s: seg, pose,
# obb at 640; cls at 224 and 640) and the configurations of the field rows (`--field`).
TASK_MODELS: tuple[str, ...] = tuple(f"yolo11{s}-{t}" for t in ("seg", "pose", "obb", "cls")
                                     for s in "ns")


def field_models() -> tuple[str, ...]:
    from yolofit.estimator import field

    return tuple(sorted({k.model for k in field.keys(field.load_rows())}))


def keys_for(models: Iterable[str], imgsz: Iterable[int], amp: Iterable[str] = ("fp16", "off"),
             optimizers: Iterable[str] = ("AdamW",), checkpointing: Iterable[bool] = (False,),
             nc: int = 80) -> list[ProfileKey]:
    """The cartesian product of the options, as ProfileKeys (models resolved once each)."""
    from yolofit.estimator.models import resolve

    refs = {m: resolve(m) for m in models}
    return [ProfileKey(refs[m].name, refs[m].config_hash, s, a, o, nc, c)
            for m, s, a, o, c in itertools.product(refs, imgsz, amp, optimizers, checkpointing)]


def precompute(keys: Sequence[ProfileKey], out_path: Path | str = SHIPPED_PROFILES,
               progress: Callable[[str], None] | None = None,
               budget_seconds: float | None = None) -> list[Profile]:
    """Trace every key not yet in `out_path` and write all profiles there. Keys are traced
    in the given order; with a budget, tracing stops once it is spent (the file stays
    valid). Returns the profiles in the file afterwards."""
    from yolofit.estimator.build import build_profile
    from yolofit.estimator.models import build_model, resolve

    out = Path(out_path)
    have = {p.key.id: p for p in _read_profiles(out)} if out.is_file() else {}
    todo = [k for k in keys if k.id not in have]
    start = time.perf_counter()
    models: dict[tuple[str, int], object] = {}
    for i, key in enumerate(todo):
        spent = time.perf_counter() - start
        if budget_seconds is not None and spent > budget_seconds:
            if progress:
                progress(f"budget spent after {i} of {len(todo)} profiles")
            break
        if progress:
            progress(f"[{i + 1}/{len(todo)}] {key.id} ({spent:.0f}s so far)")
        cache_key = (key.model, key.nc)
        if cache_key not in models:
            models.clear()  # keep one model in memory
            models[cache_key] = build_model(resolve(key.model), nc=key.nc)
        have[key.id] = build_profile(key, model=models[cache_key])
        out.parent.mkdir(parents=True, exist_ok=True)
        write_profiles(out, list(have.values()))
    return list(have.values())


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    ap = argparse.ArgumentParser(prog="python -m yolofit.estimator.precompute",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=list(SHIPPED_MODELS))
    ap.add_argument("--imgsz", nargs="+", type=int, default=list(SHIPPED_IMGSZ))
    ap.add_argument("--amp", nargs="+", default=["fp16", "off"], choices=["off", "fp16", "bf16"])
    ap.add_argument("--optimizer", nargs="+", default=["AdamW"],
                    choices=["SGD", "AdamW", "MuSGD"])
    ap.add_argument("--checkpointing", nargs="+", default=["off"], choices=["off", "on"])
    ap.add_argument("--nc", type=int, default=80)
    ap.add_argument("--out", type=Path, default=SHIPPED_PROFILES)
    ap.add_argument("--budget", type=float, default=None, help="stop after this many seconds")
    ap.add_argument("--field", action="store_true",
                    help="trace the profiles the field rows need (data/field), nothing else")
    args = ap.parse_args(argv)
    if args.field:
        from yolofit.estimator import field

        keys = field.keys(field.load_rows())
    else:
        keys = keys_for(args.models, args.imgsz, args.amp, args.optimizer,
                        [c == "on" for c in args.checkpointing], args.nc)
    profiles = precompute(keys, args.out, lambda m: print(m, file=sys.stderr, flush=True),
                          args.budget)
    print(f"{len(profiles)} profiles in {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
