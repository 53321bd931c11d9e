"""The API client's own contract (yolofit/operator/kube.py), against a real local HTTP server
(aiohttp) answering as the apiserver does: metav1.Status bodies, Retry-After on 429, slow
answers. Which errors are permanent (raised at once, the API's message kept), which are
transient (retried with capped backoff, then raised as transient), and which are success."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import kubernetes
import pytest
from aiohttp import web

from yolofit.operator import kube

Answer = Callable[[int], web.Response]  # n-th request (0-based) -> response


def status(code: int, reason: str, message: str, retry: str | None = None) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
            "message": message, "code": code}
    headers = {"Retry-After": retry} if retry is not None else {}
    return web.Response(status=code, text=json.dumps(body), content_type="application/json",
                        headers=headers)


def ok(n: int = 0) -> web.Response:
    return web.json_response({"kind": "Pod", "metadata": {"name": "p", "uid": f"u{n}"}})


async def serve(answer: Answer, call: Callable[[kube.Kube], Any], delay: float = 0.0,
                record: list[Any] | None = None, **client: Any) -> tuple[Any, list[float]]:
    """Run `call(client)` against a server answering with `answer`; (result or the
    exception, arrival time of each request)."""
    arrivals: list[float] = []

    async def handle(request: web.Request) -> web.Response:
        arrivals.append(time.monotonic())
        raw = await request.read()
        if record is not None:
            record.append(json.loads(raw) if raw else None)
        if delay:
            await asyncio.sleep(delay)
        return answer(len(arrivals) - 1)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    cfg = kubernetes.client.Configuration()
    cfg.host = f"http://127.0.0.1:{port}"
    api = kube.Kube(cfg, **{"backoff_base": 0.01, **client})
    try:
        try:
            result = await call(api)
        except kube.ApiError as exc:
            result = exc
    finally:
        await api.close()
        await runner.cleanup()
    return result, arrivals


POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}


def create(api: kube.Kube) -> Any:
    return api.create(kube.pods_path("ns"), POD)


@pytest.mark.parametrize(("code", "reason", "message"), [
    (422, "Invalid", 'Service "yolo.v8" is invalid: metadata.name: Invalid value: "yolo.v8"'),
    (403, "Forbidden", 'pods "p" is forbidden: exceeded quota: gpu, requested: pods=1'),
    (404, "NotFound", 'namespaces "gone" not found'),
    (400, "BadRequest", "the body of the request was in an unknown format"),
])
def test_permanent_errors_are_raised_at_once_with_the_apis_message(
        code: int, reason: str, message: str) -> None:
    err, arrivals = asyncio.run(serve(lambda n: status(code, reason, message), create))
    assert isinstance(err, kube.ApiError)
    assert err.permanent and not err.transient
    assert (err.status, err.reason, err.message) == (code, reason, message)
    assert "POST /api/v1/namespaces/ns/pods" in str(err) and message in str(err)
    assert len(arrivals) == 1  # never retried


def test_409_on_create_is_already_exists_and_not_retried() -> None:
    got, arrivals = asyncio.run(serve(
        lambda n: status(409, "AlreadyExists", 'pods "p" already exists'), create))
    assert got is None and len(arrivals) == 1


def test_404_on_get_and_delete_is_absence_not_an_error() -> None:
    def answer(n: int) -> web.Response:
        return status(404, "NotFound", 'pods "p" not found')

    async def both(api: kube.Kube) -> Any:
        return (await api.get(kube.pods_path("ns", "p")),
                await api.delete(kube.pods_path("ns", "p")))

    got, arrivals = asyncio.run(serve(answer, both))
    assert got == (None, False) and len(arrivals) == 2


def test_429_waits_as_long_as_retry_after_says_then_succeeds() -> None:
    def answer(n: int) -> web.Response:
        return status(429, "TooManyRequests", "slow down", retry="1") if n == 0 else ok(n)

    got, arrivals = asyncio.run(serve(answer, create))
    assert got["metadata"]["uid"] == "u1" and len(arrivals) == 2
    # A lower bound only (a loaded machine can only make the gap longer): the client's own
    # backoff here is 0.01 s, so a gap of about a second is the server's Retry-After.
    assert arrivals[1] - arrivals[0] >= 0.9


def test_retry_after_is_capped() -> None:
    def answer(n: int) -> web.Response:
        return status(429, "TooManyRequests", "slow down", retry="3600") if n == 0 else ok(n)

    got, arrivals = asyncio.run(asyncio.wait_for(serve(answer, create, backoff_cap=0.05), 30))
    assert got["metadata"]["uid"] == "u1" and len(arrivals) == 2


def test_429_without_end_is_raised_as_transient_with_the_servers_hint() -> None:
    err, arrivals = asyncio.run(serve(
        lambda n: status(429, "TooManyRequests", "storage is (re)initializing", retry="0"),
        create, attempts=3))
    assert isinstance(err, kube.ApiError) and err.transient and not err.permanent
    assert err.status == 429 and err.retry_after == 0.0 and len(arrivals) == 3


@pytest.mark.parametrize("code", [500, 502, 503, 504])
def test_5xx_is_retried_with_backoff(code: int) -> None:
    def answer(n: int) -> web.Response:
        return status(code, "InternalError", "etcdserver: leader changed") if n < 2 else ok(n)

    got, arrivals = asyncio.run(serve(answer, create, attempts=4))
    assert got["metadata"]["uid"] == "u2" and len(arrivals) == 3


def test_5xx_without_end_is_raised_as_transient() -> None:
    err, arrivals = asyncio.run(serve(
        lambda n: status(500, "InternalError", "etcdserver: request timed out"), create,
        attempts=3))
    assert isinstance(err, kube.ApiError) and err.transient and err.status == 500
    assert "etcdserver: request timed out" in str(err) and len(arrivals) == 3


def test_backoff_grows_and_is_capped() -> None:
    assert [kube.backoff(i, 0.2, 1.0) for i in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    assert kube.backoff(0, 0.2, 5.0, hint=3.0) == 3.0
    assert kube.backoff(0, 0.2, 5.0, hint=60.0) == 5.0
    assert kube.retry_after("2") == 2.0 and kube.retry_after(None) is None
    assert kube.retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None


def test_a_slow_server_times_out_as_transient() -> None:
    err, arrivals = asyncio.run(serve(ok, create, delay=2.0, timeout=0.3, attempts=2))
    assert isinstance(err, kube.ApiError) and err.transient and err.status == 0
    assert "TimeoutError" in str(err) and len(arrivals) == 2


def test_a_closed_port_is_transient() -> None:
    async def call() -> Any:
        cfg = kubernetes.client.Configuration()
        cfg.host = "http://127.0.0.1:9"  # discard port: nothing listens
        api = kube.Kube(cfg, attempts=2, backoff_base=0.01)
        try:
            return await api.get("/api/v1/nodes")
        except kube.ApiError as exc:
            return exc
        finally:
            await api.close()

    err = asyncio.run(call())
    assert isinstance(err, kube.ApiError) and err.transient and err.status == 0


def test_failpoint_spec_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(kube.Failpoint.ENV, raising=False)
    assert kube.Failpoint.from_env() is None
    monkeypatch.setenv(kube.Failpoint.ENV, "POST /pods")
    with pytest.raises(ValueError, match="METHOD path-regex count"):
        kube.Failpoint.from_env()
    monkeypatch.setenv(kube.Failpoint.ENV, "post /pods 2")
    fp = kube.Failpoint.from_env()
    assert fp is not None and (fp.method.pattern, fp.left) == ("POST", 2)


def test_delete_by_uid_sends_the_precondition_and_a_409_means_gone() -> None:
    bodies: list[Any] = []

    def answer(n: int) -> web.Response:
        return status(409, "Conflict", "Precondition failed: UID in precondition: old")

    async def delete(api: kube.Kube) -> Any:
        return await api.delete(kube.pods_path("ns", "p"), uid="old")

    got, arrivals = asyncio.run(serve(answer, delete, record=bodies))
    assert got is False and len(arrivals) == 1
    assert bodies == [{"propagationPolicy": "Background", "preconditions": {"uid": "old"}}]
