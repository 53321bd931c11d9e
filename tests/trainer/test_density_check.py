"""Before its first step the trainer measures the data's densest image and its mean objects
per image and stops with exit reason data-denser (code 3) and both figures when the plan
assumed fewer objects (the densest, or the mean where the plan depends on it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from yolofit.operator import feedback, replan
from yolofit.sandbox.localrun import wait_pods
from yolofit.trainer.config import TrainConfig
from yolofit.trainer.errors import DataDenser
from yolofit.trainer.synthetic import make_synthetic_dataset
from yolofit.trainer.trainer import check_density

from .launch import Job, start_ranks

COUNTS = [1, 2, 12, 3, 1, 2]  # 4 train (densest 12, mean 4.5), 2 val


@pytest.fixture(scope="module")
def dense(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("dense"), n_train=4, n_val=2,
                                  imgsz=64, nc=2, objects=COUNTS)


def _cfg(data: Path, assumed: int | None, mean: int | None = None) -> TrainConfig:
    return TrainConfig(model="yolov8n.yaml", data=str(data), batch_per_gpu=2,
                       objects_per_image=assumed, mean_objects_per_image=mean)


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


@pytest.mark.parametrize(("assumed", "mean", "denser"), [(12, 4, True), (12, 1, True),
                                                         (12, 5, False), (12, None, False),
                                                         (11, 50, True)])
def test_check_density_mean(dense: Path, assumed: int, mean: int | None,
                            denser: bool) -> None:
    """The training split's mean (4.5, reported rounded up: 5) against the plan's; either
    stop carries both figures, so one re-plan takes both."""
    if not denser:
        assert check_density(_cfg(dense, assumed, mean), "segment") == 12
        return
    with pytest.raises(DataDenser) as exc:
        check_density(_cfg(dense, assumed, mean), "segment")
    assert (exc.value.objects_per_image, exc.value.mean_objects_per_image) == (12, 5)
    if assumed >= 12:
        assert f"hold 4.50 objects on average, the plan assumed {mean}" in str(exc.value)
        assert "spec.meanObjectsPerImage" in str(exc.value)


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


@pytest.mark.slow
def test_a_denser_mean_stops_before_the_first_step(dense: Path, tmp_path: Path) -> None:
    """The densest image is within the plan, the mean is not: the real trainer stops, and
    the operator's parser and re-plan take the measured mean (rounded up)."""
    job = Job(data=dense, output=tmp_path / "runs", nodes=1, batch_per_gpu=2, nbs=2)
    ranks = start_ranks(job, tmp_path, config_patch={"objects_per_image": 12,
                                                     "mean_objects_per_image": 3})
    assert wait_pods(ranks, timeout=300) == [3], ranks[0].output()[-2000:]
    summary = ranks[0].summary()
    assert summary["exit_reason"] == "data-denser" and summary["steps"] == 0
    assert (summary["objects_per_image"], summary["objects_per_image_mean"]) == (12, 5)
    assert "re-plan with 5" in summary["message"]
    report = feedback.parse_summary(json.dumps(summary), 0, "p")
    assert report is not None and not report.rejected
    assert (report.objects_per_image, report.objects_per_image_mean) == (12, 5)
    before = replan.Assumed(objects=12, model="yolov8n", classes=2, mean=3)
    inputs = replan.found([report], before, None, 0, "T")
    assert inputs is not None
    assert (inputs.objects_per_image, inputs.mean_objects_per_image) == (None, 5)


def _rank(rank: int, store: str, data: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        # rank 1 is given a path it cannot read: only rank 0 reads the labels
        cfg = _cfg(Path(data if rank == 0 else "/nonexistent/data.yaml"), 5, None)
        try:
            check_density(cfg, "detect", rank, 2)
            result = "passed"
        except DataDenser as exc:
            result = f"denser {exc.objects_per_image} {exc.mean_objects_per_image}"
        Path(out, f"rank{rank}").write_text(result)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_rank_0_reads_the_labels_and_every_rank_decides_from_its_figures(
        dense: Path, tmp_path: Path) -> None:
    """A gang reads its labels once (rank 0), not once per rank: rank 1, which could not
    read them itself, stops with rank 0's figures (data-denser, 12 and mean 5)."""
    import torch.multiprocessing as mp

    mp.spawn(_rank, args=(str(tmp_path / "store"), str(dense), str(tmp_path)), nprocs=2,
             join=True)
    assert [(tmp_path / f"rank{r}").read_text() for r in (0, 1)] == ["denser 12 5"] * 2
