"""Warm plan latency, for benchmarks/estimator.py (not a test: timings are not assertions).

Uses the real ProfileStore when it has the profile for the request, otherwise a synthetic
profile of the same shape, so the number is the planner's arithmetic, not tracing.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

from yolofit.estimator.gpu import GpuClass, get_gpu_class
from yolofit.estimator.planner import PlanRequest, plan
from yolofit.estimator.profile import (
    Profile,
    ProfileKey,
    ProfileMissing,
    ProfileStore,
    Terms,
    resolve_model,
)

MiB = 2**20


def synthetic_profile(key: ProfileKey, params: int = 11_200_000,
                      activations_per_sample: int = 300 * MiB) -> Profile:
    """A hand-made profile with the components a trace produces (sizes are plausible, not
    measured): fp32 weights/grads/EMA, two AdamW moments, linear activations and loss."""
    act = activations_per_sample // (8 if key.checkpointing else 1)
    breakdown = {
        "weights": Terms(4 * params, 0), "gradients": Terms(4 * params, 0),
        "optimizer_state": Terms(8 * params, 0), "ema": Terms(4 * params, 0),
        "activations": Terms(32 * MiB, act), "loss": Terms(0, 2 * MiB, 8400 * 24),
        "validation": Terms(0, 0), "allocator_overhead": Terms(16 * MiB, act // 20),
    }
    allocated = sum((t for k, t in breakdown.items() if k != "allocator_overhead"), Terms(0, 0))
    return Profile(key, params, allocated, allocated + breakdown["allocator_overhead"],
                   breakdown, [], "synthetic")


def plan_latency(n: int = 2000, req: PlanRequest | None = None,
                 classes: Sequence[GpuClass] | None = None,
                 store: ProfileStore | None = None) -> dict[str, Any]:
    """Time `n` warm `plan()` calls; returns p50/p99/mean/max in microseconds and whether the
    profile was real ("store") or synthetic."""
    req = req or PlanRequest("yolov8s.yaml", imgsz=640, world_size=4, nbs=64, objects=50)
    classes = list(classes or [get_gpu_class("t4"), get_gpu_class("a100-40gb")])
    store = store if store is not None else ProfileStore()
    source = "store"
    try:
        plan(req, classes, store)  # warm: model identity and store index are cached
    except ProfileMissing:
        ref = resolve_model(req.model)
        optimizer = "AdamW" if req.optimizer == "auto" else req.optimizer
        store = ProfileStore.of([
            synthetic_profile(ProfileKey(ref.name, ref.config_hash, req.imgsz, amp, optimizer,
                                         req.nc, ckpt))
            for amp in ("off", "fp16", "bf16") for ckpt in (False, True)])
        source = "synthetic"
        plan(req, classes, store)
    wall, cpu = [], []
    for _ in range(n):
        start, start_cpu = time.perf_counter_ns(), time.thread_time_ns()
        plan(req, classes, store)
        cpu.append((time.thread_time_ns() - start_cpu) / 1000.0)
        wall.append((time.perf_counter_ns() - start) / 1000.0)
    wall.sort()
    cpu.sort()
    p99 = min(n - 1, int(n * 0.99))
    # Wall time includes preemption by other processes on a busy machine; thread CPU time
    # is the planner's own cost (coarser clock on some kernels).
    return {"n": n, "p50_us": wall[n // 2], "p99_us": wall[p99],
            "mean_us": statistics.fmean(wall), "max_us": wall[-1],
            "cpu_p50_us": cpu[n // 2], "cpu_p99_us": cpu[p99],
            "profiles": source}


if __name__ == "__main__":
    print(plan_latency())
