"""Field calibration and accuracy: the estimator against 24 published training runs.

    .venv/bin/python benchmarks/field_accuracy.py [--profiles FILE] [--fit] [--write]

Rows: yolofit/estimator/data/field (two CSVs + rows.json, see yolofit/estimator/field.py),
and the README's T4 table (batch 16, 640, nc 80, method unknown; reported, never fitted).
Profiles: the shipped ones (python -m yolofit.estimator.precompute --field traces them).

--fit fits the constants a CPU trace cannot see - the cuDNN workspace allowance and the
default allocator's overhead over the peak allocated bytes (one fraction per cache regime:
Ultralytics <= 8.3.85 empties the cache each epoch) - on the sparse *detection* rows of both
files (yolofit.estimator.calibration.fit_field) and writes them, with their provenance, into
gpu_classes.json. Segment, pose, moderate and dense rows are never fitted: they are the
held-out check. The hold-outs reported: fit on one file, test on the other; leave-one-out.
--write replaces this benchmark's section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from yolofit.estimator import field  # noqa: E402
from yolofit.estimator.calibration import (  # noqa: E402
    FieldFit,
    FieldPoint,
    field_prediction,
    fit_field,
    write_field_fit,
)
from yolofit.estimator.gpu import get_gpu_class  # noqa: E402
from yolofit.estimator.profile import Profile, ProfileStore, estimate  # noqa: E402

RESULTS = REPO / "benchmarks" / "RESULTS.md"
HEADING = "## Field accuracy and calibration (benchmarks/field_accuracy.py)"
PUBLISHED = {"yolov8n": 2.1, "yolov8s": 4.0, "yolov8m": 7.5, "yolov8l": 10.8, "yolov8x": 14.5}
GiB = 2**30


def _store(path: Path | None) -> ProfileStore:
    return ProfileStore(cache_dir=Path("/nonexistent"), shipped=path) if path else \
        ProfileStore(cache_dir=Path("/nonexistent"))


def fitting_rows(rows: list[field.FieldRow]) -> list[field.FieldRow]:
    """The rows the constants are fitted on: sparse detection runs."""
    return [r for r in rows if r.density == "sparse" and r.task == "detect"]


def points(rows: list[field.FieldRow], profiles: dict[str, Profile]) -> list[FieldPoint]:
    return [FieldPoint(field.traced_allocated(r, profiles[r.source]), r.measured_bytes,
                       r.epoch_emptied) for r in rows]


def errors(fit: FieldFit, pts: list[FieldPoint], cublas: int) -> list[float]:
    return [field_prediction(p, cublas, fit.cudnn_workspace_mib, fit.overhead,
                             fit.overhead_epoch_emptied) / p.measured - 1 for p in pts]


def holdouts(rows: list[field.FieldRow], profiles: dict[str, Profile], cublas: int
             ) -> dict[str, Any]:
    fit_rows = fitting_rows(rows)
    out: dict[str, Any] = {}
    for train_file in field.FILES:
        train = [r for r in fit_rows if r.file == train_file]
        test = [r for r in fit_rows if r.file != train_file]
        fit = fit_field(points(train, profiles), cublas)
        out[f"fit on {train_file}, test on the other"] = (
            fit, field.accuracy(errors(fit, points(test, profiles), cublas)))
    loo = []
    for i in range(len(fit_rows)):
        rest = fit_rows[:i] + fit_rows[i + 1:]
        fit = fit_field(points(rest, profiles), cublas)
        loo += errors(fit, points([fit_rows[i]], profiles), cublas)
    out["leave-one-out (sparse detection rows)"] = (None, field.accuracy(loo))
    return out


def table(rows: list[field.FieldRow], profiles: dict[str, Profile]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        p = profiles[r.source]
        predicted = field.predict(r, p, field.gpu_for(r))
        replay = field.traced_reserved_default(r, p)
        out.append({"row": r, "predicted": predicted, "error": predicted / r.measured_bytes - 1,
                    "replay_error": replay / r.measured_bytes - 1,
                    "allocated": field.traced_allocated(r, p)})
    return out


def implied_objects(r: field.FieldRow, p: Profile) -> int | None:
    """Objects per image at which the estimate reaches the measurement (dense rows)."""
    gpu = field.gpu_for(r)
    for o in range(r.objects, 20000):
        est = estimate(p, r.batch, o, gpu, mosaic=r.mosaic, expandable_segments=False,
                       epoch_emptied=r.epoch_emptied).peak_reserved_bytes
        if est >= r.measured_bytes:
            return o
    return None


def published(store: ProfileStore) -> list[dict[str, Any]]:
    from yolofit.estimator.models import resolve
    from yolofit.estimator.profile import ProfileKey

    gpu = get_gpu_class("t4")
    out = []
    for model, gb in PUBLISHED.items():
        ref = resolve(model)
        p = store.get(ProfileKey(ref.name, ref.config_hash, 640, "fp16", "AdamW", 80, False))
        if p is None:
            continue
        est = estimate(p, 16, 8, gpu, expandable_segments=False).peak_reserved_bytes
        out.append({"model": model, "measured": gb * 1e9, "predicted": est,
                    "error": est / (gb * 1e9) - 1})
    return out


def render(fit: FieldFit, in_sample: field.Accuracy, hold: dict[str, Any],
           rows: list[dict[str, Any]], implied: dict[str, int | None],
           pub: list[dict[str, Any]]) -> str:
    lines = [
        "Model (default allocator, stock Ultralytics): predicted reserved = traced peak "
        "allocated x (1 + overhead) + cuBLAS workspaces (2 x 32 MiB, derived) + cuDNN "
        "allowance; GPU_mem excludes the CUDA context, so the context is not fitted here.",
        "",
        "Fitted on the 16 sparse detection rows of both files (grid over the plausible box, "
        "under-predictions weighted x3):", "",
        "| constant | value | range searched | meaning |", "|---|---|---|---|",
        f"| cuDNN workspace allowance | {fit.cudnn_workspace_mib:.0f} MiB | 0-1024 MiB | "
        "largest conv workspace live at the peak |",
        f"| default-allocator overhead (cache kept, Ultralytics >= 8.3.86) | "
        f"{fit.overhead:.4f} | 0-0.25 | reserved above the peak allocated bytes |",
        f"| default-allocator overhead (cache emptied each epoch, <= 8.3.85) | "
        f"{fit.overhead_epoch_emptied:.4f} | 0-0.25 | same, pools reset every epoch |",
        "", "| check | n | median abs | p90 abs | bias (median signed) | under by >5 % | "
        "worst under | worst over |", "|---|---|---|---|---|---|---|---|",
        _acc_row("in-sample (fitting rows)", in_sample)]
    for name, (_, acc) in hold.items():
        lines.append(_acc_row(name, acc))
    groups = {
        "sparse detection (fitted)": lambda r: r.density == "sparse" and r.task == "detect",
        "segment + pose (held out)": lambda r: r.task != "detect",
        "moderate (held out)": lambda r: r.density == "moderate",
        "dense, mean density (held out)": lambda r: r.density == "dense" and r.task == "detect",
    }
    lines += ["", "By group (the shipped constants):", "",
              "| group | n | median abs | p90 abs | bias | under by >5 % | worst under |",
              "|---|---|---|---|---|---|---|"]
    for name, pred in groups.items():
        acc = field.accuracy([t["error"] for t in rows if pred(t["row"])])
        lines.append(f"| {name} | {acc.n} | {acc.median_abs:.1%} | {acc.p90_abs:.1%} | "
                     f"{acc.bias:+.1%} | {acc.under_5pct} | {acc.max_under:+.1%} |")
    lines += ["", "Every row (objects = stated mean per image, x4 with mosaic; replay = the "
              "allocator model's own default-mode reserved, for comparison):", "",
              "| row | Ultralytics | model | task | imgsz | batch | nc | obj/img | density | "
              "measured GiB | predicted GiB | error | replay error |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for t in rows:
        r = t["row"]
        lines.append(f"| {r.source} | {r.version} | {r.model} | {r.task} | {r.imgsz} | "
                     f"{r.batch} | {r.nc} | {r.objects} | {r.density} | "
                     f"{r.measured_bytes / GiB:.2f} | {t['predicted'] / GiB:.2f} | "
                     f"{t['error']:+.1%} | {t['replay_error']:+.1%} |")
    lines += ["", "Dense rows: the objects per image at which the estimate reaches the "
              "measurement (the densest images are not published; the stated means are):", "",
              "| row | model | stated mean | implied densest image |", "|---|---|---|---|"]
    for t in rows:
        r = t["row"]
        if r.density == "dense":
            lines.append(f"| {r.source} | {r.model} | {r.objects} | "
                         f"{implied.get(r.source) or 'above 20000'} |")
    if pub:
        lines += ["", "The README's T4 table (batch 16, imgsz 640, nc 80, 8 objects/img "
                  "assumed, cache kept; method unknown, never fitted):", "",
                  "| model | published GB | predicted GB | error |", "|---|---|---|---|"]
        lines += [f"| {p['model']} | {p['measured'] / 1e9:.1f} | {p['predicted'] / 1e9:.2f} | "
                  f"{p['error']:+.1%} |" for p in pub]
    lines += ["", NOTES]
    return "\n".join(lines)


NOTES = """Reading (hand-written; --write regenerates the tables above with this text):
- Acceptance met on sparse detection rows: median |error| 2.9 % in-sample, 3.8 % leave-one-out
  (p90 9.7 % / 12.0 %), worst under -6.6 % in-sample (-12.0 % left out: the rect=True A100 row,
  whose measurement exceeds the square-batch estimate that should bound it).
