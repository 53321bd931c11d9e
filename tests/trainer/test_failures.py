"""Failures end with a summary and a distinct exit code: OOM 88, missing input 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from yolofit.sandbox.localrun import wait_pods

from .launch import Job, start_ranks

pytestmark = pytest.mark.slow  # `yolofit train` subprocesses, several train until they fail


def test_missing_dataset_fails_with_exit_2_and_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "data.yaml"
    ranks = start_ranks(Job(data=missing, output=tmp_path / "runs", nodes=1), tmp_path)
    assert wait_pods(ranks, timeout=180) == [2]
    s = ranks[0].summary()
    assert s["exit_reason"] == "data-missing" and str(missing) in s["message"]
    log = ranks[0].output()
    assert str(missing) in log and "Traceback" not in log


def test_missing_image_dir_fails_with_exit_2(dataset: Path, tmp_path: Path) -> None:
    broken = tmp_path / "data.yaml"
    broken.write_text(
        f"path: {dataset.parent}\ntrain: images/train\nval: images/missing\nnames: {{0: a, 1: b}}\n"
    )
    ranks = start_ranks(Job(data=broken, output=tmp_path / "runs", nodes=1), tmp_path)
    assert wait_pods(ranks, timeout=180) == [2]
    assert str(dataset.parent / "images" / "missing") in ranks[0].summary()["message"]


def test_missing_model_file_fails_with_exit_2(dataset: Path, tmp_path: Path) -> None:
    model = str(tmp_path / "weights" / "best.pt")
    ranks = start_ranks(Job(data=dataset, output=tmp_path / "runs", nodes=1, model=model), tmp_path)
    assert wait_pods(ranks, timeout=180) == [2]
    s = ranks[0].summary()
    assert s["exit_reason"] == "data-missing" and model in s["message"]
    assert "Traceback" not in ranks[0].output()


def test_oom_on_a_single_rank_job_exits_88(dataset: Path, tmp_path: Path) -> None:
    """World size 1: Ultralytics would halve the batch and retry; the trainer must not."""
    ranks = start_ranks(
        Job(data=dataset, output=tmp_path / "runs", nodes=1, batch_per_gpu=4),
        tmp_path,
        extra_env={"YOLOFIT_INJECT_OOM_AT_STEP": "1"},
    )
    assert wait_pods(ranks, timeout=300) == [88], ranks[0].output()
    s = ranks[0].summary()
    assert s["exit_reason"] == "oom" and "out of memory" in s["message"]
    assert s["steps"] == 1  # the OOM hit the second forward pass
    assert "Reducing to batch" not in ranks[0].output()


def test_oom_on_one_rank_of_two(dataset: Path, tmp_path: Path) -> None:
    """Rank 1 runs out of memory; it exits 88, its peer fails fast instead of hanging."""
    ranks = start_ranks(
        Job(data=dataset, output=tmp_path / "runs", nodes=2),
        tmp_path,
        config_patch={"ddp_timeout_seconds": 30},
        extra_env={"YOLOFIT_INJECT_OOM_AT_STEP": "1", "YOLOFIT_INJECT_OOM_RANK": "1"},
    )
    codes = wait_pods(ranks, timeout=300)
    assert codes[1] == 88, ranks[1].output()
    assert codes[0] == 1, ranks[0].output()
    assert ranks[1].summary()["exit_reason"] == "oom"
    assert ranks[0].summary()["exit_reason"] == "error"


def test_invalid_plan_is_refused_by_field_name(dataset: Path, tmp_path: Path) -> None:
    ranks = start_ranks(
        Job(data=dataset, output=tmp_path / "runs", nodes=1), tmp_path, config_patch={"bogus": 1}
    )
    assert wait_pods(ranks, timeout=180) == [1]
    s = ranks[0].summary()
    assert s["exit_reason"] == "error" and "YOLOFIT_TRAIN_CONFIG.bogus" in s["message"]
