"""A recording in-memory stand-in for the apiserver below yolofit.operator.kube.Kube: it
replaces only `Kube.call` (the transport), so Kube's own create/delete/get semantics (409 =
exists, 404 = gone) run for real. Every request is recorded with its body; objects are kept
by path (POST to a collection stores at collection/name, merge patch per RFC 7386, /status
patches the status). Faults: `fail(method, path_regex, status | "timeout" | Killed, ...)`
makes matching requests fail (status 0 = no answer, as the client reports a timeout);
`kill_after(n)` raises Killed (a BaseException, as SIGKILL: nothing catches it) right
after the n-th request took effect."""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import json
import re
from dataclasses import dataclass
from typing import Any

import kubernetes

from yolofit.operator import kube


class Killed(BaseException):
    """The operator process died here (after the request reached the apiserver)."""


@dataclass
class Fault:
    method: str
    pattern: re.Pattern[str]
    status: int
    retry_after: float | None
    times: int  # -1 = always


def merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge(out.get(k), v)
    return out


REASONS = {400: "BadRequest", 403: "Forbidden", 404: "NotFound", 409: "AlreadyExists",
           422: "Invalid", 429: "TooManyRequests", 500: "InternalError",
           503: "ServiceUnavailable"}


class RecordingApi(kube.Kube):
    def __init__(self) -> None:
        cfg = kubernetes.client.Configuration()
        cfg.host = "http://recording.invalid"
        super().__init__(cfg)
        self.objects: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, Any]] = []
        self.faults: list[Fault] = []
        self.kill_at: int | None = None
        self.dead = False
        self._uids = itertools.count(1)
        self._rv = itertools.count(1)

    # --- faults -------------------------------------------------------------------------

    def fail(self, method: str, path: str, status: int, times: int = 1,
             retry_after: float | None = None) -> None:
        self.faults.append(Fault(method, re.compile(path), status, retry_after, times))

    def kill_after(self, n: int) -> None:
        self.kill_at = n

    def restarted(self) -> None:
        """A new operator process talks to the apiserver again."""
        self.dead = False

    def _fault(self, method: str, path: str) -> kube.ApiError | None:
        for f in self.faults:
            if f.times != 0 and f.method == method and f.pattern.search(path):
                f.times -= 1
                if f.status == 0:
                    return kube.ApiError(0, method, path, "TimeoutError")
                reason = REASONS.get(f.status, "Unknown")
                name = path.rstrip("/").rsplit("/", 1)[-1]
                text = json.dumps({"kind": "Status", "reason": reason, "code": f.status,
                                   "message": f"injected {f.status} {reason} for {name}"})
                return kube.ApiError(f.status, method, path, text, f.retry_after)
        return None

    # --- the transport ------------------------------------------------------------------

    async def call(self, method: str, path: str, body: Any = None,
                   content_type: str = "application/json",
                   query: list[tuple[str, str]] | None = None,
                   accept: str = "application/json") -> Any:
        if self.dead:  # a killed process sends nothing more (no finally block gets through)
            raise Killed(f"dead: {method} {path} never sent")
        self.requests.append((method, path, copy.deepcopy(body)))
        fault = self._fault(method, path)
        if fault is not None:
            raise fault
        result = self._apply(method, path, body)
        if self.kill_at is not None and len(self.requests) >= self.kill_at:
            self.kill_at, self.dead = None, True
            raise Killed(f"killed after request {len(self.requests)}: {method} {path}")
        return result

    def _apply(self, method: str, path: str, body: Any) -> Any:
        if method == "POST":
            name = body["metadata"]["name"]
            key = f"{path}/{name}"
            if key in self.objects:
                raise kube.ApiError(409, method, path, json.dumps(
                    {"kind": "Status", "reason": "AlreadyExists", "message": "exists"}))
            obj = copy.deepcopy(body)
            obj["metadata"].setdefault("uid", f"uid-{next(self._uids)}")
            obj["metadata"]["resourceVersion"] = str(next(self._rv))
            obj["metadata"].setdefault("creationTimestamp", dt.datetime.now(dt.UTC).strftime(
                "%Y-%m-%dT%H:%M:%SZ"))
            self.objects[key] = obj
            return copy.deepcopy(obj)
        status = path.endswith("/status")
        key = path.removesuffix("/status")
        if key not in self.objects:
            if method == "GET" and not path.split("/")[-1]:
                return {"items": []}
            raise kube.ApiError(404, method, path, json.dumps(
                {"kind": "Status", "reason": "NotFound", "message": f"{key} not found"}))
        if method == "GET":
            return copy.deepcopy(self.objects[key])
        if method == "DELETE":
            want = ((body or {}).get("preconditions") or {}).get("uid")
            if want and want != self.objects[key]["metadata"].get("uid"):
                raise kube.ApiError(409, method, path, json.dumps(
                    {"kind": "Status", "reason": "Conflict", "message": "Precondition failed: "
                     f"UID in precondition: {want}, UID in object meta: "
                     f"{self.objects[key]['metadata'].get('uid')}"}))
            del self.objects[key]
            return {"kind": "Status", "status": "Success"}
        if method == "PATCH":
            obj = self.objects[key]
            patch = body if not status else {"status": body.get("status")}
            self.objects[key] = merge(obj, patch)
            self.objects[key]["metadata"]["resourceVersion"] = str(next(self._rv))
            return copy.deepcopy(self.objects[key])
        raise AssertionError(f"unexpected {method} {path}")

    # --- views --------------------------------------------------------------------------

    def pods(self, namespace: str) -> dict[str, dict[str, Any]]:
        prefix = kube.pods_path(namespace) + "/"
        return {k[len(prefix):]: v for k, v in self.objects.items() if k.startswith(prefix)}

    def sent(self, method: str, pattern: str) -> list[Any]:
        return [b for m, p, b in self.requests if m == method and re.search(pattern, p)]
