"""The simulated GPU fleet: a YAML file of node groups -> Node objects labelled the
way NVIDIA GPU Feature Discovery labels real GPU nodes, managed by kwok.

`fleet_nodes(fleet)` is pure (plain dicts, no API calls) so other code — the
operator's 1,000-node benchmark — can build nodes without a file; `create_nodes`
is the thin shell that posts them.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from yolofit.sandbox.errors import SandboxError

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

# kwok manages exactly the nodes carrying this annotation (see components.kwok_argv).
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_NODE_ANNOTATION_VALUE = "fake"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|Pi|M|G|T|P)?$")


def _quantity(value: str) -> str:
    if not _QUANTITY.match(value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity like '96', '500m', '1Ti'")
    return value


class MigSlice(BaseModel):
    """One MIG profile of a partitioned GPU."""

    model_config = ConfigDict(extra="forbid")

    profile: str = Field(pattern=r"^[0-9]+[cg][.0-9a-z+]*$",
                         description="MIG profile as nvidia-smi names it, e.g. 1g.10gb")
    per_gpu: int = Field(ge=1, le=7, description="Slices of this profile on each GPU")
    memory_mib: int = Field(gt=0, description="MiB of one slice as nvidia-smi mig -lgip "
                            "reports it (GFD's nvidia.com/mig-<profile>.memory)")


class MigLayout(BaseModel):
    """How every GPU of a group is partitioned, and how the device plugin publishes it."""

    model_config = ConfigDict(extra="forbid")

    strategy: Literal["mixed", "single"] = Field(description="Device plugin MIG strategy")
    config: str = Field(default="", description="nvidia.com/mig.config (mig-manager); "
                        "default all-<profile> or all-balanced")
    slices: list[MigSlice] = Field(min_length=1)

    @model_validator(mode="after")
    def _single_has_one_profile(self) -> MigLayout:
        if self.strategy == "single" and len(self.slices) != 1:
            raise ValueError("strategy single partitions every GPU the same way: give "
                             "exactly one slice profile")
        return self


class NodeGroup(BaseModel):
    """`count` identical nodes, each with `gpus` GPUs of one product."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Node name prefix; nodes are <name>-0, <name>-1, ...")
    count: int = Field(ge=0, le=100_000, description="Number of nodes in the group")
    gpu_product: str = Field(
        description="nvidia.com/gpu.product as GPU Feature Discovery reports it, e.g. Tesla-T4"
    )
    gpu_memory_mib: int = Field(gt=0, description="nvidia.com/gpu.memory: MiB per GPU")
    gpus: int = Field(ge=0, le=64, description="GPUs per node (nvidia.com/gpu allocatable)")
    gpu_family: Literal[
        "turing", "ampere", "ada-lovelace", "hopper", "blackwell", "volta", "pascal"
    ] = Field(description="nvidia.com/gpu.family")
    cpu: str = Field(default="32", description="Allocatable CPU per node")
    memory: str = Field(default="256Gi", description="Allocatable memory per node")
    pods: int = Field(default=110, ge=1, description="Allocatable pods per node")
    labels: dict[str, str] = Field(default_factory=dict, description="Extra node labels")
    mig: MigLayout | None = Field(default=None, description="Partition every GPU with MIG")
    dra: bool = Field(default=True, description="Publish the GPUs as DRA devices "
                      "(ResourceSlices of gpu.nvidia.com), as NVIDIA's DRA driver would")

    @field_validator("name")
    @classmethod
    def _name_is_dns_label(cls, v: str) -> str:
        if not _DNS_LABEL.match(v) or len(v) > 50:
            raise ValueError(f"{v!r} must be a lowercase DNS label (a-z, 0-9, '-'), <= 50 chars")
        return v

    @field_validator("gpu_product")
    @classmethod
    def _product_is_label_value(cls, v: str) -> str:
        if not re.match(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$", v):
            raise ValueError(
                f"{v!r} is not a valid label value (use '-' for spaces, e.g. NVIDIA-A100-SXM4-80GB)"
            )
        return v

    @field_validator("cpu", "memory")
    @classmethod
    def _is_quantity(cls, v: str) -> str:
        return _quantity(v)


class Fleet(BaseModel):
    """A fleet file: `nodeGroups: [...]`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    node_groups: list[NodeGroup] = Field(alias="nodeGroups", min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> Fleet:
        seen: set[str] = set()
        for g in self.node_groups:
            if g.name in seen:
                raise ValueError(f"node group name {g.name!r} appears twice")
            seen.add(g.name)
        return self


def _field_path(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_fleet(data: Any, source: str = "fleet") -> Fleet:
    """Validate plain data as a Fleet; errors name the source and the field."""
    try:
        return Fleet.model_validate(data)
    except ValidationError as exc:
        lines = [
            f"{source}: {_field_path(e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors()
        ]
        raise SandboxError("invalid fleet: " + "; ".join(lines)) from None


def load_fleet(path: Path | str) -> Fleet:
    """Read and validate a fleet YAML file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SandboxError(f"cannot read fleet file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise SandboxError(f"fleet file {path} is not valid YAML: {exc}") from None
    return parse_fleet(data, source=str(path))


def default_fleet_path() -> Path:
    from yolofit.sandbox.paths import deploy_dir

    return deploy_dir() / "fleet.yaml"


def group_nodes(group: NodeGroup) -> list[dict[str, Any]]:
    """The Node objects of one group."""
    nodes = []
    resources = {
        "cpu": group.cpu,
        "memory": group.memory,
        "pods": str(group.pods),
        "ephemeral-storage": "1Ti",
    }
    gfd = {
        "nvidia.com/gpu.product": group.gpu_product,
        "nvidia.com/gpu.memory": str(group.gpu_memory_mib),
        "nvidia.com/gpu.count": str(group.gpus),
    }
    if group.gpus:
        resources[GPU_RESOURCE] = str(group.gpus)
    if group.mig is not None and group.gpus:
        mig_labels, mig_resources = _mig(group)
        gfd.update(mig_labels)
        resources.update(mig_resources)
    for i in range(group.count):
        name = f"{group.name}-{i}"
        labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "type": "kwok",
            "nvidia.com/gpu.present": "true",
            **gfd,
            "nvidia.com/gpu.family": group.gpu_family,
            "yolofit.io/node-group": group.name,
            **group.labels,
        }
        nodes.append(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "labels": labels,
                    "annotations": {KWOK_NODE_ANNOTATION: KWOK_NODE_ANNOTATION_VALUE},
                },
                "spec": {"taints": [dict(GPU_TAINT)] if group.gpus else []},
                # kwok's node-initialize stage keeps capacity/allocatable and adds conditions.
                "status": {"capacity": dict(resources), "allocatable": dict(resources)},
            }
        )
    return nodes


