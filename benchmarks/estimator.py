"""Estimator benchmark: cold trace time, linearity, warm plan latency, accuracy vs field data.

    YOLO_OFFLINE=1 .venv/bin/python benchmarks/estimator.py [--scales n s m l x] [--write]

1. Cold trace per scale (yolov8 n..x, imgsz 640, fp16, AdamW): model build from YAML, one
   traced training step (2 iterations + validation, batch 8) and a whole profile build
   (4 traced points + fit). Nothing cached: the profile store is not consulted.
2. Linearity: the fitted terms' relative error at points not used for fitting (batch 16
   and 32 with 4 objects, batch 8 with 512 objects).
3. Warm latency: `estimate()` on a shipped profile, and the planner's `plan()` (through
   yolofit.estimator.latency), p50/p99 over many calls.
4. Accuracy vs /work/shared/data/field_gpu_mem.csv (and the published T4 table): predicted
   reserved (traced with the row's nc and objects, *default* allocator as stock Ultralytics
   runs, plus the class's cuBLAS/cuDNN workspaces) vs measured GPU_mem, which is
   memory_reserved() without the CUDA context; units per the row's notes (GB = 1e9 up to
   8.3.75, GiB from 8.3.76).
--write replaces this benchmark's section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import copy
import csv
import datetime as dt
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("YOLO_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from yolofit.estimator import build  # noqa: E402
from yolofit.estimator.gpu import get_gpu_class  # noqa: E402
from yolofit.estimator.models import build_model, resolve  # noqa: E402
from yolofit.estimator.profile import (  # noqa: E402
    Profile,
    ProfileKey,
    ProfileStore,
    Terms,
    estimate,
    trace_points,
)

RESULTS = REPO / "benchmarks" / "RESULTS.md"
HEADING = "## VRAM estimator (benchmarks/estimator.py)"
FIELD = Path("/work/shared/data/field_gpu_mem.csv")
GPU_BY_NAME = {"Tesla T4": "t4", "NVIDIA GeForce RTX 3060": "rtx-3060",
               "NVIDIA GeForce RTX 3090": "rtx-3090", "NVIDIA L4": "l4",
               "GeForce GTX 1080 Ti": None}
# The published table (batch 16, 640, T4, AMP presumed; measurement method unknown), GB.
PUBLISHED = {"yolov8n": 2.1, "yolov8s": 4.0, "yolov8m": 7.5, "yolov8l": 10.8, "yolov8x": 14.5}


def cold_trace(scales: list[str]) -> list[dict[str, Any]]:
    rows = []
    for s in scales:
        name = f"yolov8{s}"
        t0 = time.perf_counter()
        model = build_model(name + ".yaml")
        t_build = time.perf_counter() - t0
        key = build.key_for(name, 640, "fp16", "AdamW")
        t1 = time.perf_counter()
        point = build.trace_point(model, key, 8, 4)
        t_point = time.perf_counter() - t1
        t2 = time.perf_counter()
        profile = build.build_profile(key, model=model)
        t_profile = time.perf_counter() - t2
        rows.append({"model": name, "params": profile.params, "build_s": t_build,
                     "point_s": t_point, "profile_s": t_profile,
                     "alloc_b8": point.allocated, "res_b8": point.reserved,
                     "profile": profile, "model_obj": model, "key": key})
        print(f"  {name}: build {t_build:.1f}s, one traced step {t_point:.1f}s, "
              f"profile {t_profile:.1f}s", file=sys.stderr, flush=True)
    return rows


def linearity(row: dict[str, Any]) -> dict[str, float]:
    profile: Profile = row["profile"]
    out = {}
    for b, o in ((16, 4), (32, 4), (8, 512)):
        p = build.trace_point(row["model_obj"], row["key"], b, o)
        out[f"b{b}/o{o} allocated"] = profile.allocated.at(b, o) / p.allocated - 1
        out[f"b{b}/o{o} reserved"] = profile.reserved.at(b, o) / p.reserved - 1
    return out


def crosscheck() -> list[dict[str, Any]]:
    """Our raw peak vs torch.profiler's (profile_memory=True) on the same exact-compute CPU
    step of yolov8n (see tests/estimator/test_tracer.py for the tolerance's reasoning)."""
    from torch.profiler import ProfilerActivity, profile

    from yolofit.estimator import tracer as T

    model = build_model("yolov8n.yaml")
    out = []
    for imgsz, amp in ((96, "off"), (128, "fp16"), (160, "bf16")):
        cfg = T.StepConfig(batch=2, imgsz=imgsz, objects=4, amp=amp, compute="exact")
        state = T.prepare_training(copy.deepcopy(model), cfg)
        tracker = T.StorageTracker("exact")
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            T.run_traced(state, tracker)
        mem = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                     if e.name() == "[memory]")
        live = peak = 0
        for _, n in mem:
            live += n
            peak = max(peak, live)
        base = sum(ev.nbytes for ev in tracker.events if ev.phase == "setup")
        ours = T.raw_peak(tracker) - base
        out.append({"imgsz": imgsz, "amp": amp, "ours": ours, "profiler": peak,
                    "diff": peak / ours - 1})
    return out


