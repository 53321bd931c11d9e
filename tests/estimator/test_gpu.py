"""GPU classes from data and from GFD labels."""

from __future__ import annotations

import json

import pytest

from yolofit.estimator.gpu import DATA, from_gfd_labels, from_memory, get_gpu_class, known_classes

MiB = 2**20


def test_known_classes_and_bf16_by_arch() -> None:
    classes = known_classes()
    assert {"t4", "a100-40gb", "a100-80gb", "h100-80gb", "h200", "l4", "a10g", "rtx-3060",
            "rtx-3090", "rtx-4090"} <= set(classes)
    assert not classes["t4"].bf16
    assert all(g.bf16 for name, g in classes.items() if name != "t4")
    assert classes["h200"].memory_bytes == 143771 * MiB
    assert classes["t4"].memory_bytes == 15360 * MiB
    usable = [g.usable_bytes for g in classes.values()]
    assert usable == sorted(usable)  # smallest first
    for g in classes.values():
        assert g.usable_bytes <= g.memory_bytes
        assert 0 < g.cuda_context_bytes < 1024 * MiB


def test_every_number_is_marked_uncalibrated_with_a_source() -> None:
    data = json.loads(DATA.read_text())
    assert "uncalibrated" in data["_about"].lower() or "not calibrated" in data["_about"].lower()
    for name, spec in data["classes"].items():
        if not name.startswith("_"):
            assert spec["calibrated"] is False
    for section in ("architectures", "families", "classes"):
        assert data[section]["_source"]
    for field in ("cublas_workspace", "cudnn_workspace", "fragmentation", "nccl", "headroom"):
        assert data["defaults"][f"{field}_source"]


def test_budget_and_fragmentation_rounding() -> None:
    t4 = get_gpu_class("t4")
    assert t4.budget_bytes == int(t4.usable_bytes * 0.9)
    assert t4.with_headroom(0.2).budget_bytes == int(t4.usable_bytes * 0.8)
    assert t4.fragmentation_bytes(0) == 0
    assert t4.fragmentation_bytes(1) == 0  # 3 % of 1 byte rounds down to nothing
    assert t4.fragmentation_bytes(100 * MiB) == 4 * MiB  # 3 MiB, in whole 2 MiB blocks
    with pytest.raises(ValueError):
        t4.with_headroom(1.0)


def test_lookup_by_name_or_gfd_product() -> None:
    assert get_gpu_class("Tesla-T4").name == "t4"
    assert get_gpu_class("NVIDIA H200").name == "h200"
    with pytest.raises(KeyError):
        get_gpu_class("v100")


def test_from_gfd_labels_known_and_unknown_products() -> None:
    known = from_gfd_labels({"nvidia.com/gpu.product": "Tesla-T4",
                             "nvidia.com/gpu.memory": "15360", "nvidia.com/gpu.family": "turing"})
    assert known == get_gpu_class("t4")
    other = from_gfd_labels({"nvidia.com/gpu.product": "NVIDIA-L40S",
                             "nvidia.com/gpu.memory": "46068",
                             "nvidia.com/gpu.family": "ada-lovelace"}, headroom=0.05)
    assert other.name == "nvidia-l40s"
    assert other.memory_bytes == 46068 * MiB
    assert other.usable_bytes == int(46068 * MiB * 0.985)
    assert other.bf16 and other.arch == "sm89" and other.headroom == 0.05
    with pytest.raises(ValueError, match="gpu.memory"):
        from_gfd_labels({"nvidia.com/gpu.product": "Mystery"})


def test_from_memory_is_conservative() -> None:
    g = from_memory(15 * 2**30)
    assert g.usable_bytes == 15 * 2**30 and not g.bf16
    assert g.cuda_context_bytes == max(c.cuda_context_bytes for c in known_classes().values())
