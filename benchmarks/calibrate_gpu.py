"""GPU calibration: real Ultralytics training steps on CUDA vs the estimator's predictions.

    .venv/bin/python benchmarks/calibrate_gpu.py [--budget 600] [--out benchmarks/calibration]
        [--families yolov8 yolo11 yolo26] [--scales n s m l x] [--imgsz 320 640 1280]
        [--batch 1 8 32] [--amp on off] [--labels sparse dense] [--default-allocator]

For each matrix entry (family x scale x imgsz x batch x AMP x label density) it runs the
same step the tracer models, on the GPU: Ultralytics DetectionModel, ModelEMA, the
optimizer `BaseTrainer.build_optimizer` makes (fused AdamW on CUDA), GradScaler, autocast,
three iterations (optimizer step, gradient accumulation, step) and one validation batch
at 2x the batch. It records
`torch.cuda.max_memory_allocated()`, `max_memory_reserved()` and the device memory in use
from `torch.cuda.mem_get_info()` (context included), writes `<out>/<class>.csv` with the
estimates (`estimate()` on the profile for the entry: shipped, cached, or traced on the
spot on CPU) and relative errors, in the columns `yolofit.estimator.calibration` reads, and
fits the class's constants with it (context, workspace allowance, fragmentation) into
`<out>/<class>.json`; --write-constants merges them into data/gpu_classes.json.

Entries are run cheapest first within `--budget` seconds (an entry predicted not to finish
in the remaining time is skipped and listed as skipped). CUDA out of memory is a data
point: the row says "oom" and the device total at that moment.

The allocator mode follows the yolofit trainer (expandable_segments:True) unless
--default-allocator; it must be set before CUDA initialises, so this script sets it first.
Without CUDA it refuses with exit code 2.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import gc
import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from yolofit.estimator.calibration import (  # noqa: E402
    COLUMNS,
    fit_classes,
    read_rows,
    write_calibration,
)

SCALE_GFLOPS_640 = {"n": 8.7, "s": 28.6, "m": 78.9, "l": 165.2, "x": 257.8}  # yolov8 at 640
DENSE_OBJECTS, SPARSE_OBJECTS = 100, 4  # labels per image (x4 per mosaic sample)
MiB = 2**20


@dataclass(frozen=True)
class Entry:
    model: str
    imgsz: int
    batch: int
    amp: str  # fp16 | off
    labels: str  # sparse | dense

    @property
    def objects(self) -> int:
        """Labels per training sample (what the trace is keyed by: mosaic x4 of an image's)."""
        return 4 * (DENSE_OBJECTS if self.labels == "dense" else SPARSE_OBJECTS)

    @property
    def scale(self) -> str:
        return self.model[-1]


def build_matrix(families: Iterable[str] = ("yolov8", "yolo11", "yolo26"),
                 scales: Iterable[str] = "nsmlx", imgsz: Iterable[int] = (320, 640, 1280),
                 batches: Iterable[int] = (1, 8, 32), amp: Iterable[str] = ("fp16", "off"),
                 labels: Iterable[str] = ("sparse", "dense")) -> list[Entry]:
    return [Entry(f"{f}{s}", i, b, a, lab)
            for f, s, i, b, a, lab in itertools.product(families, scales, imgsz, batches, amp,
                                                        labels)]


def predicted_seconds(e: Entry, gflops_per_s: float = 20_000.0, overhead_s: float = 2.0
                      ) -> float:
    """Rough wall time of one entry: model build + 3 iterations (3x forward FLOPs each,
    fp32 at a quarter of the fp16 rate) + validation (2x batch, forward only)."""
    gflops = SCALE_GFLOPS_640[e.scale] * (e.imgsz / 640) ** 2
    work = gflops * e.batch * (3 * 3 + 2)
    rate = gflops_per_s if e.amp == "fp16" else gflops_per_s / 4
    return overhead_s + work / rate


def select_within_budget(entries: Sequence[Entry], budget_s: float,
                         cost: Callable[[Entry], float] = predicted_seconds
                         ) -> tuple[list[Entry], list[Entry]]:
    """Cheapest first until the budget is spent; returns (run, skipped) in run order."""
    ordered = sorted(entries, key=cost)
    run, skipped, spent = [], [], 0.0
    for e in ordered:
        c = cost(e)
        if spent + c <= budget_s:
            run.append(e)
            spent += c
        else:
            skipped.append(e)
    return run, skipped


# The columns yolofit.estimator.calibration reads (it fits the class constants), then ours.
EXTRA_FIELDS = ("labels", "status", "device_total_bytes", "oom_reserved_bytes",
                "err_allocated", "err_reserved", "err_device", "seconds")
CSV_FIELDS = [*COLUMNS, *EXTRA_FIELDS]


def rel_error(estimate: float | None, measured: float | None) -> float | None:
    """(measured - estimate) / estimate, the sign convention of yolofit_estimate_error_ratio:
    positive means the estimate was too low."""
    if not estimate or measured is None:
        return None
    return (measured - estimate) / estimate


def calibration_row(e: Entry, gpu_class: str, measured: dict[str, Any],
                    est: dict[str, Any]) -> dict[str, Any]:
    """One CSV row. Only completed runs carry `measured_*` (what the fit reads); an OOM
    keeps its peak in `oom_reserved_bytes` as a data point the fit must not average in."""
    ok = measured.get("status") == "ok"
    row: dict[str, Any] = {
        "gpu_class": gpu_class, "model": e.model, "imgsz": e.imgsz, "batch": e.batch,
        "amp": e.amp, "objects": e.objects, "checkpointing": False, "world_size": 1,
        "labels": e.labels, "status": measured.get("status"),
        "device_total_bytes": measured.get("device_total"), "seconds": measured.get("seconds"),
        **{k: est.get(k) for k in ("traced_reserved_bytes", "predicted_reserved_bytes",
                                   "predicted_allocated_bytes", "predicted_device_bytes",
                                   "profile_id")},
    }
    if ok:
        row.update(measured_reserved_bytes=measured["measured_reserved"],
                   measured_allocated_bytes=measured["measured_allocated"],
                   measured_device_bytes=measured["device_used"])
        row["err_reserved"] = rel_error(est.get("predicted_reserved_bytes"),
                                        measured["measured_reserved"])
        row["err_allocated"] = rel_error(est.get("predicted_allocated_bytes"),
                                         measured["measured_allocated"])
        row["err_device"] = rel_error(est.get("predicted_device_bytes"),
                                      measured["device_used"])
    elif measured.get("status") == "oom":
        row["oom_reserved_bytes"] = measured.get("measured_reserved")
    return row


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_FIELDS})


