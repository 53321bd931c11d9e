"""The admission webhooks' HTTPS server, on its own thread with its own event loop.

kopf's watches, the reconciles, status writes and fleet listings all run on the operator's
event loop; a review queued behind them waits however long they take. This server never
shares that loop: it answers from an immutable `webhooks.Snapshot` that the operator
publishes by swapping one reference (`publish`), so a review reads a consistent policy,
fleet, profile store and margins without a lock and without waiting for the operator.
(Handlers still share the process's GIL; they are pure and sub-millisecond.)

Paths: /mutate and /validate (YOLOTrainingJob), /validate-policy (GPUCapacityPolicy).
The serving certificate is re-read when its files change (cert-manager rotation).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from aiohttp import web

from yolofit.operator import webhooks

log = logging.getLogger("yolofit.admission")
MAX_BODY = 4 * 1024 * 1024  # the apiserver stores objects of at most ~1.5 MiB

LATENCIES: deque[float] = deque(maxlen=100_000)  # seconds per review, newest last
LOOP_LAG: deque[float] = deque(maxlen=100_000)  # seconds the admission loop ran late


class AdmissionServer:
    def __init__(self, snapshot: webhooks.Snapshot, addr: str, port: int, certfile: Path,
                 keyfile: Path, handler: Any = None) -> None:
        self.snapshot = snapshot
        self.addr, self.port = addr, port
        self.certfile, self.keyfile = Path(certfile), Path(keyfile)
        self.handler = handler or webhooks.respond  # (kind, review, snapshot) -> (status, body)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.started = threading.Event()
        self.error: BaseException | None = None
        self._stop: asyncio.Event | None = None

    def publish(self, snapshot: webhooks.Snapshot) -> None:
        """Swap in a new snapshot (one reference assignment: atomic under the GIL)."""
        self.snapshot = snapshot

    # --- lifecycle ------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        self.thread = threading.Thread(target=self._run, name="admission", daemon=True)
        self.thread.start()
        if not self.started.wait(timeout):
            raise RuntimeError("admission server did not start")
        if self.error is not None:
            raise RuntimeError(f"admission server failed: {self.error}") from self.error

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        if self.thread is not None:
            self.thread.join(timeout=10)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self.error = exc
            self.started.set()

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.certfile, self.keyfile)
        app = web.Application(client_max_size=MAX_BODY)
        for kind in webhooks.HANDLERS:
            app.router.add_post(f"/{kind}", self._review(kind))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, self.addr, self.port, ssl_context=context).start()
        tasks = [asyncio.create_task(watch_loop_lag()),
                 asyncio.create_task(self._reload_certs(context))]
        self.started.set()
        log.info("admission webhooks serving on https://%s:%d", self.addr, self.port)
        try:
            await self._stop.wait()
        finally:
            for t in tasks:
                t.cancel()
            await runner.cleanup()

    def _review(self, kind: str) -> Any:
        async def handle(request: web.Request) -> web.Response:
            started = time.perf_counter()
            try:
                try:
                    review = json.loads(await request.read())
                except (ValueError, RecursionError):
                    return web.json_response({"error": "body is not JSON"}, status=400)
                except web.HTTPRequestEntityTooLarge:
                    return web.json_response({"error": f"body over {MAX_BODY} bytes"},
                                             status=413)
                status, body = self.handler(kind, review, self.snapshot)
                return web.json_response(body, status=status)
            finally:
                LATENCIES.append(time.perf_counter() - started)
        return handle

    async def _reload_certs(self, context: ssl.SSLContext, every: float = 30.0) -> None:
        def stamp() -> tuple[float, float]:
            return (self.certfile.stat().st_mtime, self.keyfile.stat().st_mtime)
        seen = stamp()
        while True:
            await asyncio.sleep(every)
            try:
                now = stamp()
                if now != seen:
                    context.load_cert_chain(self.certfile, self.keyfile)
                    seen = now
                    log.info("admission webhooks: reloaded the serving certificate")
            except (OSError, ssl.SSLError) as exc:
                log.warning("admission webhooks: cannot reload the certificate: %s", exc)


async def watch_loop_lag(interval: float = 0.05) -> None:
    """How late the admission loop runs a due callback: the wait a review has on top of its
    handling time."""
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        await asyncio.sleep(interval)
        LOOP_LAG.append(max(loop.time() - started - interval, 0.0))


def latency_summary() -> dict[str, Any]:
    """p50/p90/p99/max in ms of recent reviews' handling and of the admission loop's lag
    (the benchmark reads it from the health port's /debug/webhook-latency)."""
    return {**_summary(LATENCIES), "loop_lag": _summary(LOOP_LAG)}


def _summary(values: deque[float]) -> dict[str, Any]:
    data = sorted(values)
    if not data:
        return {"count": 0}

    def q(p: float) -> float:
        return round(data[min(len(data) - 1, int(p * len(data)))] * 1000, 3)
    return {"count": len(data), "p50_ms": q(0.50), "p90_ms": q(0.90), "p99_ms": q(0.99),
            "max_ms": round(data[-1] * 1000, 3)}
