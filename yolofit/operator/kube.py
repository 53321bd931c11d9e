"""The operator's only door to the Kubernetes API (besides kopf's own watches).

An asyncio client (aiohttp, which kopf already uses) with the credentials the official
client's config loaders find (kubeconfig or in-cluster service account, token refresh
included). No threads: the admission webhooks share this event loop, and a pool of
threads parsing JSON would make them wait for the GIL. Objects go in and come out as plain
dicts. AlreadyExists on create and NotFound on delete/get are success: reconciles are
idempotent.

Errors come in two kinds (`ApiError.permanent`): a 4xx other than 408/409/429 is the API
refusing the request itself (invalid, forbidden, gone) and retrying cannot help, so it is
raised at once for the caller to put where the user sees it. 429 (honouring Retry-After),
408, 5xx, timeouts and dropped connections are transient: retried here with exponential
backoff under a cap, then raised as a transient ApiError for the caller to retry later.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import ssl
from typing import Any, cast

import aiohttp
import kubernetes

from yolofit.operator.api import GROUP, VERSION

JOBS = "yolotrainingjobs"
POLICIES = "gpucapacitypolicies"


TRANSIENT_STATUSES = frozenset({408, 429})


class ApiError(Exception):
    """A request the API did not accept. `status` 0: no HTTP answer (timeout, connection)."""

    def __init__(self, status: int, method: str, path: str, text: str,
                 retry_after: float | None = None) -> None:
        self.status, self.method, self.path = status, method, path
        self.retry_after = retry_after
        self.reason, self.message = _status_of(text)
        what = f"HTTP {status}" if status else "no answer"
        super().__init__(f"{method} {path}: {what}: {self.message[:500]}")

    @property
    def permanent(self) -> bool:
        """Retrying the same request cannot succeed (e.g. 422 Invalid, 403 Forbidden)."""
        return 400 <= self.status < 500 and self.status not in (409, *TRANSIENT_STATUSES)

    @property
    def transient(self) -> bool:
        return not self.permanent and self.status != 409 and not 200 <= self.status < 400


def _status_of(text: str) -> tuple[str, str]:
    """(reason, message) of a metav1.Status body; the raw text when it is not one."""
    try:
        body = json.loads(text)
    except ValueError:
        return "", text.strip()
    if isinstance(body, dict) and body.get("kind") == "Status":
        return str(body.get("reason") or ""), str(body.get("message") or text)
    return "", text.strip()


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form; the apiserver sends that)."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return max(seconds, 0.0) if seconds is not None else None


def backoff(attempt: int, base: float, cap: float, hint: float | None = None) -> float:
    """Seconds before retry `attempt` (0-based): the server's hint if it gave one, else
    base x 2^attempt; never above `cap`."""
    wait = hint if hint is not None else base * 2 ** attempt
    return min(wait, cap)


def load_config(kubeconfig: str | None) -> kubernetes.client.Configuration:
    cfg = kubernetes.client.Configuration()
    if kubeconfig:
        kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    else:
        try:
            kubernetes.config.load_incluster_config(client_configuration=cfg)
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config(client_configuration=cfg)
    return cfg


class Kube:
    def __init__(self, cfg: kubernetes.client.Configuration, concurrency: int = 32,
                 attempts: int = 4, backoff_base: float = 0.2, backoff_cap: float = 5.0,
                 timeout: float = 60.0) -> None:
        self.cfg = cfg
        self.host = cfg.host.rstrip("/")
        self.concurrency = concurrency
        self.attempts, self.backoff_base, self.backoff_cap = attempts, backoff_base, backoff_cap
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._failpoint = Failpoint.from_env()

    def _ssl(self) -> ssl.SSLContext | bool:
        if not self.cfg.verify_ssl:
            return False
        ctx = ssl.create_default_context(cafile=self.cfg.ssl_ca_cert or None)
        if self.cfg.cert_file:
            ctx.load_cert_chain(self.cfg.cert_file, self.cfg.key_file)
        return ctx

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self._ssl(), limit=self.concurrency)
            self._session = aiohttp.ClientSession(connector=connector,
                                                  timeout=aiohttp.ClientTimeout(
                                                      total=self.timeout))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def call(self, method: str, path: str, body: Any = None,
                   content_type: str = "application/json",
                   query: list[tuple[str, str]] | None = None,
                   accept: str = "application/json") -> Any:
        headers = {"Accept": accept, "Content-Type": content_type}
        # Token kubeconfigs and in-cluster service accounts: the client keeps the token under
        # "BearerToken" (older versions: "authorization"); auth_settings() covers both and
        # runs the refresh hook (projected service-account tokens rotate).
        settings = cast(dict[str, dict[str, Any]], self.cfg.auth_settings())
        for setting in settings.values():
            if setting.get("in") == "header" and setting.get("value"):
                headers[str(setting["key"]).title()] = str(setting["value"])
        data = json.dumps(body) if body is not None else None
        last: ApiError | None = None
        for attempt in range(self.attempts):
            if last is not None:
                await asyncio.sleep(backoff(attempt - 1, self.backoff_base, self.backoff_cap,
                                            last.retry_after))
            try:
                async with self.session.request(method, self.host + path, params=query or [],
                                                data=data, headers=headers) as resp:
                    text = await resp.text()
                    hint = retry_after(resp.headers.get("Retry-After"))
            except (TimeoutError, aiohttp.ClientError) as exc:
                last = ApiError(0, method, path, f"{type(exc).__name__}: {exc}".rstrip(": "))
                continue
            if self._failpoint is not None:
                self._failpoint.after(method, path)
            if 200 <= resp.status <= 299:
                return json.loads(text) if text else None
            last = ApiError(resp.status, method, path, text, hint)
            if not last.transient:
                raise last
        assert last is not None
        raise last

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """POST; None when it already exists."""
        try:
            return await self.call("POST", path, body)  # type: ignore[no-any-return]
        except ApiError as exc:
            if exc.status == 409:
                return None
            raise

    async def delete(self, path: str, uid: str = "") -> bool:
        """DELETE; False when it is gone. With `uid`, only that object: a newer one of the
        same name (409, the precondition failed) is left alone and counts as gone."""
        body: dict[str, Any] = {"propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            await self.call("DELETE", path, body)
            return True
        except ApiError as exc:
            if exc.status == 404 or (exc.status == 409 and uid):
                return False
            raise

    async def merge_patch(self, path: str, patch: dict[str, Any]) -> Any:
        return await self.call("PATCH", path, patch, "application/merge-patch+json")

    async def get(self, path: str, query: list[tuple[str, str]] | None = None,
                  accept: str = "application/json") -> Any:
        try:
            return await self.call("GET", path, query=query, accept=accept)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise


# Labels and names only: a fraction of the bytes of full Node objects (kwok's 1,000 nodes
# with conditions and images are megabytes of JSON to parse on the webhooks' event loop).
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"


def job_path(namespace: str, name: str = "", status: bool = False) -> str:
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{JOBS}"
    path = f"{base}/{name}" if name else base
    return f"{path}/status" if status else path


def policy_path(name: str = "", status: bool = False) -> str:
    path = f"/apis/{GROUP}/{VERSION}/{POLICIES}" + (f"/{name}" if name else "")
    return f"{path}/status" if status else path


def pods_path(namespace: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{namespace}/pods" + (f"/{name}" if name else "")


def services_path(namespace: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{namespace}/services" + (f"/{name}" if name else "")


def configmap_path(namespace: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{namespace}/configmaps" + (f"/{name}" if name else "")


def network_policies_path(namespace: str, name: str = "") -> str:
    return (f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies"
            + (f"/{name}" if name else ""))


def service_accounts_path(namespace: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{namespace}/serviceaccounts" + (f"/{name}" if name else "")


class Failpoint:
    """Fault injection for crash tests: `YOLOFIT_FAULT_KILL_AFTER="POST /pods 2"` SIGKILLs
    this process right after the 2nd answered request whose method matches POST and whose
    path matches `/pods` (both regexes; the request took effect, the process never saw the
    answer). Unset in production; read once per client."""

    ENV = "YOLOFIT_FAULT_KILL_AFTER"

    def __init__(self, method: str, pattern: str, count: int) -> None:
        self.method, self.pattern = re.compile(method.upper()), re.compile(pattern)
        self.left = count

    @classmethod
    def from_env(cls) -> Failpoint | None:
        spec = os.environ.get(cls.ENV, "").split()
        if not spec:
            return None
        if len(spec) != 3 or not spec[2].isdigit():
            raise ValueError(f"{cls.ENV}={' '.join(spec)!r}: expected 'METHOD path-regex count'")
        return cls(spec[0], spec[1], int(spec[2]))

    def after(self, method: str, path: str) -> None:
        if self.method.fullmatch(method.upper()) and self.pattern.search(path):
            self.left -= 1
            if self.left == 0:
                os.kill(os.getpid(), signal.SIGKILL)
