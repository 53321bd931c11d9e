"""DRA for the simulated fleet: the DeviceClasses and ResourceSlices NVIDIA's DRA driver
(k8s-dra-driver-gpu, driver `gpu.nvidia.com`) would publish, so the real kube-scheduler
allocates ResourceClaims against the fleet and kwok runs the pods.

Pure builders (`device_classes`, `resource_slices`) and a thin shell (`publish`). One
ResourceSlice per node, pool = node name: whole GPUs (`type: gpu`) or, for a MIG group,
its partitions (`type: mig`, with `profile` and `parentIndex`), each with a
`memory` capacity. Attribute names follow the driver: productName, architecture, brand,
cudaComputeCapability (a version), driverVersion, index, uuid, type.

A simulation, and it says so: on a real node a GPU is served by the device plugin or by
the DRA driver, not both; here the same cards are offered both ways, so a test that mixes
`nvidia.com/gpu` pods and claims on one node double-books it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from yolofit.sandbox.fleet import Fleet, NodeGroup

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

DRIVER = "gpu.nvidia.com"
API = "resource.k8s.io/v1"
DRIVER_VERSION = "580.95.5"
COMPUTE_CAPABILITY = {"pascal": "6.0.0", "volta": "7.0.0", "turing": "7.5.0", "ampere": "8.0.0",
                      "ada-lovelace": "8.9.0", "hopper": "9.0.0", "blackwell": "10.0.0"}


def device_classes() -> list[dict[str, Any]]:
    """gpu.nvidia.com (whole GPUs) and mig.nvidia.com (MIG partitions), as the driver's chart
    installs them."""
    def cls(name: str, type_: str) -> dict[str, Any]:
        expr = f'device.driver == "{DRIVER}" && device.attributes["{DRIVER}"].type == "{type_}"'
        return {"apiVersion": API, "kind": "DeviceClass", "metadata": {"name": name},
                "spec": {"selectors": [{"cel": {"expression": expr}}]}}
    return [cls("gpu.nvidia.com", "gpu"), cls("mig.nvidia.com", "mig")]


def _uuid(*parts: str) -> str:
    h = hashlib.sha1("/".join(parts).encode()).hexdigest()
    return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _attrs(group: NodeGroup, node: str, index: int, type_: str) -> dict[str, Any]:
    return {
        "type": {"string": type_},
        "productName": {"string": group.gpu_product.replace("-", " ")},
        "brand": {"string": "Nvidia"},
        "architecture": {"string": group.gpu_family.replace("-", " ").title()},
        "cudaComputeCapability": {"version": COMPUTE_CAPABILITY[group.gpu_family]},
        "driverVersion": {"version": DRIVER_VERSION},
        "index": {"int": index},
        "uuid": {"string": _uuid(node, str(index))},
    }


def node_devices(group: NodeGroup, node: str) -> list[dict[str, Any]]:
    devices = []
    for i in range(group.gpus):
        if group.mig is None:
            devices.append({"name": f"gpu-{i}", "attributes": _attrs(group, node, i, "gpu"),
                            "capacity": {"memory": {"value": f"{group.gpu_memory_mib}Mi"}}})
            continue
        for sl in group.mig.slices:
            for j in range(sl.per_gpu):
                attrs = _attrs(group, node, i, "mig")
                attrs["uuid"] = {"string": "MIG-" + _uuid(node, str(i), sl.profile, str(j))[4:]}
                attrs["profile"] = {"string": sl.profile}
                attrs["parentIndex"] = {"int": i}
                name = f"gpu-{i}-mig-{re.sub(r'[^a-z0-9]+', '', sl.profile)}-{j}"
                devices.append({"name": name, "attributes": attrs,
                                "capacity": {"memory": {"value": f"{sl.memory_mib}Mi"}}})
    return devices


def resource_slices(fleet: Fleet) -> list[dict[str, Any]]:
    slices = []
    for group in fleet.node_groups:
        if not group.dra or not group.gpus:
            continue
        for n in range(group.count):
            node = f"{group.name}-{n}"
            slices.append({
                "apiVersion": API, "kind": "ResourceSlice",
                "metadata": {"name": f"{node}-{DRIVER}"},
                "spec": {"driver": DRIVER, "nodeName": node,
                         "pool": {"name": node, "generation": 1, "resourceSliceCount": 1},
                         "devices": node_devices(group, node)},
            })
    return slices


def publish(api_client: ApiClient, objects: Iterable[dict[str, Any]]) -> int:
    """Create the objects (cluster-scoped); existing ones are left alone."""
    from kubernetes.client import ApiException, ResourceV1Api

    api = ResourceV1Api(api_client)
    created = 0
    for obj in objects:
        fn: Any = (api.create_device_class if obj["kind"] == "DeviceClass"
                   else api.create_resource_slice)
        try:
            fn(obj, _preload_content=False)
            created += 1
        except ApiException as exc:
            if exc.status != 409:
                raise
    return created
