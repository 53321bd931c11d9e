"""Profiles interpolated in nc (estimator/nc_interpolation.py) against exact traces.

    YOLO_OFFLINE=1 .venv/bin/python benchmarks/nc_interpolation.py \
        [--profiles PATH] [--set small|x1280|all] [--no-trace]

Traces (resumable, into --profiles, default ~/.cache/yolofit/nc-validation.json) every key of
the validation set: per model, the two ends (nc 1 and 80) and class counts between them;
then, for every traced nc between the ends, interpolates its profile from the ends and
compares it with the exact trace over a grid of batch (1-64), densest labels per sample
(0-256) and mean labels (none, 1-16). It prints, per key, the least and the largest relative
error of allocated, reserved (expandable segments) and reserved (default allocator):
interpolated / traced - 1. A negative least error is an under-prediction.

    YOLO_OFFLINE=1 .venv/bin/python benchmarks/nc_interpolation.py --first-estimate \
        [--model yolo11x] [--imgsz 1280] [--repeat 3]

times a first estimate instead, each in a fresh process (`/usr/bin/time -f "%e s %M KiB"`
around `yolofit estimate --json` with an empty profile cache): nc 3 (between the shipped
nc 1 and 80: interpolated) against nc 81 (above them: traced), alternating, medians.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from yolofit.estimator.nc_interpolation import between  # noqa: E402
from yolofit.estimator.profile import Profile, ProfileStore, _read_profiles  # noqa: E402

# (model, imgsz, class counts); the first and last are the ends every other is judged from.
SETS = {
    "small": [("yolov8n", 320, (1, 3, 10, 30, 55, 80)), ("yolo11n-seg", 320, (1, 5, 80)),
              ("yolo11n-obb", 320, (1, 15, 80)), ("yolo11n-pose", 320, (1, 3, 80)),
              ("yolo11n-cls", 224, (1, 10, 80))],
    "x1280": [("yolo11x", 1280, (1, 3, 20, 80))],
    # Above 80: LVIS' 1203 classes, Objects365's 365, Open Images' 601.
    "wide": [("yolov8n", 320, (80, 365, 601, 1203)), ("yolov8n", 320, (80, 200, 365)),
             ("yolov8n", 320, (365, 601, 1203)), ("yolo11n-cls", 224, (80, 300, 600, 1000)),
             ("yolo11s-cls", 224, (80, 300, 600, 1000))],
}
SETS["all"] = SETS["small"] + SETS["x1280"] + SETS["wide"]
BATCHES = (1, 2, 4, 8, 16, 32, 64)
DENSEST = (0, 4, 16, 64, 256)
MEANS = (None, 1, 4, 16)


def trace(path: Path, entries: list[tuple[str, int, tuple[int, ...]]]) -> None:
    for model, imgsz, counts in entries:
        for nc in counts:
            subprocess.run([sys.executable, "-m", "yolofit.estimator.precompute", "--models",
                            model, "--imgsz", str(imgsz), "--amp", "fp16", "--nc", str(nc),
                            "--out", str(path)], check=True, cwd=REPO, stdout=sys.stderr)


PICK = {"allocated": lambda p: p.allocated, "reserved": lambda p: p.reserved_terms(True),
        "reserved_default": lambda p: p.reserved_terms(False)}


def at_points(terms_of: Profile, measured: Profile) -> dict[str, tuple[float, float]]:
    """Least and largest error of `terms_of`'s terms at the trace points of `measured`,
    against what its trace measured there (the allocator model's replay for reserved)."""
    out = {}
    for name, pick in PICK.items():
        errs = []
        for t in measured.traced_at:
            mean = t.get("mean_objects")
            value = max(int(t[name]), int(t["allocated"]))
            errs.append(pick(terms_of).at(t["batch"], t["objects"],
                                          None if mean is None else round(mean)) / value - 1)
        out[name] = (min(errs), max(errs))
    return out


def excess_mib(derived: Profile, measured: Profile) -> float:
    """The most reserved bytes (expandable segments) the interpolation adds over the trace's
    replay at its points, in MiB (the relative errors above are of small steps)."""
    return max(derived.reserved.at(t["batch"], t["objects"], None if t.get("mean_objects")
                                   is None else round(t["mean_objects"]))
               - max(int(t["reserved"]), int(t["allocated"]))
               for t in measured.traced_at) / 2**20


def on_grid(derived: Profile, exact: Profile) -> tuple[float, float]:
    """Least and largest error of the allocated terms against the exact profile's terms over
    the grid (both extrapolate from their points; allocated only, see the module text)."""
    errs = [derived.allocated.at(b, o, m) / exact.allocated.at(b, o, m) - 1
            for b, o, m in itertools.product(BATCHES, DENSEST, MEANS) if m is None or m <= o]
    return min(errs), max(errs)


def _pct(pair: tuple[float, float]) -> str:
    return f"{100 * pair[0]:+.1f} .. {100 * pair[1]:+.1f}"


def report(path: Path, entries: list[tuple[str, int, tuple[int, ...]]]) -> str:
    traced = {(p.key.model, p.key.imgsz, p.key.nc): p for p in _read_profiles(path)
              if p.key.amp == "fp16" and p.key.optimizer == "AdamW"}
    rows = ["| model | imgsz | nc (ends) | served | allocated at points: interpolated / traced | "
            "reserved | reserved, default allocator | reserved excess, MiB | allocated over the "
            "grid: interpolated vs traced terms |",
            "|---|---|---|---|---|---|---|---|---|"]
    least = dict.fromkeys(PICK, 0.0)
    for model, imgsz, counts in entries:
        lo, hi = traced[model, imgsz, counts[0]], traced[model, imgsz, counts[-1]]
        store = ProfileStore.of([lo, hi])  # the planner's path: a count between two stored
        for nc in counts[1:-1]:
            mid = traced[model, imgsz, nc]
            derived, exact = between(lo, hi, nc), at_points(mid, mid)
            served = store.get(mid.key) == derived  # else the store traces it
            e = at_points(derived, mid)
            for k, (low, _) in e.items():
                least[k] = min(least[k], low) if served else least[k]
            cells = [f"{_pct(e[k])} % ({_pct(exact[k])})" for k in PICK]
            rows.append(f"| {model} | {imgsz} | {nc} ({lo.key.nc}, {hi.key.nc}) | "
                        f"{'yes' if served else 'no'} | "
                        + " | ".join(cells)
                        + f" | {excess_mib(derived, mid):.0f} | {_pct(on_grid(derived, mid))} % |")
    rows += ["", "At points: the interpolated terms at the exact trace's points against what "
             "it measured there (in brackets: the exact profile's own terms, which are "
             "raised to cover their points). Served: whether ProfileStore.get answers with the "
             "interpolation (nc_interpolation.comparable), else the count is traced. Least over "
             "the served rows (negative: under): "
             + ", ".join(f"{k} {100 * v:+.2f} %" for k, v in least.items())]
    return "\n".join(rows)


def first_estimate(model: str, imgsz: int, repeat: int) -> str:
    import re
    import statistics
    import tempfile

    cells: dict[int, list[tuple[float, int, str]]] = {3: [], 81: []}
    for _ in range(repeat):
        for nc in cells:
            with tempfile.TemporaryDirectory() as cache:
                env = {**os.environ, "YOLOFIT_PROFILE_DIR": cache, "YOLO_OFFLINE": "1"}
                out = subprocess.run(
                    ["/usr/bin/time", "-f", "%e s %M KiB", str(REPO / ".venv/bin/yolofit"),
                     "estimate", "--model", model, "--imgsz", str(imgsz), "--nc", str(nc),
                     "--batch", "8", "--json"], env=env, capture_output=True, text=True,
                    check=True)
            m = re.findall(r"([0-9.]+) s ([0-9]+) KiB", out.stderr)[-1]
            source = json.loads(out.stdout)["profile_source"]
            cells[nc].append((float(m[0]), int(m[1]), source.split(" (")[0].split(",")[0]))
    rows = [f"First estimate of {model}@{imgsz} (fp16, AdamW, batch 8), each a fresh process "
            f"with an empty profile cache; median of {repeat}, arms alternating:", "",
            "| nc | profile | wall s | peak RSS MiB |", "|---|---|---|---|"]
    for nc, runs in cells.items():
        rows.append(f"| {nc} | {runs[0][2]} | {statistics.median(r[0] for r in runs):.1f} | "
                    f"{statistics.median(r[1] for r in runs) / 1024:.0f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profiles", type=Path,
                    default=Path.home() / ".cache" / "yolofit" / "nc-validation.json")
    ap.add_argument("--set", choices=sorted(SETS), default="small")
    ap.add_argument("--no-trace", action="store_true", help="report on --profiles as it is")
    ap.add_argument("--first-estimate", action="store_true",
                    help="time first estimates, interpolated (nc 3) against traced (nc 81)")
    ap.add_argument("--model", default="yolo11x")
    ap.add_argument("--imgsz", type=int, default=1280)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    if args.first_estimate:
        print(f"Command: `YOLO_OFFLINE=1 .venv/bin/python benchmarks/nc_interpolation.py "
              f"--first-estimate --model {args.model} --imgsz {args.imgsz} "
              f"--repeat {args.repeat}`")
        print(f"Machine: {os.cpu_count()} cores ({platform.machine()}). Date: "
              f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC. Load average before: "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}.\n")
        print(first_estimate(args.model, args.imgsz, args.repeat))
        return 0
    if not args.no_trace:
        args.profiles.parent.mkdir(parents=True, exist_ok=True)
        trace(args.profiles, SETS[args.set])
    print(f"Command: `YOLO_OFFLINE=1 .venv/bin/python benchmarks/nc_interpolation.py "
          f"--set {args.set}`")
    print(f"Machine: {os.cpu_count()} cores ({platform.machine()}). "
          f"Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC.\n")
    print(report(args.profiles, SETS[args.set]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
