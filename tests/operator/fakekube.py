"""An in-memory stand-in for `yolofit.operator.kube.Kube` in reconcile unit tests (the sandbox
tests use the real apiserver). It records every request with its body - merge patches
included - so a test sees exactly what a pass wrote (`requests`, `patches(path)`), keeps
created objects (with a uid and resourceVersion, as the apiserver would), and answers GETs
from them, a discovery document and a bound-pods listing."""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Any

_serial = itertools.count(1)


@dataclass
class Request:
    method: str  # create, patch, delete, get
    path: str  # the object's path (create: collection path + "/" + name)
    body: Any = None
    query: Any = None


class FakeKube:
    def __init__(self, served: dict[str, Any] | None = None) -> None:
        self.requests: list[Request] = []
        self.objects: dict[str, Any] = {}
        self.served = dict(served or {})  # path -> discovery document
        self.bound_pods: list[dict[str, Any]] = []  # what GET /api/v1/pods returns

    # --- what a test reads ---------------------------------------------------------------

    @property
    def calls(self) -> list[tuple[str, str]]:
        return [(r.method, r.path) for r in self.requests if r.method != "get"]

    def patches(self, path: str) -> list[Any]:
        return [r.body for r in self.requests if r.method == "patch" and r.path == path]

    def created(self) -> list[str]:
        return [r.path.rsplit("/", 1)[1] for r in self.requests if r.method == "create"]

    # --- the Kube surface the reconciler uses ----------------------------------------------

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        key = f"{path}/{body['metadata']['name']}"
        self.requests.append(Request("create", key, copy.deepcopy(body)))
        if key in self.objects:
            return None  # 409 AlreadyExists
        obj = copy.deepcopy(body)
        obj["metadata"].setdefault("uid", f"uid-{next(_serial)}")
        obj["metadata"]["resourceVersion"] = str(next(_serial))
        self.objects[key] = obj
        return copy.deepcopy(obj)

    async def merge_patch(self, path: str, patch: dict[str, Any]) -> Any:
        self.requests.append(Request("patch", path, copy.deepcopy(patch)))
        obj = self.objects.get(path)
        if obj is None:
            return None
        _merge(obj, patch)
        obj["metadata"]["resourceVersion"] = str(next(_serial))
        return copy.deepcopy(obj)

    async def delete(self, path: str, uid: str = "") -> bool:
        """As kube.Kube.delete: with `uid`, a newer object of the name (409) is left alone."""
        self.requests.append(Request("delete", path))
        obj = self.objects.get(path)
        if obj is not None and uid and obj["metadata"].get("uid") != uid:
            return False
        return self.objects.pop(path, None) is not None

    async def get(self, path: str, query: Any = None, accept: str = "") -> Any:
        self.requests.append(Request("get", path, query=query))
        if path in self.served:
            return self.served[path]
        if path == "/api/v1/pods":
            return {"items": copy.deepcopy(self.bound_pods)}
        obj = self.objects.get(path)
        return copy.deepcopy(obj) if obj is not None else None


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """RFC 7386 JSON merge patch."""
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        elif isinstance(v, dict) and isinstance(target.get(k), dict):
            _merge(target[k], v)
        else:
            target[k] = copy.deepcopy(v)


POD_GROUPS_SERVED = {"/apis/scheduling.k8s.io/v1beta1": {
    "kind": "APIResourceList", "groupVersion": "scheduling.k8s.io/v1beta1",
    "resources": [{"name": "podgroups", "namespaced": True, "kind": "PodGroup"},
                  {"name": "podgroups/status", "namespaced": True, "kind": "PodGroup"}]}}
