"""First estimate of a configuration without a profile: cold-process time and peak host
memory of the profile trace per model scale, old path (shape compute) vs new (hollow).

    YOLO_OFFLINE=1 .venv/bin/python benchmarks/trace_memory.py [--family yolo11] \
        [--scales n s m l x] [--imgsz 640 1280] [--modes shape hollow] [--repeat 3] [--write]

Every cell is a fresh process, timed by `/usr/bin/time -f "%e s %M KiB"` (wall seconds and
peak RSS of the whole process: interpreter, torch and Ultralytics imports, model build, the
four traced points, the fit), run as the operator's trace worker runs it:
`python benchmarks/trace_memory.py --child MODEL IMGSZ MODE`. The new path also sets the
worker's malloc behaviour (trace_worker.limit_heap_retention); the old one is the tracer as
it was (shape compute, default malloc). Medians over --repeat runs; the allocated terms of
the two paths are compared too (they must agree: same storage events).
--old-max-params skips the old path above that many parameters at 1280 (it needs ~15 GB for
an x model there; the machine is shared). --write replaces this benchmark's section of
benchmarks/RESULTS.md.

    YOLO_OFFLINE=1 .venv/bin/python benchmarks/trace_memory.py --worker \
        [--models yolo11n yolo11x] [--imgsz 640] [--repeat 3] [--write]

times the operator's path instead: `trace_worker.trace_in_worker` with the real builder,
from a process that has already started (the operator), each arm in a fresh one:
"spawn" (a worker that imports torch and Ultralytics itself, as before) and "server" (a
worker forked from trace_worker.start_server's server, started WARMUP seconds earlier, as
the operator does at startup). Same profile either way (compared); its own section.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("YOLO_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "RESULTS.md"
HEADING = "## Profile trace: cold time and peak host memory (benchmarks/trace_memory.py)"
WORKER_HEADING = ("## First estimate through the operator's trace worker: spawned vs forked "
                  "from the preloaded server (benchmarks/trace_memory.py --worker)")
WARMUP = 20.0  # seconds between the server's start and the trace (the operator starts earlier)
BUILDER = "yolofit.estimator.build:build_profile"
PARAMS = {"n": 2.6e6, "s": 9.4e6, "m": 20.1e6, "l": 25.3e6, "x": 56.9e6}  # yolo11, approx.


def child(model: str, imgsz: int, mode: str) -> int:
    sys.path.insert(0, str(REPO))
    if mode == "hollow":
        from yolofit.estimator.trace_worker import limit_heap_retention

        limit_heap_retention()
    import time

    from yolofit.estimator import build

    t0 = time.perf_counter()
    key = build.key_for(model, imgsz, "fp16", "AdamW")
    profile = build.build_profile(key, compute=mode)
    print(json.dumps({"allocated": dataclasses.astuple(profile.allocated),
                      "reserved": dataclasses.astuple(profile.reserved),
                      "params": profile.params, "seconds": time.perf_counter() - t0}))
    return 0


def worker_child(model: str, imgsz: int, arm: str) -> int:
    """One first estimate through trace_in_worker, as the operator runs it."""
    sys.path.insert(0, str(REPO))
    import time

    from yolofit.estimator import build, trace_worker

    if arm == "spawn":  # the worker as it was: a fresh interpreter that imports everything
        trace_worker._context = lambda builder: __import__("multiprocessing").get_context(
            "spawn")
    else:
        trace_worker.start_server(BUILDER)
        time.sleep(WARMUP)
    key = build.key_for(model, imgsz, "fp16", "AdamW")
    run = trace_worker.TraceRun(BUILDER, key.to_dict())
    t0 = time.perf_counter()
    profile = run.wait()
    print(json.dumps({"seconds": time.perf_counter() - t0, "worker_peak_rss": run.peak_rss,
                      "allocated": profile["allocated"]}))
    return 0


def run_worker(models: list[str], sizes: list[int], repeat: int) -> list[dict[str, Any]]:
    rows = []
    for imgsz in sizes:
        for model in models:
            runs: dict[str, list[dict[str, Any]]] = {"spawn": [], "server": []}
            for _ in range(repeat):  # alternating arms: load drifts hit both
                for arm in runs:
                    proc = subprocess.run([sys.executable, __file__, "--worker-child", model,
                                           str(imgsz), arm], capture_output=True, text=True,
                                          check=False, env={**os.environ,
                                                            "PYTHONPATH": str(REPO)})
                    if proc.returncode == 0:
                        runs[arm].append(json.loads(proc.stdout.strip().splitlines()[-1]))
                    else:
                        print(proc.stderr[-2000:], file=sys.stderr)
            row: dict[str, Any] = {"model": model, "imgsz": imgsz}
            for arm, got in runs.items():
                row[arm] = {"seconds": statistics.median(r["seconds"] for r in got),
                            "rss_mib": statistics.median(r["worker_peak_rss"] for r in got)
                            / 2**20, "runs": len(got),
                            "allocated": got[0]["allocated"]} if got else None
            print(f"  {row}", file=sys.stderr, flush=True)
            rows.append(row)
    return rows


def render_worker(rows: list[dict[str, Any]], args: argparse.Namespace, started: dt.datetime,
                  load_before: str, load_after: str) -> str:
    lines = [WORKER_HEADING, "",
             f"Command: `YOLO_OFFLINE=1 .venv/bin/python benchmarks/trace_memory.py --worker "
             f"--models {' '.join(args.models)} --imgsz {' '.join(map(str, args.imgsz))} "
             f"--repeat {args.repeat}{' --write' if args.write else ''}`",
             _machine(started, load_before, load_after), "",
             f"Each cell: median over {args.repeat} runs (arms alternating, each in a fresh "
             "process) of the wall time from starting the worker to holding the profile "
             "(fp16, AdamW, nc 80), and the worker's peak resident memory as the budget "
             "watchdog reads it. server = forked from trace_worker.start_server's process, "
             f"started {WARMUP:.0f} s before (torch, Ultralytics, torch._dynamo imported).", "",
             "| model | imgsz | spawn | server | server / spawn | same profile |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        a, b = r.get("spawn"), r.get("server")
        ratio = f"{b['seconds'] / a['seconds']:.2f}" if a and b else "-"
        same = "yes" if a and b and a["allocated"] == b["allocated"] else "no"
        lines.append(f"| {r['model']} | {r['imgsz']} | {_arm(a)} | {_arm(b)} | {ratio} | "
                     f"{same} |")
    return "\n".join(lines) + "\n"


def _machine(started: dt.datetime, load_before: str, load_after: str) -> str:
    cpu = platform.processor() or platform.machine()
    return (f"Machine: {os.cpu_count()} cores ({cpu}), shared with other sessions' builds and "
            f"tests (noisy: absolute seconds are load, compare columns of one run); Python "
            f"{platform.python_version()}. Date: {started:%Y-%m-%d %H:%M} UTC. Load average "
            f"(1/5/15 min) {load_before} before, {load_after} after.")


def _arm(c: dict[str, Any] | None) -> str:
    return f"{c['seconds']:.1f} s / {c['rss_mib']:.0f} MiB" if c else "failed"


def run_cell(model: str, imgsz: int, mode: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "YOLOFIT_PROFILE_DIR": tmp, "PYTHONPATH": str(REPO)}
        proc = subprocess.run(["/usr/bin/time", "-f", "%e s %M KiB", sys.executable,
                               __file__, "--child", model, str(imgsz), mode],
                              env=env, capture_output=True, text=True, check=False)
    m = re.search(r"([0-9.]+) s ([0-9]+) KiB", proc.stderr)
    if proc.returncode != 0 or m is None:
        return {"error": proc.stderr.strip().splitlines()[-1:] or [f"rc {proc.returncode}"]}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"seconds": float(m.group(1)), "peak_kib": int(m.group(2)), **out}


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks/trace_memory.py")
    ap.add_argument("--child", nargs=3, metavar=("MODEL", "IMGSZ", "MODE"))
    ap.add_argument("--worker", action="store_true", help="the operator's path: spawned "
                    "worker vs one forked from the preloaded server")
    ap.add_argument("--worker-child", nargs=3, metavar=("MODEL", "IMGSZ", "ARM"))
    ap.add_argument("--models", nargs="+", default=["yolo11n", "yolo11x"])
    ap.add_argument("--family", default="yolo11")
    ap.add_argument("--scales", nargs="+", default=list("nsmlx"))
    ap.add_argument("--imgsz", nargs="+", type=int, default=[640, 1280])
    ap.add_argument("--modes", nargs="+", default=["shape", "hollow"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--old-repeat", type=int, default=None,
                    help="runs of the old path per cell (default --repeat)")
    ap.add_argument("--old-max-params", type=float, default=30e6)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args(argv)
    if args.child:
        return child(args.child[0], int(args.child[1]), args.child[2])
    if args.worker_child:
        return worker_child(args.worker_child[0], int(args.worker_child[1]),
                            args.worker_child[2])
    started, load_before = dt.datetime.now(dt.UTC), load()
    if args.worker:
        text = render_worker(run_worker(args.models, args.imgsz, args.repeat), args, started,
                             load_before, load())
        print(text)
        if args.write:
            write(text, WORKER_HEADING)
        return 0
    rows = []
    for imgsz in args.imgsz:
        for s in args.scales:
            model = f"{args.family}{s}"
            row: dict[str, Any] = {"model": model, "imgsz": imgsz}
            for mode in args.modes:
                if (mode == "shape" and imgsz >= 1280
                        and PARAMS.get(s, 0) > args.old_max_params):
                    row[mode] = None
                    continue
                n = args.old_repeat if mode == "shape" and args.old_repeat else args.repeat
                runs = [run_cell(model, imgsz, mode) for _ in range(n)]
                ok = [r for r in runs if "error" not in r]
                row[mode] = {
                    "seconds": statistics.median(r["seconds"] for r in ok) if ok else None,
                    "peak_mib": statistics.median(r["peak_kib"] for r in ok) / 1024
                    if ok else None,
                    "runs": len(ok), "errors": [r["error"] for r in runs if "error" in r],
                    "allocated": ok[0]["allocated"] if ok else None}
                print(f"  {model}@{imgsz} {mode}: {row[mode]}", file=sys.stderr, flush=True)
            rows.append(row)
    text = render(rows, args, started, load_before, load())
    print(text)
    if args.write:
        write(text)
    return 0


def _cell(c: dict[str, Any] | None) -> str:
    if c is None:
        return "not run"
    if c["seconds"] is None:
        return f"failed: {c['errors'][:1]}"
    return f"{c['seconds']:.1f} s / {c['peak_mib']:.0f} MiB"


def render(rows: list[dict[str, Any]], args: argparse.Namespace, started: dt.datetime,
           load_before: str, load_after: str) -> str:
    lines = [HEADING, "",
             f"Command: `YOLO_OFFLINE=1 .venv/bin/python benchmarks/trace_memory.py --family "
             f"{args.family} --scales {' '.join(args.scales)} --imgsz "
             f"{' '.join(map(str, args.imgsz))} --repeat {args.repeat}"
             f"{f' --old-repeat {args.old_repeat}' if args.old_repeat else ''}"
             f" --old-max-params {args.old_max_params:g}"
             f"{' --write' if args.write else ''}`",
             _machine(started, load_before, load_after),
             "",
             "Each cell: median wall time / median peak RSS (`/usr/bin/time -f \"%e s %M KiB\"`) "
             f"of {args.repeat} cold processes (old path: {args.old_repeat or args.repeat}) "
             "that build the profile (fp16, AdamW, nc 80: "
             "model build, the traced points (four; more when the dense points double), fit). "
             "Old = shape compute as before; new = "
             "hollow compute with the worker's malloc settings.",
             "",
             "| model | imgsz | old (shape) | new (hollow) | allocated terms equal |",
             "| --- | --- | --- | --- | --- |"]
    for r in rows:
        old, new = r.get("shape"), r.get("hollow")
        same = ("yes" if old and new and old["allocated"] == new["allocated"]
                else "no" if old and new and old["allocated"] and new["allocated"] else "-")
        lines.append(f"| {r['model']} | {r['imgsz']} | {_cell(old)} | {_cell(new)} | {same} |")
    return "\n".join(lines) + "\n"


def write(text: str, heading: str = HEADING) -> None:
    old = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    start = old.find(heading)
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        nxt = old.find("\n## ", start + len(heading))
        reading = ""
        if nxt >= 0:
            rest = old[start:nxt]
            cut = rest.find("\nReading")
            reading = rest[cut:] if cut >= 0 else ""
            new = old[:start] + text + reading + old[nxt:]
        else:
            rest = old[start:]
            cut = rest.find("\nReading")
            reading = rest[cut:] if cut >= 0 else ""
            new = old[:start] + text + reading
    RESULTS.write_text(new)


if __name__ == "__main__":
    raise SystemExit(main())
