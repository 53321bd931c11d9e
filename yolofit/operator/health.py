"""Liveness and readiness endpoints: /healthz answers while the event loop runs; /readyz
once the operator has primed its caches (and so can answer admission from memory).
/debug/webhook-latency gives recent admission review latencies (for the benchmark)."""

from __future__ import annotations

from aiohttp import web

from yolofit.operator.state import World


async def start_health(port: int, world: World, addr: str = "0.0.0.0") -> web.AppRunner:
    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        return web.Response(text="ready") if world.ready else web.Response(
            status=503, text="starting")

    async def latency(_: web.Request) -> web.Response:
        from yolofit.operator.admission_server import latency_summary

        return web.json_response(latency_summary())

    app = web.Application()
    app.router.add_get("/debug/webhook-latency", latency)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, addr, port).start()
    return runner
