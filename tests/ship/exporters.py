"""Serve the project's real exporters with live traffic, for a real Prometheus to scrape.

    python tests/ship/exporters.py OPERATOR_PORT TRAINER_PORT [TRAINER_PORT ...]

A separate process because the operator's metrics live in a module-level registry: the test
process's own metrics stay untouched. The operator side is `yolofit.operator.metrics.REGISTRY`
(what `yolofit operator` serves); each trainer port is one rank's `TrainerMetrics` (what
`yolofit train` serves). Label values are the ones the operator and trainer write, read from
their code (the API's phases; the literals the operator passes to `.labels(...)` and
`counted(...)`), so a renamed label value reaches the dashboards' test instead of a stale copy.
Every second it adds another admission, step, OOM, ... so rate() and increase() have something
to show. Prints "serving" once all ports listen; runs until killed.
"""

from __future__ import annotations

import ast
import sys
import time
import typing
from pathlib import Path

from prometheus_client import start_http_server

from yolofit.operator import metrics as op
from yolofit.operator.api import Phase
from yolofit.trainer.exporter import TrainerMetrics
from yolofit.trainer.memory import MemoryPeaks

GiB = 1 << 30
NAMESPACE, JOB, GPU_CLASS = "team-a", "yolov8s-coco", "t4"
OPERATOR_CODE = Path(op.__file__).parent
PHASES: tuple[str, ...] = typing.get_args(Phase)


def _calls(name: str) -> list[ast.Call]:
    """Every call of `<...>.name(...)` or `name(...)` in the operator's modules."""
    found = []
    for path in sorted(OPERATOR_CODE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                f = node.func
                if (isinstance(f, ast.Attribute) and f.attr == name) or (
                        isinstance(f, ast.Name) and f.id == name):
                    found.append(node)
    return found


def _label_calls(metric: str) -> list[ast.Call]:
    """Calls of `metrics.<metric>.labels(...)`."""
    return [c for c in _calls("labels") if isinstance(c.func, ast.Attribute)
            and isinstance(c.func.value, ast.Attribute) and c.func.value.attr == metric]


def _literal(call: ast.Call, position: int) -> str | None:
    arg = call.args[position] if len(call.args) > position else None
    return arg.value if isinstance(arg, ast.Constant) else None


def label_values(metric: str, position: int) -> tuple[str, ...]:
    """The string literals the operator passes as label `position` of `metrics.<metric>`."""
    return tuple(sorted({v for c in _label_calls(metric) if (v := _literal(c, position))}))


def webhook_names() -> tuple[str, ...]:
    """The webhooks the admission server serves and counts (its `webhook` label)."""
    from yolofit.operator.webhooks import HANDLERS

    return tuple(sorted(HANDLERS))


ADMISSION_RESULTS = label_values("ADMISSIONS", 0)
WEBHOOK_RESULTS = label_values("WEBHOOK_REQUESTS", 1)
WEBHOOKS = webhook_names()
TRACE_RESULTS = label_values("TRACES", 0)
# Results admitted to a class carry it; the others are written with gpu_class "".
CLASSLESS_RESULTS = {_literal(c, 0) for c in _label_calls("ADMISSIONS") if _literal(c, 1) == ""}


def operator_tick(n: int) -> None:
    for result in ADMISSION_RESULTS:
        op.ADMISSIONS.labels(result, "" if result in CLASSLESS_RESULTS else GPU_CLASS,
                             NAMESPACE).inc()
    for i, phase in enumerate(PHASES):
        op.JOBS.labels(phase, NAMESPACE).set(i + 1)
    op.ADMITTED_GPUS.labels(GPU_CLASS, NAMESPACE).set(8)
    op.JOB_MEMORY.labels(NAMESPACE, JOB, GPU_CLASS, "device-plugin", "requested").set(15 * GiB)
    op.JOB_MEMORY.labels(NAMESPACE, JOB, GPU_CLASS, "device-plugin", "predicted").set(12 * GiB)
    op.PLAN_SECONDS.observe(0.002 + 0.001 * (n % 3))
    op.PREDICTED_UTILISATION.labels(GPU_CLASS).observe(0.82 + 0.01 * (n % 5))
    op.ESTIMATE_ERROR.labels(GPU_CLASS).observe(0.15 - 0.02 * (n % 4))
    op.OOMS.labels(GPU_CLASS, NAMESPACE).inc()
    op.REPLANS.labels(GPU_CLASS, NAMESPACE, "OutOfMemory").inc()
    for webhook in WEBHOOKS:
        for result in WEBHOOK_RESULTS:
            op.WEBHOOK_REQUESTS.labels(webhook, result).inc()
    for result in TRACE_RESULTS:
        op.TRACES.labels(result).inc()
    op.TRACE_SECONDS.observe(20.0 + 5 * (n % 3))
    op.TRACE_PEAK_RSS.observe((1.5 + 0.25 * (n % 3)) * GiB)
    op.TRACE_QUEUE.labels(NAMESPACE).set(n % 4)


def trainer_tick(rank: TrainerMetrics, n: int) -> None:
    rank.observe_step(0.4 + 0.05 * (n % 3), images=16,
                      losses={"box": 1.2 / (n + 1), "cls": 2.0 / (n + 1), "dfl": 1.1})
    rank.set_memory(MemoryPeaks(kind="cuda", peak_allocated_bytes=9 * GiB,
                                peak_reserved_bytes=10 * GiB, device_total_bytes=11 * GiB,
                                host_peak_rss_bytes=3 * GiB))
    rank.estimated.set(12 * GiB)
    rank.epoch.set(1 + n // 60)


def main(argv: list[str]) -> int:
    operator_port, *trainer_ports = (int(a) for a in argv)
    start_http_server(operator_port, addr="127.0.0.1", registry=op.REGISTRY)
    ranks = [TrainerMetrics(NAMESPACE, JOB, rank, GPU_CLASS) for rank in range(len(trainer_ports))]
    for rank, port in zip(ranks, trainer_ports, strict=True):
        rank.serve(port, addr="127.0.0.1")
    n = 0
    operator_tick(n)
    for rank in ranks:
        trainer_tick(rank, n)
    print("serving", flush=True)
    while True:
        time.sleep(1.0)
        n += 1
        operator_tick(n)
        for rank in ranks:
            trainer_tick(rank, n)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
