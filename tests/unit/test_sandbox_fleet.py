"""Fleet files: parsing, errors that name the field, and the Node objects built."""

from __future__ import annotations

from pathlib import Path

import pytest

from yolofit.sandbox.errors import SandboxError
from yolofit.sandbox.fleet import (
    Fleet,
    default_fleet_path,
    fleet_nodes,
    load_fleet,
    parse_fleet,
)

T4 = {
    "name": "t4",
    "count": 2,
    "gpu_product": "Tesla-T4",
    "gpu_memory_mib": 15360,
    "gpus": 4,
    "gpu_family": "turing",
}


def test_default_fleet_has_the_advertised_nodes() -> None:
    nodes = fleet_nodes(load_fleet(default_fleet_path()))
    by_product: dict[str, list[int]] = {}
    for n in nodes:
        labels = n["metadata"]["labels"]
        by_product.setdefault(labels["nvidia.com/gpu.product"], []).append(
            int(n["status"]["allocatable"]["nvidia.com/gpu"])
        )
    assert by_product == {
        "Tesla-T4": [4] * 4,
        "NVIDIA-A100-SXM4-80GB": [8] * 2,
        "NVIDIA-H100-80GB-HBM3": [8] * 2,
        "NVIDIA-H200": [8],
    }
    memory = {
        n["metadata"]["labels"]["nvidia.com/gpu.product"]: n["metadata"]["labels"][
            "nvidia.com/gpu.memory"
        ]
        for n in nodes
    }
    assert memory == {
        "Tesla-T4": "15360",
        "NVIDIA-A100-SXM4-80GB": "81920",
        "NVIDIA-H100-80GB-HBM3": "81559",
        "NVIDIA-H200": "143771",
    }


def test_node_carries_gfd_labels_taint_and_kwok_annotation() -> None:
    node = fleet_nodes(Fleet.model_validate({"nodeGroups": [T4]}))[1]
    assert node["metadata"]["name"] == "t4-1"
    assert node["metadata"]["labels"] | {} == {
        "kubernetes.io/hostname": "t4-1",
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": "Tesla-T4",
        "nvidia.com/gpu.memory": "15360",
        "nvidia.com/gpu.count": "4",
        "nvidia.com/gpu.family": "turing",
        "yolofit.io/node-group": "t4",
    }
    assert node["metadata"]["annotations"] == {"kwok.x-k8s.io/node": "fake"}
    assert node["spec"]["taints"] == [
        {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    ]
    assert (
        node["status"]["allocatable"]
        == node["status"]["capacity"]
        == {
            "cpu": "32",
            "memory": "256Gi",
            "pods": "110",
            "ephemeral-storage": "1Ti",
            "nvidia.com/gpu": "4",
        }
    )


def test_cpu_only_group_has_no_gpu_resource_or_taint() -> None:
    node = fleet_nodes(Fleet.model_validate({"nodeGroups": [T4 | {"gpus": 0}]}))[0]
    assert "nvidia.com/gpu" not in node["status"]["allocatable"]
    assert node["spec"]["taints"] == []


def test_a_thousand_nodes_are_cheap_and_uniquely_named() -> None:
    fleet = Fleet.model_validate(
        {"nodeGroups": [T4 | {"count": 600}, T4 | {"name": "h100", "count": 400}]}
    )
    names = [n["metadata"]["name"] for n in fleet_nodes(fleet)]
    assert len(names) == len(set(names)) == 1000


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"gpu_memory_mib": None}, "nodeGroups[0].gpu_memory_mib"),
        ({"gpu_memory_mib": 0}, "nodeGroups[0].gpu_memory_mib: Input should be greater than 0"),
        ({"gpu_product": "Tesla T4"}, "nodeGroups[0].gpu_product: Value error, 'Tesla T4'"),
        ({"name": "T4_nodes"}, "nodeGroups[0].name: Value error, 'T4_nodes' must be a lowercase"),
        ({"cpu": "lots"}, "nodeGroups[0].cpu: Value error, 'lots' is not a Kubernetes quantity"),
        ({"gpu_family": "kepler"}, "nodeGroups[0].gpu_family: Input should be"),
        ({"gpus": 99}, "nodeGroups[0].gpus: Input should be less than or equal to 64"),
        ({"colour": "green"}, "nodeGroups[0].colour: Extra inputs are not permitted"),
    ],
)
def test_errors_name_the_field(change: dict[str, object], expected: str) -> None:
    group = {k: v for k, v in (T4 | change).items() if v is not None}
    with pytest.raises(SandboxError) as err:
        parse_fleet({"nodeGroups": [group]}, source="f.yaml")
    assert f"f.yaml: {expected}" in str(err.value)


def test_duplicate_group_names_and_empty_fleet_are_rejected() -> None:
    with pytest.raises(SandboxError, match="'t4' appears twice"):
        parse_fleet({"nodeGroups": [T4, T4]})
    with pytest.raises(SandboxError, match="nodeGroups: List should have at least 1 item"):
        parse_fleet({"nodeGroups": []})
    with pytest.raises(SandboxError, match=r"\(top level\): Input should be a valid dictionary"):
        parse_fleet(["not", "a", "mapping"])


def test_file_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match="cannot read fleet file .*missing.yaml"):
        load_fleet(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodeGroups: [\n")
    with pytest.raises(SandboxError, match="is not valid YAML"):
        load_fleet(bad)
