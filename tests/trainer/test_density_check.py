"""Before its first step the trainer measures the data's densest image and stops with
exit reason data-denser (code 3) and the figure when the plan assumed fewer objects."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from yolofit.operator import feedback
from yolofit.sandbox.localrun import wait_pods
from yolofit.trainer.config import TrainConfig
from yolofit.trainer.errors import DataDenser
from yolofit.trainer.synthetic import make_synthetic_dataset
from yolofit.trainer.trainer import check_density

from .launch import Job, start_ranks

COUNTS = [1, 2, 12, 3, 1, 2]  # 4 train (densest 12), 2 val


@pytest.fixture(scope="module")
def dense(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("dense"), n_train=4, n_val=2,
                                  imgsz=64, nc=2, objects=COUNTS)


def _cfg(data: Path, assumed: int | None) -> TrainConfig:
    return TrainConfig(model="yolov8n.yaml", data=str(data), batch_per_gpu=2,
                       objects_per_image=assumed)


@pytest.mark.parametrize(("assumed", "denser"), [(11, True), (12, False), (50, False),
                                                 (None, False)])
def test_check_density(dense: Path, assumed: int | None, denser: bool) -> None:
    if denser:
        with pytest.raises(DataDenser, match="holds 12 objects") as exc:
            check_density(_cfg(dense, assumed), "detect")
        assert exc.value.objects_per_image == 12
    else:
        assert check_density(_cfg(dense, assumed), "detect") in (12, None)
    assert check_density(_cfg(dense, 1), "classify") is None


@pytest.mark.slow
def test_denser_data_stops_before_the_first_step(dense: Path, tmp_path: Path) -> None:
    job = Job(data=dense, output=tmp_path / "runs", nodes=1, batch_per_gpu=2, nbs=2)
    ranks = start_ranks(job, tmp_path, config_patch={"objects_per_image": 5})
    assert wait_pods(ranks, timeout=300) == [3], ranks[0].output()[-2000:]
    summary = ranks[0].summary()
    assert summary["exit_reason"] == "data-denser" and summary["steps"] == 0
    assert summary["objects_per_image"] == 12 and "re-plan with 12" in summary["message"]
    # ... and the operator reads the figure it re-plans with (operator/replan.py)
    report = feedback.parse_summary(json.dumps(summary), 0, "p")
    assert report is not None and not report.rejected
    assert (report.exit_reason, report.objects_per_image) == ("data-denser", 12)
    assert [r.exit_reason for r in report.ranks] == ["data-denser"]