def _mig(group: NodeGroup) -> tuple[dict[str, str], dict[str, str]]:
    """GFD labels and device-plugin allocatable of a group whose GPUs are all partitioned.

    mixed: one `nvidia.com/mig-<profile>` resource per profile, `.count`/`.memory` labels, and
    no whole `nvidia.com/gpu` left. single: every slice is an `nvidia.com/gpu`, and the
    product and memory labels describe the slice.
    """
    assert group.mig is not None
    layout = group.mig
    config = layout.config or (f"all-{layout.slices[0].profile}" if len(layout.slices) == 1
                               else "all-balanced")
    labels = {"nvidia.com/mig.capable": "true", "nvidia.com/mig.strategy": layout.strategy,
              "nvidia.com/mig.config": config}
    if layout.strategy == "single":
        sl = layout.slices[0]
        count = str(sl.per_gpu * group.gpus)
        labels |= {"nvidia.com/gpu.product": f"{group.gpu_product}-MIG-{sl.profile}",
                   "nvidia.com/gpu.memory": str(sl.memory_mib), "nvidia.com/gpu.count": count}
        return labels, {GPU_RESOURCE: count}
    resources = {GPU_RESOURCE: "0"}
    for sl in layout.slices:
        count = str(sl.per_gpu * group.gpus)
        labels |= {f"nvidia.com/mig-{sl.profile}.count": count,
                   f"nvidia.com/mig-{sl.profile}.memory": str(sl.memory_mib),
                   f"nvidia.com/mig-{sl.profile}.slices.gi": _gi(sl.profile)}
        resources[f"nvidia.com/mig-{sl.profile}"] = count
    return labels, resources


def _gi(profile: str) -> str:
    """GPU-instance slices of a profile: 3 for 3g.40gb and 1c.3g.20gb."""
    m = re.match(r"^(?:[0-9]+c\.)?([0-9]+)g", profile)
    return m.group(1) if m else "1"


def fleet_nodes(fleet: Fleet) -> list[dict[str, Any]]:
    """All Node objects of the fleet, as plain dicts ready to POST."""
    return [node for group in fleet.node_groups for node in group_nodes(group)]


def create_nodes(api_client: ApiClient, nodes: Iterable[dict[str, Any]], workers: int = 8) -> int:
    """Create the nodes (existing ones are left alone); return how many were created.

    Nodes, unlike most kinds, keep the status given at create (kubelets register that
    way), so capacity/allocatable arrive in one request; kwok's stages keep them.
    Requests run `workers` at a time and skip decoding the responses, which is most
    of the client's cost for a 1,000-node fleet.
    """
    from concurrent.futures import ThreadPoolExecutor

    from kubernetes.client import CoreV1Api
    from kubernetes.client.exceptions import ApiException

    core = CoreV1Api(api_client)

    def create(node: dict[str, Any]) -> int:
        try:
            core.create_node(node, _preload_content=False)  # type: ignore[arg-type]
            return 1
        except ApiException as exc:
            if exc.status != 409:
                raise
            return 0

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return sum(pool.map(create, nodes))


def wait_nodes_ready(api_client: ApiClient, names: Iterable[str], timeout: float = 60.0) -> None:
    """Wait until every named node reports Ready=True (set by kwok) and has lost the
    node.kubernetes.io/not-ready taint that admission puts on every new node (the
    controller-manager removes it once the node is Ready; until then pods without a
    toleration for it cannot schedule there)."""
    from kubernetes.client import CoreV1Api

    core = CoreV1Api(api_client)
    pending = set(names)
    deadline = time.monotonic() + timeout
    while pending:
        # Raw JSON: plain dicts instead of models whose every field may be None.
        resp: Any = core.list_node(label_selector="type=kwok", _preload_content=False)
        for node in json.loads(resp.data)["items"]:
            conds = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
            lifecycle_taints = [
                t
                for t in node["spec"].get("taints", [])
                if t["key"].startswith("node.kubernetes.io/")
            ]
            if conds.get("Ready") == "True" and not lifecycle_taints:
                pending.discard(node["metadata"]["name"])
        if not pending:
            return
        if time.monotonic() > deadline:
            shown = ", ".join(sorted(pending)[:5])
            raise SandboxError(
                f"{len(pending)} fleet nodes not Ready (or still tainted "
                f"not-ready) after {timeout:g}s, e.g. {shown}; are kwok and "
                "the controller-manager running?"
            )
        time.sleep(0.3)
