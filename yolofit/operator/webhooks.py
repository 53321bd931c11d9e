"""Admission webhooks for YOLOTrainingJob: thin shells around `admission.decide`.

Mutating (CREATE, and UPDATE when a plan input changed) writes the plan into
`spec.plan`, so the object `kubectl apply` gets back already carries it (status cannot:
the apiserver drops status on create). Validating refuses what cannot fit or breaks the
policy, with every field error in one message. Both answer from memory (policy, fleet,
profiles, margins); a model without a profile is admitted with no plan and the operator
marks it Profiling and traces it off the request path.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any, cast

import kopf
from pydantic import ValidationError

from yolofit.operator import admission, metrics
from yolofit.operator.api import GROUP, PLAN_INPUTS, VERSION, YOLOTrainingJobSpec
from yolofit.operator.state import World


def _inputs(spec: dict[str, Any] | None) -> dict[str, Any]:
    parsed = YOLOTrainingJobSpec.model_validate(dict(spec or {}))
    return parsed.model_dump(include=set(PLAN_INPUTS) | {"args"})


def _changed(old: Any, new: Any) -> bool:
    if old is None:
        return True
    return _inputs(old.get("spec")) != _inputs(new.get("spec"))


def _field_errors(exc: ValidationError) -> str:
    return "; ".join(".".join(["spec", *map(str, e["loc"])]) + f": {e['msg']}"
                     for e in exc.errors())


def _decide(world: World, body: Any) -> admission.Decision:
    meta = body.get("metadata", {})
    spec = YOLOTrainingJobSpec.model_validate(dict(body.get("spec") or {}))
    started = time.perf_counter()
    d = admission.decide(meta.get("name", ""), meta.get("namespace", ""), spec, world.policy,
                         world.classes, world.store, world.margin_values())
    metrics.PLAN_SECONDS.observe(time.perf_counter() - started)
    return d


def mutate(world: World, body: Any, old: Any, new: Any, patch: Any, operation: str) -> None:
    """Write the plan into spec.plan; never refuses (the validating webhook does)."""
    if operation == "UPDATE" and not _changed(old, new):
        return
    try:
        d = _decide(world, body)
    except ValidationError:
        return  # the validating webhook names the fields
    if d.plan is not None:
        patch.spec["plan"] = d.plan.wire()
    elif (body.get("spec") or {}).get("plan") is not None:
        patch.spec["plan"] = None  # user-written or stale: admission owns it


def validate(world: World, body: Any, old: Any, new: Any, operation: str) -> None:
    """Raise kopf.AdmissionError naming every field and number that makes the job unfit."""
    if operation == "UPDATE":
        if not _changed(old, new):
            return
        if (old.get("status") or {}).get("admitted"):
            raise kopf.AdmissionError("spec: the job is admitted; its model, data shape, GPUs "
                                      "and arguments cannot change. Delete and re-create it.",
                                      code=422)
    try:
        d = _decide(world, body)
    except ValidationError as exc:
        raise kopf.AdmissionError(_field_errors(exc), code=422) from exc
    if d.refused:
        ns = body.get("metadata", {}).get("namespace", "")
        metrics.ADMISSIONS.labels("rejected", "", ns).inc()
        raise kopf.AdmissionError("; ".join(d.errors), code=422)


@contextmanager
def counted(webhook: str) -> Iterator[None]:
    """Count a review as allowed, denied (AdmissionError) or error (anything else: a bug,
    which the WebhookFailing alert watches for)."""
    try:
        yield
    except kopf.AdmissionError:
        metrics.WEBHOOK_REQUESTS.labels(webhook, "denied").inc()
        raise
    except Exception:
        metrics.WEBHOOK_REQUESTS.labels(webhook, "error").inc()
        raise
    metrics.WEBHOOK_REQUESTS.labels(webhook, "allowed").inc()


def register(registry: kopf.OperatorRegistry, world: World) -> None:
    resource = (GROUP, VERSION, "yolotrainingjobs")

    # async: kopf runs sync handlers in a thread pool; these are pure and sub-millisecond,
    # so running them on the loop saves the executor hop and GIL ping-pong per review.
    async def on_mutate(body: Any, old: Any, new: Any, patch: kopf.Patch, operation: str,
                  **_: Any) -> None:
        with counted("mutate"):
            mutate(world, body, old, new, patch, operation)

    async def on_validate(body: Any, old: Any, new: Any, operation: str, **_: Any) -> None:
        with counted("validate"):
            validate(world, body, old, new, operation)

    kopf.on.mutate(*resource, id="plan", operations=["CREATE", "UPDATE"],
                   registry=registry)(cast(Any, on_mutate))
    kopf.on.validate(*resource, id="fit", operations=["CREATE", "UPDATE"],
                     registry=registry)(cast(Any, on_validate))


LATENCIES: deque[float] = deque(maxlen=100_000)  # seconds per admission review, newest last


def latency_summary() -> dict[str, Any]:
    """p50/p90/p99/max in milliseconds of the recent admission reviews' handling and of the
    event loop's lag (the benchmark reads it from the health port's /debug/webhook-latency)."""
    return {**_summary(LATENCIES), "loop_lag": _summary(LOOP_LAG)}


LOOP_LAG: deque[float] = deque(maxlen=100_000)  # seconds an 0.05 s sleep overshot


async def watch_loop_lag(interval: float = 0.05) -> None:
    """How late the event loop runs a due callback: the wait an admission request has on
    top of its handling time (it shares the loop with kopf's watches and reconciles)."""
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        await asyncio.sleep(interval)
        LOOP_LAG.append(max(loop.time() - started - interval, 0.0))


def _summary(values: deque[float]) -> dict[str, float]:
    data = sorted(values)
    if not data:
        return {"count": 0}

    def q(p: float) -> float:
        return round(data[min(len(data) - 1, int(p * len(data)))] * 1000, 3)
    return {"count": len(data), "p50_ms": q(0.50), "p90_ms": q(0.90), "p99_ms": q(0.99),
            "max_ms": round(data[-1] * 1000, 3)}


class TimedWebhookServer(kopf.WebhookServer):
    """kopf's server; each review's handling time (kopf + our handlers) is recorded."""

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:  # type: ignore[override]
        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                LATENCIES.append(time.perf_counter() - started)

        async for config in super().__call__(timed):
            yield config


class ServiceWebhookServer(TimedWebhookServer):
    """kopf's server, registered through a Service reference (in-cluster, the chart)
    instead of a URL."""

    def __init__(self, *, service: str, namespace: str, service_port: int = 443,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.service, self.namespace, self.service_port = service, namespace, service_port

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:  # type: ignore[override]
        async for config in super().__call__(fn):
            out: dict[str, Any] = {"service": {"namespace": self.namespace, "name": self.service,
                                               "port": self.service_port, "path": ""}}
            if "caBundle" in config:
                out["caBundle"] = config["caBundle"]
            yield out