def nc_effect() -> list[dict[str, Any]]:
    ref = resolve("yolov8n.yaml")
    out = []
    for nc in (1, 80, 1000):
        key = ProfileKey(ref.name, ref.config_hash, 640, "fp16", "AdamW", nc, False)
        p = build.build_profile(key, model=build_model(ref, nc=nc))
        out.append({"nc": nc, "params": p.params, "allocated": p.allocated})
    return out


def latency(n: int = 20000) -> dict[str, Any]:
    store = ProfileStore()
    gpu = get_gpu_class("t4")
    profiles = list(store.profiles.values())
    result: dict[str, Any] = {"shipped_profiles": len(profiles)}
    if profiles:
        p = profiles[0]
        times = []
        for i in range(n):
            t = time.perf_counter_ns()
            estimate(p, 1 + i % 64, 30, gpu)
            times.append(time.perf_counter_ns() - t)
        times.sort()
        result["estimate_p50_us"] = times[n // 2] / 1000
        result["estimate_p99_us"] = times[int(n * 0.99)] / 1000
    try:
        from yolofit.estimator.latency import plan_latency

        result["plan"] = plan_latency(2000)
    except Exception as exc:  # the planner side may still be changing
        result["plan_error"] = repr(exc)
    return result


def _field_rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with FIELD.open() as f:
        for r in csv.DictReader(f):
            version = tuple(int(x) for x in r["ultralytics_version"].split("."))
            unit = 2**30 if version >= (8, 3, 76) else 1e9
            m = re.search(r"(\d+) cls", r["dataset"])
            same = "same as above" in r["dataset"] and rows
            nc = int(m.group(1)) if m else (rows[-1]["nc"] if same else 1)
            m = re.search(r"~([\d.]+)/img", r["dataset"])
            objects = round(float(m.group(1))) if m else (rows[-1]["objects"] if same else 2)
            if "WIDER" in r["dataset"]:
                nc = 1
            rows.append({"model": r["model"].replace(".pt", ""), "imgsz": int(r["imgsz"]),
                         "batch": int(r["batch"]) // int(r["n_gpus"]),
                         "amp": "fp16" if r["amp"] == "True" else "off", "nc": nc,
                         "objects": max(objects, 1), "gpu": r["gpu"],
                         "measured": float(r["gpu_mem_gb"]) * unit,
                         "dense": "WIDER" in r["dataset"] or "VisDrone" in r["dataset"],
                         "note": r["dataset"][:40]})
    return rows


def _default_allocator_terms(profile: Profile) -> Terms:
    points = trace_points(profile.traced_at)
    return build.fit_terms([max(t["reserved_default"], t["allocated"])
                            for t in profile.traced_at], points)


def accuracy(cache: dict[tuple[str, int, int, str], Profile]) -> list[dict[str, Any]]:
    rows = _field_rows()
    rows += [{"model": m, "imgsz": 640, "batch": 16, "amp": "fp16", "nc": 80, "objects": 8,
              "gpu": "Tesla T4", "measured": gb * 1e9, "dense": False,
              "note": "published table (method unknown)"} for m, gb in PUBLISHED.items()]
    out = []
    for r in rows:
        k = (r["model"], r["imgsz"], r["nc"], r["amp"])
        if k not in cache:
            ref = resolve(r["model"])
            key = ProfileKey(ref.name, ref.config_hash, r["imgsz"], r["amp"], "AdamW",
                             r["nc"], False)
            print(f"  tracing {key.id}", file=sys.stderr, flush=True)
            cache[k] = build.build_profile(key, model=build_model(ref, nc=r["nc"]))
        profile = cache[k]
        gpu_name = GPU_BY_NAME.get(r["gpu"]) or "rtx-3090"
        gpu = get_gpu_class(gpu_name)
        per_sample = 4 * r["objects"]  # mosaic
        traced = _default_allocator_terms(profile).at(r["batch"], per_sample)
        predicted = traced + gpu.workspace_bytes
        out.append({**r, "traced_reserved": traced, "predicted": predicted,
                    "error": predicted / r["measured"] - 1})
    return out


def _fmt_gb(x: float) -> str:
    return f"{x / 1e9:.2f}"


def render(cold: list[dict[str, Any]], lin: dict[str, float], lat: dict[str, Any],
           acc: list[dict[str, Any]], cross: list[dict[str, Any]],
           ncs: list[dict[str, Any]]) -> str:
    lines = ["| model | params | model build | one traced step (b=8) | profile (4 steps + fit) |"
             " peak alloc b=8 | peak reserved b=8 |", "|---|---|---|---|---|---|---|"]
    for r in cold:
        lines.append(f"| {r['model']} | {r['params'] / 1e6:.1f} M | {r['build_s']:.1f} s | "
                     f"{r['point_s']:.1f} s | {r['profile_s']:.1f} s | "
                     f"{r['alloc_b8'] / 2**30:.2f} GiB | {r['res_b8'] / 2**30:.2f} GiB |")
    lines += ["", "Linearity (fitted terms vs a fresh trace at a point not used to fit; "
              f"{cold[-1]['model'] if cold else ''}, 640, fp16):", "",
              "| point | relative error |", "|---|---|"]
    lines += [f"| {k} | {v * 100:+.2f} % |" for k, v in lin.items()]
    lines += ["", "Cross-check: traced raw peak vs torch.profiler(profile_memory=True) on the same "
              "exact CPU step (yolov8n, batch 2; the profiler also sees CPU kernels' scratch "
              "buffers, which on a GPU are the workspaces gpu_classes.json adds):", "",
              "| imgsz | amp | traced peak | profiler peak | profiler / traced - 1 |",
              "|---|---|---|---|---|"]
    lines += [f"| {c['imgsz']} | {c['amp']} | {c['ours']} B | {c['profiler']} B | "
              f"{c['diff'] * 100:+.2f} % |" for c in cross]
    lines += ["", "nc (yolov8n, 640, fp16; allocated terms):", "",
              "| nc | params | fixed | per sample | per object x sample |", "|---|---|---|---|---|"]
    lines += [f"| {r['nc']} | {r['params'] / 1e6:.2f} M | {r['allocated'].fixed / 2**20:.0f} MiB "
              f"| {r['allocated'].per_sample / 2**20:.1f} MiB | "
              f"{r['allocated'].per_object / 1024:.0f} KiB |" for r in ncs]
    lines += ["", "Warm latency:", "", "| call | p50 | p99 |", "|---|---|---|"]
    if "estimate_p50_us" in lat:
        lines.append(f"| estimate() (shipped profile) | {lat['estimate_p50_us']:.1f} us | "
                     f"{lat['estimate_p99_us']:.1f} us |")
    if "plan" in lat:
        p = lat["plan"]
        lines.append(f"| plan() 2 classes ({p['profiles']} profiles) | {p['p50_us']:.0f} us | "
                     f"{p['p99_us']:.0f} us |")
    lines += ["", "Accuracy (predicted reserved = traced reserved with the default allocator "
              "+ cuBLAS/cuDNN workspace allowance; measured = GPU_mem; GB = 1e9 B):", "",
              "| model | imgsz | batch/GPU | amp | nc | obj/img | GPU | measured GB | "
              "traced GB | predicted GB | error | note |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in acc:
        lines.append(f"| {r['model']} | {r['imgsz']} | {r['batch']} | {r['amp']} | {r['nc']} | "
                     f"{r['objects']}{' (dense)' if r['dense'] else ''} | {r['gpu']} | "
                     f"{_fmt_gb(r['measured'])} | {_fmt_gb(r['traced_reserved'])} | "
                     f"{_fmt_gb(r['predicted'])} | {r['error'] * 100:+.0f} % | {r['note']} |")
    field = [abs(r["error"]) for r in acc if "published" not in r["note"] and not r["dense"]]
    if field:
        lines += ["", f"Field rows with sparse labels: median |error| "
                  f"{statistics.median(field) * 100:.0f} %, max {max(field) * 100:.0f} % "
                  f"(n={len(field)})."]
    lines += ["", NOTES]
    return "\n".join(lines)


NOTES = """What is traced and what is assumed:
- Traced (CPU, real Ultralytics step, counted through the CUDA caching-allocator model):
  weights, gradients (alive through an accumulating iteration), optimizer state, EMA,
  activations, loss/assigner tensors, validation pass, allocator rounding and segment
  fragmentation (expandable_segments for the yolofit trainer; default allocator for the
  field rows, which come from stock Ultralytics).
- Assumed, per GPU class (gpu_classes.json, uncalibrated): CUDA context (not in GPU_mem),
  cuBLAS/cuDNN workspaces (added here: 320 MiB), a 3 % fragmentation margin (not added in
  this table), NCCL/DDP buffers (not in this table: single GPU).
- Field data caveats: rows come from Ultralytics 8.0-8.3.75 (older loss/assigner code, older
  torch); objects per image are the stated means (mosaic x4 applied), while the peak
  follows the densest batch, so dense rows (WIDER FACE, VisDrone) are under-predicted with
  means; the published table's method is unknown. No GPU was available: the GPU
  calibration (benchmarks/calibrate_gpu.py) is still owed."""


def write(text: str, command: str) -> None:
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in
                   Path("/proc/cpuinfo").read_text().splitlines() if "model name" in line)
    except (OSError, StopIteration):
        cpu = platform.processor()
    import torch
    import ultralytics

    section = (f"{HEADING}\n\nCommand: `{command}`\nMachine: {os.cpu_count()} cores ({cpu}), "
               f"shared with other work (load varies); Python {platform.python_version()}, "
               f"torch {torch.__version__} (CPU), ultralytics {ultralytics.__version__}. "
               f"Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC.\n\n{text}\n")
    current = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if HEADING in current:
        head, _, rest = current.partition(HEADING)
        nxt = rest.find("\n## ")
        current = head + section + (rest[nxt + 1:] if nxt >= 0 else "")
    else:
        current = current.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(current)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scales", nargs="+", default=list("nsmlx"))
    ap.add_argument("--no-accuracy", action="store_true")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    print("cold trace (yolov8, 640, fp16, AdamW):", file=sys.stderr)
    cold = cold_trace(args.scales)
    print("linearity:", file=sys.stderr)
    lin = linearity(cold[-1]) if cold else {}
    lat = latency()
    cache: dict[tuple[str, int, int, str], Profile] = {}
    for r in cold:  # reuse the nc=80 profiles for the published table
        cache[(r["model"], 640, 80, "fp16")] = r["profile"]
    acc = [] if args.no_accuracy else accuracy(cache)
    print("cross-check and nc:", file=sys.stderr)
    cross = crosscheck()
    ncs = nc_effect()
    text = render(cold, lin, lat, acc, cross, ncs)
    print(text)
    if args.write:
        write(text, "YOLO_OFFLINE=1 .venv/bin/python " + " ".join(
            [str(Path(sys.argv[0]).relative_to(REPO)) if Path(sys.argv[0]).is_absolute()
             else sys.argv[0], *sys.argv[1:]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
