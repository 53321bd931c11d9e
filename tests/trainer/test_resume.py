"""Relaunches resume, for real: two DDP ranks over gloo on CPU, started as the operator's pods.

- An injected OOM (rank 1, mid-epoch) is re-planned by the operator's own `next_plan`; attempt
  1 resumes from attempt 0's last.pt with the smaller batch and the larger accumulation, does
  not train finished epochs again, and leaves attempt 0's files as they were.
- Both ranks killed with SIGKILL mid-epoch (a lost node: no summary, no cleanup); the gang's
  next attempt resumes at the epoch after the last checkpoint.
- `resume.find` skips a last.pt cut short by a kill and takes the attempt before it.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from yolofit.operator import feedback
from yolofit.operator.status import PodView, summarize
from yolofit.sandbox.localrun import LocalPod, wait_pods
from yolofit.trainer import resume

from .launch import Job, start_ranks

EPOCHS = 3
STEPS_PER_EPOCH = 2  # 8 images / (2 per rank x 2 ranks)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _reports(job: Job, attempt: int) -> list[dict[str, Any]]:
    d = job.attempt_dir(attempt) / "yolofit"
    return [json.loads((d / f"rank-{r}.json").read_text()) for r in range(job.nodes)]


def _epochs_in_csv(path: Path) -> list[int]:
    rows = path.read_text().strip().splitlines()[1:]
    return [int(float(row.split(",")[0])) for row in rows]


def _log(ranks: list[LocalPod]) -> str:
    return "\n".join(r.output()[-3000:] for r in ranks)


@pytest.mark.slow
def test_oom_replan_resumes_with_the_smaller_batch(dataset: Path, tmp_path: Path) -> None:
    job = Job(data=dataset, output=tmp_path / "runs", nodes=2, batch_per_gpu=2, nbs=8,
              epochs=EPOCHS)
    # Attempt 0: rank 1 runs out of memory in the second step of epoch 2 (0-based step 3).
    ranks = start_ranks(job, tmp_path, config_patch={"ddp_timeout_seconds": 30},
                        extra_env={"YOLOFIT_INJECT_OOM_AT_STEP": str(STEPS_PER_EPOCH + 1),
                                   "YOLOFIT_INJECT_OOM_RANK": "1"})
    assert wait_pods(ranks, timeout=600) == [1, 88], _log(ranks)
    first = job.attempt_dir(0)
    last0, best0, csv0 = (first / "weights" / "last.pt", first / "weights" / "best.pt",
                          first / "results.csv")
    kept = {p: _sha(p) for p in (last0, best0, csv0)}
    assert _epochs_in_csv(csv0) == [1]

    # The operator's side: the OOM is read from the real summaries and re-planned.
    _, plan = job.spec_and_plan()
    views = [PodView(r.name, i, 0, "Failed", False, "n", code, r.message(), owner_uid="uid-1")
             for i, (r, code) in enumerate(zip(ranks, (1, 88), strict=True))]
    outcome = summarize(views, plan, feedback.Trust("uid-1", 0))
    assert outcome.oom and outcome.dropped == []
    [oom] = [rep for rep in outcome.reports if rep.exit_reason == "oom"]
    assert (oom.attempt, oom.epochs_done) == (0, 1)
    new = feedback.next_plan(plan, None, job.nbs, allow_checkpointing=True).plan
    assert new is not None and (new.batch_per_gpu, new.accumulate) == (1, 4)

    # Attempt 1, as the operator relaunches it: same names, new plan, attempt label 1.
    started = time.monotonic()
    ranks = start_ranks(job, tmp_path, attempt=1, plan=new)
    assert wait_pods(ranks, timeout=600) == [0, 0], _log(ranks)
    seconds = time.monotonic() - started
    reports = _reports(job, 1)
    for rep in reports:
        assert (rep["attempt"], rep["start_epoch"], rep["epochs_done"]) == (1, 1, EPOCHS)
        assert (rep["batch_per_rank"], rep["accumulate"]) == (1, 4)  # the new plan, not ckpt's
        assert rep["batch_per_rank"] * rep["world_size"] * rep["accumulate"] == job.nbs
        # Epochs 2 and 3 only, at batch 1: 4 steps each; epoch 1 was not trained again.
        assert rep["steps"] == (EPOCHS - 1) * STEPS_PER_EPOCH * 2
        assert all(loss > 0 for loss in rep["losses"])
    assert reports[0]["model"]["parameters"] == reports[1]["model"]["parameters"]
    summaries = [r.summary() for r in ranks]
    assert all(s["resumed_from"] == str(last0) and s["start_epoch"] == 1 for s in summaries)
    # Every attempt's outputs are on the volume; attempt 0's are untouched.
    assert {p: _sha(p) for p in kept} == kept
    second = job.attempt_dir(1)
    assert _epochs_in_csv(second / "results.csv") == [2, 3]
    assert (second / "weights" / "last.pt").is_file()
    assert torch.load(second / "weights" / "last.pt", weights_only=False)["epoch"] == -1
    print(f"\nresume after OOM: attempt 1 trained {EPOCHS - 1} of {EPOCHS} epochs "
          f"({reports[0]['steps']} steps per rank at batch 1) in {seconds:.0f} s; "
          f"1 epoch ({STEPS_PER_EPOCH * 2} steps per rank at batch 1) not trained again")


@pytest.mark.slow
def test_a_killed_gang_resumes_at_the_right_epoch(dataset: Path, tmp_path: Path) -> None:
    job = Job(data=dataset, output=tmp_path / "runs", nodes=2, batch_per_gpu=2, nbs=8,
              epochs=EPOCHS)
    # Attempt 0 dies in epoch 3 (0-based step 5): both ranks SIGKILLed, as on a lost node.
    kill_step = 2 * STEPS_PER_EPOCH + 1
    ranks = start_ranks(job, tmp_path, extra_env={"YOLOFIT_INJECT_KILL_AT_STEP": str(kill_step)})
    assert wait_pods(ranks, timeout=600) == [-9, -9], _log(ranks)
    assert all(r.message() == "" for r in ranks)  # SIGKILL: no summary at all
    last0 = job.attempt_dir(0) / "weights" / "last.pt"
    assert torch.load(last0, weights_only=False)["epoch"] == 1  # epochs 1 and 2 are saved

    # The failure policy's gang restart: attempt + 1, same plan.
    started = time.monotonic()
    ranks = start_ranks(job, tmp_path, attempt=1)
    assert wait_pods(ranks, timeout=600) == [0, 0], _log(ranks)
    seconds = time.monotonic() - started
    reports = _reports(job, 1)
    for rep in reports:
        assert (rep["start_epoch"], rep["epochs_done"]) == (2, EPOCHS)
        assert rep["steps"] == STEPS_PER_EPOCH  # only epoch 3
    assert reports[0]["model"]["parameters"] == reports[1]["model"]["parameters"]
    assert _epochs_in_csv(job.attempt_dir(1) / "results.csv") == [3]
    assert _epochs_in_csv(job.attempt_dir(0) / "results.csv") == [1, 2]
    s = ranks[1].summary()
    assert s["start_epoch"] == 2 and s["resumed_from"] == str(last0)
    print(f"\nresume after a kill: attempt 1 trained 1 of {EPOCHS} epochs in {seconds:.0f} s; "
          f"2 epochs ({2 * STEPS_PER_EPOCH} steps per rank) not trained again")


def test_find_skips_a_checkpoint_cut_short(tmp_path: Path) -> None:
    def save(attempt: int, data: bytes | dict[str, Any]) -> Path:
        path = resume.attempt_dir(tmp_path, "j", attempt) / "weights" / "last.pt"
        path.parent.mkdir(parents=True)
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            torch.save(data, path)
        return path

    assert resume.find(tmp_path, "j", 0) is None  # the first attempt starts fresh
    good = save(0, {"epoch": 4})
    save(2, b"PK\x03\x04 truncated by a kill")
    point = resume.find(tmp_path, "j", 3)  # attempt 1 saved nothing, attempt 2 is cut short
    assert point == resume.ResumePoint(good, 0, 4) and point.start_epoch == 5
    save(4, {"epoch": -1})  # stripped by Ultralytics at the end: every epoch is done
    done = resume.find(tmp_path, "j", 5)
    assert done is not None and done.finished