- The file-wise hold-out fails, and says why: the two files differ in software, not in models.
  File 1 is Ultralytics 8.0-8.3.75 (cache emptied every epoch), file 2 mostly 8.4 (cache kept):
  fitted on one, the other is off by 8-15 % in opposite directions. Hence one overhead per cache
  regime (README of the field data: the behaviour changed at 8.3.85); with a single regime the
  file-1 rows need an overhead below the allocator model's own replay, which is not physical.
- The allocator model's default-mode replay ("replay error") is -11.6 % to +9.0 % on the sparse
  rows: it does not separate the regimes either; the estimate for the default allocator uses
  the traced allocated peak plus the fitted overhead instead. The cache-kept overhead sits at its
  range's upper edge (0.25): the 8.4 runs hold a quarter more than the traced peak allocated.
- NOT met: segment rows over-predict by 36-42 % (the traced mask loss: ~10 foreground anchors per
  object, each with fp32 160x160 maps saved for backward; the measured runs hold far less). Dense
  rows are under-predicted with the stated means (the densest images are not published); the
  density at which the estimate meets them is in the last table (WIDER FACE ~1650-1950 faces,
  VisDrone ~440-920 objects in the densest image). `yolofit data stats` (not built yet) is what
  would give the real maximum.
- Needs a GPU: the expandable-segments fragmentation the yolofit trainer runs with (no field run
  used it; still the uncalibrated 3 %), the CUDA context per class (GPU_mem excludes it), where
  the segment trace and CUDA part, and benchmarks/calibrate_gpu.py overriding these field fits."""


def _acc_row(name: str, a: field.Accuracy) -> str:
    return (f"| {name} | {a.n} | {a.median_abs:.1%} | {a.p90_abs:.1%} | {a.bias:+.1%} | "
            f"{a.under_5pct} | {a.max_under:+.1%} | {a.max_over:+.1%} |")


def write(text: str, command: str) -> None:
    section = (f"{HEADING}\n\nCommand: `{command}`\nDate: "
               f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC.\n\n{text}\n")
    current = RESULTS.read_text()
    if HEADING in current:
        head, _, rest = current.partition(HEADING)
        nxt = rest.find("\n## ")
        current = head + section + (rest[nxt + 1:] if nxt >= 0 else "")
    else:
        current = current.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(current)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profiles", type=Path, help="a profiles file instead of the shipped one")
    ap.add_argument("--fit", action="store_true", help="fit and write gpu_classes.json")
    ap.add_argument("--write", action="store_true", help="write benchmarks/RESULTS.md")
    args = ap.parse_args()
    store = _store(args.profiles)
    rows = field.load_rows()
    profiles = field.profiles_for(rows, store)
    cublas = get_gpu_class("t4").cublas_workspace_bytes
    fit_rows = fitting_rows(rows)
    fit = fit_field(points(fit_rows, profiles), cublas)
    in_sample = field.accuracy(errors(fit, points(fit_rows, profiles), cublas))
    hold = holdouts(rows, profiles, cublas)
    if args.fit:
        provenance = {
            "source": "yolofit/estimator/data/field (both files), sparse detection rows; "
                      "benchmarks/field_accuracy.py --fit",
            "date": f"{dt.datetime.now(dt.UTC):%Y-%m-%d}",
            "in_sample": in_sample.to_dict(),
            "holdout": {k: v[1].to_dict() for k, v in hold.items()},
        }
        write_field_fit(fit, provenance)
        import yolofit.estimator.gpu as gpu_mod

        gpu_mod._data.cache_clear()
        gpu_mod.known_classes.cache_clear()
    else:
        shipped = get_gpu_class("t4")
        fit = replace(fit, cudnn_workspace_mib=shipped.cudnn_workspace_bytes / 2**20,
                      overhead=shipped.fragmentation_default,
                      overhead_epoch_emptied=shipped.fragmentation_default_epoch_emptied)
        in_sample = field.accuracy(errors(fit, points(fit_rows, profiles), cublas))
    rows_out = table(rows, profiles)
    implied = {t["row"].source: implied_objects(t["row"], profiles[t["row"].source])
               for t in rows_out if t["row"].density == "dense"}
    text = render(fit, in_sample, hold, rows_out, implied, published(store))
    print(text)
    if args.write:
        write(text, "YOLO_OFFLINE=1 .venv/bin/python benchmarks/field_accuracy.py "
              + " ".join(sys.argv[1:]))
    return 0 if not math.isnan(in_sample.median_abs) else 1


if __name__ == "__main__":
    sys.exit(main())
