"""The trap `yolofit train` avoids, pinned against the installed Ultralytics.

Stock DetectionTrainer in a DDP rank's env (RANK=0, LOCAL_RANK=0, WORLD_SIZE=2) on CPU, with the
gloo process group initialised outside it (here a one-member group, so the test needs no peer):
ultralytics.utils.RANK is 0 (read at import), but the trainer's world_size is 0 (counted from
device='cpu'), so `if RANK != -1: loss *= world_size` zeroes every loss it back-propagates while
the logged loss items look normal. (Without LOCAL_RANK, as Kubeflow's env has it, the stock
trainer does not even start: its sampler is not a DistributedSampler.) If a future Ultralytics
changes this, this test says so, and the overrides in yolofit/trainer/trainer.py should be
revisited.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from yolofit.sandbox.localrun import free_port

pytestmark = pytest.mark.slow  # real training with the stock Ultralytics trainer, in a subprocess

SCRIPT = """
import json, sys
import torch.distributed as dist
dist.init_process_group("gloo", init_method="tcp://127.0.0.1:" + sys.argv[3], rank=0, world_size=1)
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils import RANK
from yolofit.trainer.offline import block_downloads
block_downloads()
t = DetectionTrainer(overrides=dict(model="yolov8n.yaml", data=sys.argv[1], imgsz=64, epochs=1,
                                    batch=4, device="cpu", plots=False, val=False,
                                    project=sys.argv[2], name="stock", warmup_epochs=0))
seen = []
t.add_callback("on_train_batch_end", lambda tr: seen.append(
    (float(tr.loss), sum(float(v) for v in tr.loss_items.values()))))
t.add_callback("on_train_epoch_end", lambda tr: print(json.dumps(
    {"rank": RANK, "world_size": tr.world_size, "seen": seen}), flush=True))
t.train()
"""


def test_stock_trainer_zeroes_the_loss_under_a_pod_env(dataset: Path, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "2",
        "YOLO_OFFLINE": "1",
        "YOLO_CONFIG_DIR": str(tmp_path / "cfg"),
    }
    port = str(free_port())
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(dataset), str(tmp_path), port],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    # (It then crashes in final_eval: a DDP rank's validator asks CUDA for its device.)
    lines = [x for x in out.stdout.splitlines() if x.startswith("{")]
    assert lines, out.stderr[-3000:]
    result = json.loads(lines[-1])
    assert result["rank"] == 0 and result["world_size"] == 0
    assert result["seen"], out.stderr[-2000:]
    for backpropagated, logged in result["seen"]:
        assert backpropagated == 0.0 and logged > 0
