"""Single-rank training in the test process: the activation-checkpointing hook and the pure
argument mapping (CUDA cases included, which need no GPU to check)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from yolofit.trainer.config import TrainConfig, TrainerSettings
from yolofit.trainer.ddp import Topology, resolve
from yolofit.trainer.summary import Summary


def _cfg(**kw: object) -> TrainConfig:
    return TrainConfig(
        **{
            "model": "yolov8n",
            "data": "/d.yaml",
            "batch_per_gpu": 4,
            "nbs": 64,
            "accumulate": 8,
            **kw,
        }
    )


@pytest.mark.parametrize(
    ("device", "amp", "expected"),
    [
        (torch.device("cpu"), "fp16", (False, "cpu")),
        (torch.device("cpu"), "bf16", (False, "cpu")),
        (torch.device("cuda", 1), "fp16", (True, "1")),
        (torch.device("cuda", 0), "bf16", ("bf16", "0")),
        (torch.device("cuda", 0), "off", (False, "0")),
    ],
)
def test_ultralytics_arguments(device: torch.device, amp: str, expected: tuple) -> None:
    from yolofit.trainer.trainer import ultralytics_overrides

    topo = Topology(
        world_size=2,
        rank=0,
        local_rank=0,
        nproc_per_node=1,
        node_rank=0,
        master_addr="m",
        master_port=1,
        is_worker=True,
    )
    args = ultralytics_overrides(_cfg(amp=amp, args={"lr0": 0.02}), topo, device)
    assert (args["amp"], args["device"]) == expected
    assert args["batch"] == 8 and args["nbs"] == 64  # global batch; Ultralytics divides by world
    assert args["model"] == "yolov8n.yaml" and args["lr0"] == 0.02 and args["plots"] is False


@pytest.mark.slow  # a real (one-epoch) Ultralytics training in this process
def test_checkpointing_is_applied_to_the_model_ultralytics_trains(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ultralytics.data import utils as data_utils
    from ultralytics.utils import downloads

    from yolofit.trainer import trainer as tr

    for mod, name in (
        (downloads, "safe_download"),
        (downloads, "is_url"),
        (data_utils, "safe_download"),
    ):
        monkeypatch.setattr(mod, name, getattr(mod, name))  # undo block_downloads() afterwards
    seen: list[nn.Module] = []

    def apply_checkpointing(model: nn.Module) -> int:
        seen.append(model)
        return 7

    fake = types.ModuleType("yolofit.estimator.checkpointing")
    fake.apply_checkpointing = apply_checkpointing  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "yolofit.estimator.checkpointing", fake)
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.setenv(
        "YOLOFIT_TRAIN_CONFIG",
        json.dumps(
            {
                "model": "yolov8n.yaml",
                "data": str(dataset),
                "imgsz": 64,
                "batch_per_gpu": 4,
                "nbs": 8,
                "accumulate": 2,
                "checkpointing": True,
                "project": str(tmp_path),
                "name": "ckpt",
                "args": {"val": False},
            }
        ),
    )
    monkeypatch.setenv("YOLOFIT_DEVICE", "cpu")
    settings = TrainerSettings()  # type: ignore[call-arg]
    summary = Summary(rank=0)
    run = tr.train(settings, resolve(settings), summary, None)
    assert run.checkpointed_modules == 7 and len(seen) == 1
    assert type(seen[0]).__name__ == "DetectionModel"
    assert summary.steps == 2 and summary.memory_kind == "host-rss"
    report = json.loads((tmp_path / "ckpt" / "attempt-0" / "yolofit" / "rank-0.json").read_text())
    assert report["checkpointed_modules"] == 7 and report["accumulate"] == 2
