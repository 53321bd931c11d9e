"""Field calibration and accuracy: the estimator against 24 published training runs.

    .venv/bin/python benchmarks/field_accuracy.py [--profiles FILE] [--fit] [--write]

Rows: yolofit/estimator/data/field (two CSVs + rows.json, see yolofit/estimator/field.py),
and the README's T4 table (batch 16, 640, nc 80, method unknown; reported, never fitted).
Profiles: the shipped ones (python -m yolofit.estimator.precompute --field traces them).

--fit fits the constants a CPU trace cannot see - the cuDNN workspace allowance and the
default allocator's overhead over the peak allocated bytes (one fraction per cache regime:
Ultralytics <= 8.3.86 empties the cache each epoch, later versions when the predicted reserved
bytes exceed half the card; field.epoch_emptied) - on the sparse *detection* rows of both
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
                       r.empty_above_bytes) for r in rows]


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
                    "cache": field.cache_regime(r, p, field.gpu_for(r)),
                    "replay_error": replay / r.measured_bytes - 1,
                    "allocated": field.traced_allocated(r, p)})
    return out


def implied_objects(r: field.FieldRow, p: Profile) -> int | None:
    """Objects per image at which the estimate reaches the measurement (dense rows)."""
    gpu = field.gpu_for(r)
    for o in range(r.objects, 20000):
        if field.predict(r, p, gpu, densest=o) >= r.measured_bytes:
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
        est = estimate(p, 16, 8, gpu, expandable_segments=False,
                       mean_objects=8).peak_reserved_bytes
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
        "| default-allocator overhead (cache kept: Ultralytics > 8.3.86, predicted reserved "
        f"within half the card) | "
        f"{fit.overhead:.4f} | 0-0.25 | reserved above the peak allocated bytes |",
        "| default-allocator overhead (cache emptied each epoch: <= 8.3.86, or predicted "
        f"above half the card) | "
        f"{fit.overhead_epoch_emptied:.4f} | 0-0.25 | same, pools reset every epoch |",
        "", "| check | n | median abs | p90 abs | bias (median signed) | under by >5 % | "
        "worst under | worst over |", "|---|---|---|---|---|---|---|---|",
        _acc_row("in-sample (fitting rows)", in_sample)]
    for name, (_, acc) in hold.items():
        lines.append(_acc_row(name, acc))
    groups = {
        "sparse detection (fitted)": lambda r: r.density == "sparse" and r.task == "detect",
        "segment (held out)": lambda r: r.task == "segment",
        "pose, dense (held out; densest image unknown)": lambda r: r.task == "pose",
        "moderate (held out)": lambda r: r.density == "moderate",
        "dense, mean density (held out)": lambda r: r.density == "dense" and r.task == "detect",
    }
    lines += ["", "By group (the shipped constants):", "",
              "| group | n | median abs | p90 abs | bias | under by >5 % | worst under | "
              "worst over |", "|---|---|---|---|---|---|---|---|"]
    for name, pred in groups.items():
        acc = field.accuracy([t["error"] for t in rows if pred(t["row"])])
        lines.append(f"| {name} | {acc.n} | {acc.median_abs:.1%} | {acc.p90_abs:.1%} | "
                     f"{acc.bias:+.1%} | {acc.under_5pct} | {acc.max_under:+.1%} | "
                     f"{acc.max_over:+.1%} |")
    lines += ["", "Every row (obj/img = the stated mean per image: the typical image, x5/3 per "
              "mosaic sample, and - the densest image not being published - the densest too, "
              "x4 per mosaic sample; replay = the allocator model's own default-mode reserved, "
              "for comparison; cache = the epoch-end cache regime the estimate applies: "
              "emptied always up to 8.3.86, later when the predicted reserved bytes exceed "
              "half the card):", "",
              "| row | Ultralytics | model | task | imgsz | batch | nc | obj/img | density | "
              "cache | measured GiB | share of card | predicted GiB | error | replay error |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for t in rows:
        r = t["row"]
        lines.append(f"| {r.source} | {r.version} | {r.model} | {r.task} | {r.imgsz} | "
                     f"{r.batch} | {r.nc} | {r.objects} | {r.density} | {t['cache']} | "
                     f"{r.measured_bytes / GiB:.2f} | "
                     f"{r.measured_bytes / r.gpu_total_bytes:.0%} | {t['predicted'] / GiB:.2f} | "
                     f"{t['error']:+.1%} | {t['replay_error']:+.1%} |")
    lines += ["", "Dense rows: the densest image's objects at which the estimate reaches the "
              "measurement, the typical image held at the stated mean (the densest images are "
              "not published; the stated means are):", "",
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
- Label counts (2026-12-01, issue 11 item 3): the loss has two kinds of label-dependent
  tensors and the estimate now counts each at its own density. The TaskAlignedAssigner pads
  every sample's targets to the batch's densest sample (b x max labels x anchors:
  `per_object`, at the densest image x4 per mosaic sample); the segment mask loss keeps, per
  foreground anchor, two fp32 160x160 maps for backward (BCE's input and target; Ultralytics
  8.4 loss.py single_mask_loss), summed over the real labels of the batch (`per_mean_object`,
  at the typical sample). Ultralytics' own pipeline puts 1.41-1.67x an image's mean labels
  into a mosaic sample (benchmarks/mosaic_labels.py, table below), not 4x, which is the
  maximum. Profiles are traced at a fifth point (batch 4, 16 labels) that gives the labels'
  slope; the dense pair's excess goes to the densest count instead of every sample's term
  (it put +129 MB on each yolo26m-seg sample), and per_object is never below the slope of
  the assigner's own phase peak. Detection profiles keep their four points (their labels
  cost ~130 KB each, all counted at the densest): the sparse detection rows, the fit and the
  hold-outs are unchanged to the byte, and the constants re-fitted on them are the same.
  Labels per mosaic sample, `YOLO_OFFLINE=1 .venv/bin/python benchmarks/mosaic_labels.py`
  (Ultralytics 8.4.190 YOLODataset, augment=True, default hyperparameters; generated images,
  half 640x640, half 640x480; 2000 samples each; 2026-12-01, 2 shared cores):

  | labels per image | box side (fraction) | mean per sample | x mean | p99 | max | x max |
  |---|---|---|---|---|---|---|
  | 4 | 0.01-0.05 | 5.68 | x1.42 | 15 | 16 | x4.00 |
  | 16 | 0.01-0.05 | 22.59 | x1.41 | 56 | 62 | x3.88 |
  | 4 | 0.05-0.3 | 6.69 | x1.67 | 16 | 16 | x4.00 |
  | 16 | 0.05-0.3 | 26.51 | x1.66 | 62 | 64 | x4.00 |

  The estimate takes the larger, 5/3 (profile.MOSAIC_MEAN_FACTOR), rounded up per sample.
- Sparse detection rows: median |error| 2.9 % in-sample, 3.8 % leave-one-out (p90 9.7 % /
  12.0 %), bias +2.5 %, worst under -6.6 % in-sample (-12.0 % left out: the rect=True A100 row,
  whose measurement exceeds the square-batch estimate that should bound it).
- Epoch-end cache rule (2026-12-01): stock Ultralytics empties the CUDA cache at an epoch's
  end unconditionally up to 8.3.86 (8.3.86's engine/trainer.py differs from 8.3.85's only in
  a file encoding: the field README's "up to 8.3.85" is one release early), from 8.3.87 only
  when memory_reserved / total_memory exceeds 0.9, and from 8.3.109 on (8.4.19 and 8.4.190
  included; 8.4 also checks before validation) when it exceeds 0.5 - read in the trainer.py
  of the wheels 8.3.84-8.3.87, 8.3.100, .105, .107-.110, .120, .149 and 8.4.19. The estimate
  applies it (field.epoch_emptied, calibration.epoch_emptied; the `cache` column): past
  8.3.86 a run is in the emptied regime when its *emptied* prediction exceeds the threshold x
  the card's total memory (gpu_total_mib). The emptied prediction decides because the first
  epoch's end sees one epoch's reserved bytes: above the threshold every epoch is emptied;
  below it the pools grow towards the kept prediction, which bounds the reading (deciding on
  the kept prediction would under-predict runs whose kept prediction alone crosses it).
  One row changes regime: yolo26m-seg b16 on the T4 (8.4.19, measured 11.40 GiB = 78 % of
  14.56 GiB; emptied prediction 78 %, kept 89 %): -0.1 % (was +14.0 % as cache kept). No
  fitting row changes: the later sparse detection rows measure 8-45 % of their cards (the
  closest, yolov8m b16 on a T4 with 8.4.41: 43 % emptied / 49 % kept predicted), so the
  re-fit gives the same constants (cuDNN 168 MiB, kept 0.25, emptied 0.0925) and the same
  hold-outs. No field row has the 0.9 threshold (8.3.87-8.3.108).
- Segment rows (held out): yolo11s-seg b15 +8.0 % (cache kept, 24 % of the card);
  yolo26m-seg b16 -0.1 % (cache emptied, above), both within 10 %. Its label terms are 2 % of
  its estimate (1 object per image: 230 MB), so no label count moves it. The one detection
  row from the same Ultralytics 8.4.19 and T4 (yolo26n b16, 17 % of the card, kept) stays
  over by +16.0 % (+2.5 % were it emptied; 8.4.19 has no other empty_cache in training),
  while the yolo26n rows of 8.4.70 and 8.4.174 are within -6.6..+2.8 %: a version difference
  in YOLO26's code remains possible (not checkable here: only 8.4.190 is installed).
- The dense pose row (WIDER FACE, 5 landmarks) cannot be judged: the estimate reaches its
  measurement with a densest image of ~1940 faces (the typical image held at the stated 12);
  the densest image is not published. Dense detection rows likewise (VisDrone ~440-920,
  WIDER FACE ~1650 objects in the densest image). `yolofit data stats` gives the real maximum.
- The file-wise hold-out fails, and says why: the two files differ in software, not in models.
  File 1 is Ultralytics 8.0-8.3.75 (cache emptied every epoch), file 2 mostly 8.4 (its sparse
  detection rows all below half their card: cache kept): fitted on one, the other is off by
  8-15 % in opposite directions. Hence one overhead per cache regime (the rule above); with a
  single regime the file-1 rows need an overhead below the allocator model's own replay, which
  is not physical. The cache-kept overhead still sits at its range's upper edge (0.25; the
  cache rule moved no fitting row): the 8.4 runs hold a quarter more than the traced peak
  allocated.
- The README's T4 table (+5 % for yolov8x to +34 % for yolov8n, never fitted) is predicted at
  COCO's 80 classes and 8 labels per image because its dataset is not stated. The loss's
  b x anchors x classes tensors are what that assumption adds, and they weigh most on nano
  models: the one field run of the same configuration with 2 classes (yolov8n, batch 16, 640,
  field_gpu_mem.csv:1) measured 2.16 GB and is predicted at 2.16 GB (+0.1 %). At 80 classes
  the estimate's peak allocated bytes are 2.30 GB, more than the table's whole 2.1 GB, which
  therefore fits a dataset with few classes better than COCO.
- Needs a GPU: the expandable-segments fragmentation the yolofit trainer runs with (no field run
  used it; still the uncalibrated 3 %), the CUDA context per class (GPU_mem excludes it), where
  the segment trace and CUDA part (SegTaskAlignedAssigner casts its mask tensors to fp16 on
  CUDA, fp32 on CPU: the CPU trace over-counts its per-label part), and
  benchmarks/calibrate_gpu.py overriding these field fits."""


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
            "cache_rule": "a row is in the emptied regime when its Ultralytics is <= 8.3.86 "
                          "or its emptied prediction exceeds the version's threshold (0.9 "
                          "for 8.3.87-8.3.108, else 0.5) x gpu_total_mib "
                          "(calibration.epoch_emptied)",
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
