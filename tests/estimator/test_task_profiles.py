"""Shipped profiles of every task: `yolofit estimate`/`plan` answer for yolo11s-seg, -pose,
-obb and -cls with the task in --json, and a segment estimate carries its mask terms.

Pure (shipped profiles, no tracing). The mask terms are counted independently of the trace
from the shapes Ultralytics' segment head and loss use at imgsz 640 (mask_ratio 4, 32
prototypes): per sample the prototype output (32 x 160 x 160, fp16 under AMP) and the fp32
overlap mask the loss makes (160 x 160 x 4 B); per object of a sample at least one
foreground anchor's fp32 predicted-mask loss map (160 x 160 x 4 B).
"""

from __future__ import annotations

import json

import pytest

import yolofit.cli
from yolofit.estimator.gpu import get_gpu_class
from yolofit.estimator.profile import ProfileKey, ProfileStore, estimate, resolve_model

STORE = ProfileStore(cache_dir="/nonexistent")
MODELS = {"segment": "yolo11s-seg", "pose": "yolo11s-pose", "obb": "yolo11s-obb",
          "classify": "yolo11s-cls"}


def _profile(model: str, imgsz: int = 640):  # type: ignore[no-untyped-def]
    ref = resolve_model(model)
    profile = STORE.get(ProfileKey(ref.name, ref.config_hash, imgsz, "fp16", "AdamW", 80, False))
    assert profile is not None, f"no shipped profile for {model}"
    return profile


@pytest.mark.parametrize("task", sorted(MODELS))
def test_shipped_profile_per_task(task: str) -> None:
    assert _profile(MODELS[task]).task == task
    assert _profile(MODELS[task].replace("11s", "11n")).task == task
    assert _profile("yolo11s").task == "detect"


@pytest.mark.parametrize(("batch", "objects"), [(8, 2), (16, 6), (32, 20)])
def test_segment_exceeds_detection_by_the_mask_terms(batch: int, objects: int) -> None:
    gpu = get_gpu_class("l4")
    seg, det = _profile("yolo11s-seg"), _profile("yolo11s")

    def extra(o: int) -> int:  # segment minus detection, same scale, batch and density
        return (estimate(seg, batch, o, gpu).peak_allocated_bytes
                - estimate(det, batch, o, gpu).peak_allocated_bytes)

    side = 640 // 4
    per_sample = 32 * side * side * 2 + side * side * 4
    per_object = side * side * 4
    assert extra(0) >= batch * per_sample, extra(0)  # prototypes and masks
    # each further object of a sample (x4: mosaic) adds its mask loss maps
    assert extra(objects) - extra(0) >= batch * 4 * objects * per_object


@pytest.fixture()
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(yolofit.cli, "_COMMAND_MODULES", ("yolofit.estimator.cli",))
    monkeypatch.setenv("YOLOFIT_PROFILE_DIR", str(tmp_path))


@pytest.mark.parametrize("task", sorted(MODELS))
def test_estimate_and_plan_json_carry_the_task(task: str, cli: None,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    model = MODELS[task]
    assert yolofit.cli.main(["estimate", "--model", model, "--batch", "8", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["task"] == task and doc["peak_reserved_bytes"] > 0
    code = yolofit.cli.main(["plan", "--model", model, "--gpu-class", "l4", "--amp", "fp16",
                             "--json"])
    plan = json.loads(capsys.readouterr().out)
    assert code == 0 and plan["fits"] and plan["task"] == task and plan["batch_per_gpu"] >= 1


def test_task_that_disagrees_with_the_model_is_one_line(cli: None,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    code = yolofit.cli.main(["estimate", "--model", "yolo11s-cls", "--task", "detect"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and err.count("\n") == 0 and "--task" in err and "classify" in err
