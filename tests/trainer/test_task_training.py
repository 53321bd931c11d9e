"""Every Ultralytics task trains for real under `yolofit train`: 2 ranks over gloo on CPU,
generated data of the task's label format, the task's own Ultralytics trainer (its model,
loss and validator), started exactly as the operator's pods are."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from yolofit.sandbox.localrun import wait_pods
from yolofit.trainer.synthetic import make_synthetic_dataset

from .launch import Job, start_ranks

pytestmark = pytest.mark.slow

# task -> (model, the loss items its Ultralytics trainer logs: proof the task's loss ran)
TASKS = {
    "segment": ("yolo11n-seg", "seg_loss"),
    "pose": ("yolo11n-pose", "pose_loss"),
    "obb": ("yolo11n-obb", "angle_loss"),
    "classify": ("yolo11n-cls", "loss"),
}


@pytest.mark.parametrize("task", sorted(TASKS))
def test_task_trains_on_two_ranks(task: str, tmp_path: Path) -> None:
    model, loss_column = TASKS[task]
    data = make_synthetic_dataset(tmp_path / "data", n_train=8, n_val=4, imgsz=64, nc=2,
                                  task=task)
    job = Job(data=data, output=tmp_path / "runs", nodes=2, batch_per_gpu=2, nbs=8,
              epochs=1, model=model, task=task, name=f"tiny-{task}")
    ranks = start_ranks(job, tmp_path)
    codes = wait_pods(ranks, timeout=600)
    assert codes == [0, 0], "\n".join(r.output()[-3000:] for r in ranks)
    reports = [json.loads((job.attempt_dir() / "yolofit" / f"rank-{r}.json").read_text())
               for r in (0, 1)]
    # One model across ranks (gradients all-reduced), steps taken, loss not the zero trap.
    assert reports[0]["model"]["parameters"] == reports[1]["model"]["parameters"]
    for rep in reports:
        assert rep["steps"] == 2 and rep["world_size"] == 2
        assert all(loss > 0 for loss in rep["losses"]), rep["losses"]
    # The task's own trainer ran: its loss column is in Ultralytics' results.csv.
    header = (job.attempt_dir() / "results.csv").read_text().splitlines()[0]
    assert loss_column in header, header
    assert ranks[0].summary()["exit_reason"] == "completed"