def fit(path: Path) -> dict[str, Any]:
    """Fit the class constants from the CSV with yolofit.estimator.calibration."""
    rows = read_rows(path)
    if not rows:
        return {"runs": 0}
    fitted = fit_classes(rows)
    return {name: dataclasses.asdict(f) for name, f in fitted.items()}


# --- the CUDA side -------------------------------------------------------------------------

def _estimate(e: Entry, gpu: Any) -> dict[str, Any]:
    from yolofit.estimator.build import build_profile, key_for
    from yolofit.estimator.profile import ProfileStore, estimate

    key = key_for(e.model, e.imgsz, e.amp, "AdamW")
    store = ProfileStore()
    profile = store.get(key)
    if profile is None:
        profile = build_profile(key)
        store.put(profile)
    est = estimate(profile, e.batch, e.objects // 4, gpu)  # estimate() applies mosaic x4
    return {"predicted_allocated_bytes": est.peak_allocated_bytes,
            "predicted_reserved_bytes": est.peak_reserved_bytes,
            "traced_reserved_bytes": profile.reserved.at(e.batch, e.objects),
            "predicted_device_bytes": est.device_total_bytes, "profile_id": key.id}


def run_entry(e: Entry) -> dict[str, Any]:
    """One real training step on CUDA; returns the measured fields (status ok/oom/error)."""
    import torch

    from yolofit.estimator import tracer as T
    from yolofit.estimator.models import build_model

    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    out: dict[str, Any] = {"status": "ok"}
    t0 = time.perf_counter()
    try:
        dev = torch.device("cuda")
        model = build_model(e.model + ".yaml").to(dev)
        T.prepare_model(model, T.head_nc(model))
        from ultralytics.utils.torch_utils import ModelEMA

        ema = ModelEMA(model)
        opt = T.build_optimizer(model, "AdamW")  # Ultralytics' own; fused on CUDA
        scaler = torch.amp.GradScaler("cuda", enabled=e.amp == "fp16")
        host = T.synthetic_batch(e.batch, e.imgsz, e.objects)
        for i in range(3):  # step, accumulate, step: as the tracer does
            batch = {k: v.to(dev, non_blocking=True) for k, v in host.items()}
            batch["img"] = batch["img"].float() / 255
            with torch.autocast("cuda", enabled=e.amp == "fp16"):
                loss, _items = model.loss(batch)
                total = loss.sum()
            scaler.scale(total).backward()
            if i == 1:
                del batch, loss, total
                continue
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=10.0)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad()
            ema.update(model)
            del batch, loss, total
        val = T.synthetic_batch(2 * e.batch, e.imgsz, e.objects, seed=1)
        with torch.inference_mode():
            batch = {k: v.to(dev) for k, v in val.items()}
            batch["img"] = (batch["img"].half() if e.amp == "fp16" else batch["img"].float()) / 255
            ema.ema.args = model.args
            with torch.autocast("cuda", enabled=e.amp == "fp16"):
                preds = ema.ema(batch["img"])
                ema.ema.loss(batch, preds)
        torch.cuda.synchronize()
    except torch.cuda.OutOfMemoryError:
        out["status"] = "oom"
    except RuntimeError as exc:
        out["status"] = "oom" if "out of memory" in str(exc).lower() else f"error: {exc}"[:200]
    free, total = torch.cuda.mem_get_info()
    out.update(measured_allocated=torch.cuda.max_memory_allocated(),
               measured_reserved=torch.cuda.max_memory_reserved(),
               device_used=total - free, device_total=total,
               seconds=round(time.perf_counter() - t0, 2))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=float, default=600.0, help="seconds for GPU runs")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "calibration")
    ap.add_argument("--families", nargs="+", default=["yolov8", "yolo11", "yolo26"])
    ap.add_argument("--scales", nargs="+", default=list("nsmlx"))
    ap.add_argument("--imgsz", nargs="+", type=int, default=[320, 640, 1280])
    ap.add_argument("--batch", nargs="+", type=int, default=[1, 8, 32])
    ap.add_argument("--amp", nargs="+", default=["on", "off"], choices=["on", "off"])
    ap.add_argument("--labels", nargs="+", default=["sparse", "dense"],
                    choices=["sparse", "dense"])
    ap.add_argument("--default-allocator", action="store_true")
    ap.add_argument("--write-constants", action="store_true",
                    help="merge the fitted constants into yolofit/estimator/data/gpu_classes.json")
    args = ap.parse_args(argv)
    if not args.default_allocator:
        os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    os.environ.setdefault("YOLO_OFFLINE", "1")
    import torch

    if not torch.cuda.is_available():
        print("calibrate_gpu: needs a CUDA GPU, and torch.cuda.is_available() is False here; "
              "run it on a GPU node (the matrix/budget/CSV/fit logic is unit-tested without one)",
              file=sys.stderr)
        return 2
    amps = ["fp16" if a == "on" else "off" for a in args.amp]
    matrix = build_matrix(args.families, args.scales, args.imgsz, args.batch, amps, args.labels)
    run, skipped = select_within_budget(matrix, args.budget)
    _, total = torch.cuda.mem_get_info()
    gpu = device_class(total)
    csv_path = args.out / f"{gpu.name}.csv"
    rows = []
    deadline = time.perf_counter() + args.budget
    for i, e in enumerate(run):
        if time.perf_counter() + predicted_seconds(e) > deadline:
            skipped.append(e)
            continue
        print(f"[{i + 1}/{len(run)}] {e}", file=sys.stderr, flush=True)
        rows.append(calibration_row(e, gpu.name, run_entry(e), _estimate(e, gpu)))
        write_csv(csv_path, rows)
    rows += [calibration_row(e, gpu.name, {"status": "skipped (budget)"}, {})
             for e in skipped]
    write_csv(csv_path, rows)
    fitted = fit(csv_path)
    (args.out / f"{gpu.name}.json").write_text(json.dumps(
        {"class": gpu.name, "device_total": total,
         "allocator": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "default"), "fit": fitted},
        indent=1))
    if args.write_constants and read_rows(csv_path):
        write_calibration(fit_classes(read_rows(csv_path)),
                          source=f"benchmarks/calibrate_gpu.py {time.strftime('%Y-%m-%d')}")
    print(json.dumps(fitted, indent=1))
    return 0


def device_class(total: int) -> Any:
    """The known class of this GPU (by its product name), else one from its memory."""
    import torch

    from yolofit.estimator.gpu import from_memory, get_gpu_class

    product = torch.cuda.get_device_name().replace(" ", "-")
    try:
        return get_gpu_class(product)
    except KeyError:
        return from_memory(total, name=product.lower())


if __name__ == "__main__":
    sys.exit(main())
