"""Where a profile trace spends its time: the tracer's dispatch time by phase, and how much
of the loss it computes for values that no size or branch reads.

    YOLO_OFFLINE=1 .venv/bin/python benchmarks/trace_breakdown.py [--model yolo11x] \
        [--imgsz 1280]

Builds one profile as the operator's trace worker does (hollow compute, the worker's malloc
settings) with the tracer's dispatch wrapped by a timer (so the total runs a little longer
than an untimed trace). Then, per trace point, the loss ops that were computed (not answered
from shapes, not replayed) are split into those whose output values reach, through later
ops, a *decision*: an op whose output size or a host value depends on values (nonzero,
item, unique, masked_select, a boolean index); the others feed only the loss value and the
backward, which is answered from shapes. Their time is what computing the loss on demand
could save without changing a storage event. Instrumentation of tracer internals: numbers
for benchmarks/RESULTS.md, not a test.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("YOLO_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="yolo11x")
    parser.add_argument("--imgsz", type=int, default=1280)
    args = parser.parse_args()

    from yolofit.estimator.trace_worker import limit_heap_retention

    limit_heap_retention()
    t0 = time.perf_counter()
    import torch

    from yolofit.estimator import build, tracer

    imported = time.perf_counter() - t0
    aten = torch.ops.aten
    decisions = {aten.item.default, aten.nonzero_numpy.default, aten.argwhere.default,
                 *tracer._ALWAYS_REAL}
    seconds: collections.Counter[str] = collections.Counter()
    ops: collections.Counter[str] = collections.Counter()
    loss_log: list[tuple[str, float, set[Any], set[Any], bool]] = []
    version: collections.Counter[int] = collections.Counter()
    original = tracer.StorageTracker._dispatch

    def sids(tree: Any) -> set[int]:
        return {t.untyped_storage()._cdata for t in tracer._tensors(tree)}

    def timed(self: Any, func: Any, fargs: Any, kwargs: Any, entry: Any) -> Any:
        replayed = entry is not None and self.tape is not None and self.tape.replaying
        in_loss = self.phase in tracer.LOSS_PHASES and not replayed
        if in_loss:
            written = set()
            for a, v in zip(func._schema.arguments, fargs, strict=False):
                if a.alias_info is not None and a.alias_info.is_write:
                    written |= sids(v)
            read = {(s, version[s]) for s in sids(tracer._values_read(func, fargs, kwargs))}
        start = time.perf_counter()
        out = original(self, func, fargs, kwargs, entry)
        took = time.perf_counter() - start
        seconds[self.phase] += took
        ops[self.phase] += 1
        if in_loss:
            made = set()
            for s in written | (sids(out) - sids((fargs, kwargs))):
                version[s] += 1
                made.add((s, version[s]))
            boolean_index = func in (aten.index.Tensor, aten.index_put_.default) and any(
                t.dtype == torch.bool for t in tracer._tensors(fargs[1:]))
            loss_log.append((self.phase, took, read, made, func in decisions or boolean_index))
        return out

    tracer.StorageTracker._dispatch = timed  # type: ignore[method-assign]
    key = build.key_for(args.model, args.imgsz)
    points: list[tuple[str, float, float]] = []
    trace_point = build.trace_point

    def per_point(*a: Any, **k: Any) -> Any:
        loss_log.clear()
        result = trace_point(*a, **k)
        points.append((f"({result.batch}, {result.objects})", *_split(loss_log)))
        return result

    build.trace_point = per_point  # type: ignore[assignment]
    start = time.perf_counter()
    build.build_profile(key)
    traced = time.perf_counter() - start
    print(f"{args.model}@{args.imgsz}: imports {imported:.1f} s, profile {traced:.1f} s "
          f"(timed dispatch {sum(seconds.values()):.1f} s)\n")
    _report(seconds, ops, points)
    return 0


def _split(loss_log: list[tuple[str, float, set[Any], set[Any], bool]]) -> tuple[float, float]:
    """(seconds of computed loss ops, seconds of those whose values reach no decision):
    walked backwards, an op is needed when it decides or a needed op reads what it made."""
    needed: set[Any] = set()
    total = unneeded = 0.0
    for _phase, took, read, made, decision in reversed(loss_log):
        total += took
        if decision or made & needed:
            needed |= read
        else:
            unneeded += took
    return total, unneeded


def _report(seconds: collections.Counter[str], ops: collections.Counter[str],
            points: list[tuple[str, float, float]]) -> None:
    print("| phase | dispatch s | ops |\n|---|---|---|")
    for phase, s in seconds.most_common():
        print(f"| {phase} | {s:.2f} | {ops[phase]} |")
    print("\n| point (batch, labels) | computed loss s | of it, values no decision reads |")
    print("|---|---|---|")
    for name, total, unneeded in points:
        print(f"| {name} | {total:.2f} | {unneeded:.2f} ({unneeded / max(total, 1e-9):.0%}) |")
    all_total, all_unneeded = sum(p[1] for p in points), sum(p[2] for p in points)
    print(f"| all | {all_total:.2f} | {all_unneeded:.2f} "
          f"({all_unneeded / max(all_total, 1e-9):.0%}) |")


if __name__ == "__main__":
    sys.exit(main())
