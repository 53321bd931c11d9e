"""Every shipped detection family resolves, builds offline, and traces."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("YOLO_OFFLINE", "1")

from yolofit.estimator.models import FAMILIES, build_model, resolve  # noqa: E402
from yolofit.estimator.profile import UnknownModel  # noqa: E402

ALL = [n for names in FAMILIES.values() for n in names]


@pytest.mark.parametrize("name", ALL)
def test_every_shipped_scale_resolves(name: str) -> None:
    ref = resolve(name + ".yaml")
    assert len(ref.config_hash) == 12
    assert resolve(name).config_hash == ref.config_hash  # suffix optional


def test_scales_of_a_family_hash_differently() -> None:
    hashes = {resolve(f"yolov8{s}.yaml").config_hash for s in "nsmlx"}
    assert len(hashes) == 5


def test_unknown_model_names_it_and_lists_families() -> None:
    with pytest.raises(ValueError) as info:
        resolve("yolov99z.yaml")
    text = str(info.value)
    assert isinstance(info.value, UnknownModel)
    assert "yolov99z.yaml" in text and "yolov8" in text and "yolo26" in text


def test_local_yaml_resolves(tmp_path) -> None:  # type: ignore[no-untyped-def]
    src = resolve("yolov8n.yaml").path.read_text()
    path = tmp_path / "custom.yaml"
    path.write_text(src)
    ref = resolve(str(path))
    assert ref.name == "custom"


def test_build_model_counts_match_ultralytics_published_sizes() -> None:
    # Ultralytics' model table: YOLOv8n 3.2M, YOLO11n 2.6M parameters (nc=80).
    assert round(sum(p.numel() for p in build_model("yolov8n.yaml").parameters()) / 1e6, 1) == 3.2
    assert round(sum(p.numel() for p in build_model("yolo11n.yaml").parameters()) / 1e6, 1) == 2.6


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_smallest_scale_of_each_family_traces(family: str) -> None:
    from yolofit.estimator import tracer as T

    model = build_model(FAMILIES[family][0] + ".yaml")
    result = T.trace_training_step(model, T.StepConfig(batch=1, imgsz=64, objects=2))
    r = result.replay()
    assert r.peak_allocated > r.breakdown["weights"] > 0
    # AdamW state for every trainable parameter: the whole step ran, loss included.
    assert result.analytic["optimizer_state"] >= 2 * result.trainable_params * 4
