"""The operator's only door to the Kubernetes API (besides kopf's own watches).

An asyncio client (aiohttp, which kopf already uses) with the credentials the official
client's config loaders find (kubeconfig or in-cluster service account, token refresh
included). No threads: the admission webhooks share this event loop, and a pool of
threads parsing JSON would make them wait for the GIL. Objects go in and come out as plain
dicts. AlreadyExists on create and NotFound on delete/get are success: reconciles are
idempotent.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Any, cast

import aiohttp
import kubernetes

from yolofit.operator.api import GROUP, VERSION

JOBS = "yolotrainingjobs"
POLICIES = "gpucapacitypolicies"


class ApiError(Exception):
    def __init__(self, status: int, method: str, path: str, text: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {text[:500]}")
        self.status = status


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
    def __init__(self, cfg: kubernetes.client.Configuration, concurrency: int = 32) -> None:
        self.cfg = cfg
        self.host = cfg.host.rstrip("/")
        self.concurrency = concurrency
        self._session: aiohttp.ClientSession | None = None

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
                                                  timeout=aiohttp.ClientTimeout(total=60))
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
        for attempt in range(3):
            try:
                async with self.session.request(method, self.host + path, params=query or [],
                                                data=data, headers=headers) as resp:
                    text = await resp.text()
                    if (resp.status == 429 or resp.status >= 500) and attempt < 2:
                        await asyncio.sleep(0.2 * (attempt + 1))
                        continue
                    if not 200 <= resp.status <= 299:
                        raise ApiError(resp.status, method, path, text)
                    return json.loads(text) if text else None
            except (TimeoutError, aiohttp.ClientConnectionError):
                if attempt == 2:
                    raise
                await asyncio.sleep(0.2 * (attempt + 1))
        raise ApiError(503, method, path, "retries exhausted")

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """POST; None when it already exists."""
        try:
            return await self.call("POST", path, body)  # type: ignore[no-any-return]
        except ApiError as exc:
            if exc.status == 409:
                return None
            raise

    async def delete(self, path: str) -> bool:
        try:
            await self.call("DELETE", path, {"propagationPolicy": "Background"})
            return True
        except ApiError as exc:
            if exc.status == 404:
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
