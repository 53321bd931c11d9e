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
        "NVIDIA-A100-SXM4-80GB": [8, 8, 0],  # a100-mig-0: every GPU cut into slices
        "NVIDIA-H100-80GB-HBM3": [8, 8, 0],
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


def test_mig_groups_publish_what_gfd_and_the_device_plugin_do() -> None:
    from yolofit.sandbox.fleet import NodeGroup, group_nodes

    mixed = NodeGroup.model_validate({**T4, "name": "m", "count": 1, "gpus": 8,
                                      "gpu_product": "NVIDIA-A100-SXM4-80GB",
                                      "gpu_memory_mib": 81920, "gpu_family": "ampere",
                                      "mig": {"strategy": "mixed", "slices": [
                                          {"profile": "1g.10gb", "per_gpu": 7,
                                           "memory_mib": 9728}]}})
    [node] = group_nodes(mixed)
    labels, alloc = node["metadata"]["labels"], node["status"]["allocatable"]
    assert labels["nvidia.com/mig.strategy"] == "mixed"
    assert labels["nvidia.com/mig.config"] == "all-1g.10gb"
    assert labels["nvidia.com/mig-1g.10gb.count"] == "56"
    assert labels["nvidia.com/mig-1g.10gb.memory"] == "9728"
    assert alloc["nvidia.com/mig-1g.10gb"] == "56" and alloc["nvidia.com/gpu"] == "0"
    single = mixed.model_copy(update={"mig": mixed.mig.model_copy(  # type: ignore[union-attr]
        update={"strategy": "single"})})
    [node] = group_nodes(single)
    labels, alloc = node["metadata"]["labels"], node["status"]["allocatable"]
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB-MIG-1g.10gb"
    assert labels["nvidia.com/gpu.memory"] == "9728" and alloc["nvidia.com/gpu"] == "56"


def test_single_strategy_needs_one_profile() -> None:
    bad = {"nodeGroups": [{**T4, "mig": {"strategy": "single", "slices": [
        {"profile": "1g.10gb", "per_gpu": 3, "memory_mib": 9728},
        {"profile": "2g.20gb", "per_gpu": 2, "memory_mib": 19968}]}}]}
    with pytest.raises(SandboxError, match="exactly one slice profile"):
        parse_fleet(bad)


def test_dra_slices_carry_memory_capacity_per_device() -> None:
    from yolofit.sandbox import dra

    fleet = load_fleet(default_fleet_path())
    slices = {s["spec"]["nodeName"]: s for s in dra.resource_slices(fleet)}
    assert "h200-0" not in slices  # dra: false
    t4 = slices["t4-0"]["spec"]
    assert t4["driver"] == "gpu.nvidia.com" and t4["pool"]["name"] == "t4-0"
    assert [d["capacity"]["memory"]["value"] for d in t4["devices"]] == ["15360Mi"] * 4
    assert t4["devices"][0]["attributes"]["type"] == {"string": "gpu"}
    mig = slices["h100-mig-0"]["spec"]["devices"]
    assert len(mig) == 8 * 4 and {d["attributes"]["type"]["string"] for d in mig} == {"mig"}
    assert {d["capacity"]["memory"]["value"] for d in mig} == {"9984Mi", "20096Mi", "40448Mi"}
    assert len({d["name"] for d in mig}) == len(mig)
    assert [c["metadata"]["name"] for c in dra.device_classes()] == ["gpu.nvidia.com",
                                                                      "mig.nvidia.com"]
