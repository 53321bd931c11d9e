"""Two ranks over gloo on CPU, started exactly as the operator's pods are started.

Proves the trainer's central claims: both ranks end with identical weights (so gradients were
really all-reduced), the loss that was back-propagated is not zero (the trap of Ultralytics under an
external process group, see yolofit/trainer/trainer.py), and batch per rank x world x
accumulation is the plan's nominal batch. Also: nothing was downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from yolofit.sandbox.localrun import wait_pods

from .launch import Job, start_ranks

pytestmark = pytest.mark.slow  # real DDP training: ranks run as subprocesses


def test_two_ranks_train_one_model(dataset: Path, tmp_path: Path) -> None:
    job = Job(data=dataset, output=tmp_path / "runs", nodes=2, batch_per_gpu=2, nbs=8, epochs=2)
    ranks = start_ranks(job, tmp_path)
    codes = wait_pods(ranks, timeout=300)
    assert codes == [0, 0], "\n".join(r.output() for r in ranks)

    reports = [
        json.loads((job.attempt_dir() / "yolofit" / f"rank-{r}.json").read_text())
        for r in (0, 1)
    ]
    # Identical weights: parameters and EMA parameters hash the same on both ranks.
    assert reports[0]["model"]["parameters"] == reports[1]["model"]["parameters"]
    assert reports[0]["ema"]["parameters"] == reports[1]["ema"]["parameters"]
    for rep in reports:
        # 8 images / (2 per rank x 2 ranks) = 2 steps per epoch, 2 epochs.
        assert rep["steps"] == 4
        assert all(loss > 0 for loss in rep["losses"]), rep["losses"]
        assert rep["world_size"] == 2
        assert rep["batch_per_rank"] * rep["world_size"] * rep["accumulate"] == job.nbs == 8
    # Each rank trained on its own shard: per epoch, the two ranks' samplers gave disjoint
    # halves of the 8 training images, together all of them.
    shards = [rep["shards"] for rep in reports]
    assert len(shards[0]) == len(shards[1]) == 2  # epochs
    for epoch in range(2):
        mine, theirs = set(shards[0][epoch]), set(shards[1][epoch])
        assert len(mine) == len(theirs) == 4 and not mine & theirs
        assert len(mine | theirs) == 8
    assert reports[0]["losses"] != reports[1]["losses"]

    for rank, r in enumerate(ranks):
        s = r.summary()
        assert s["rank"] == rank and s["exit_reason"] == "completed" and s["steps"] == 4
        assert s["memory_kind"] == "host-rss" and s["peak_allocated_bytes"] > 50 * 2**20
        assert s["images_per_second"] > 0
    # Ultralytics' own outputs, as `yolo train` writes them (rank 0).
    run_dir = job.attempt_dir()
    assert (run_dir / "results.csv").read_text().count("\n") == 3  # header + 2 epochs
    assert (run_dir / "weights" / "last.pt").is_file()

    # Offline: no download was attempted, no font or weights landed anywhere.
    logs = ranks[0].output() + ranks[1].output()
    assert "Downloading" not in logs and "refusing to download" not in logs
    fetched = [
        p for p in tmp_path.rglob("*") if p.suffix in {".ttf", ".pt"} and "weights" not in p.parts
    ]
    assert fetched == []


def test_two_ranks_with_activation_checkpointing(dataset: Path, tmp_path: Path) -> None:
    """The plan's checkpointing lever: the estimator's wrapper, under DDP, same weights."""
    job = Job(data=dataset, output=tmp_path / "runs", nodes=2, checkpointing=True)
    ranks = start_ranks(job, tmp_path)
    assert wait_pods(ranks, timeout=300) == [0, 0], ranks[0].output() + ranks[1].output()
    reports = [
        json.loads((job.attempt_dir() / "yolofit" / f"rank-{r}.json").read_text())
        for r in (0, 1)
    ]
    assert reports[0]["checkpointed_modules"] > 5
    assert reports[0]["model"]["parameters"] == reports[1]["model"]["parameters"]
    # It really trained: 8 images / (2 per rank x 2 ranks) = 2 steps on each rank (an empty
    # loss list would make the loss check below pass vacuously).
    assert [rep["steps"] for rep in reports] == [2, 2]
    assert [len(rep["losses"]) for rep in reports] == [2, 2]
    assert all(loss > 0 for rep in reports for loss in rep["losses"])
