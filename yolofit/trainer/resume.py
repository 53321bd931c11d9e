"""Where each attempt writes, and which checkpoint a relaunch resumes from.

Layout on the job's output volume (spec.outputDir):

    <outputDir>/<job>/attempt-0/{weights/last.pt, weights/best.pt, results.csv, ...}
    <outputDir>/<job>/attempt-1/...

Every attempt (an OOM re-plan or a gang restart increments it) writes only under its own
directory, so no earlier best.pt, last.pt or results.csv is ever overwritten or appended to.
Attempt n resumes from the newest earlier attempt whose `weights/last.pt` loads: Ultralytics
saves it at the end of every epoch with the optimizer, EMA and epoch number, so finished
epochs are not trained again. A last.pt cut short by a kill (it is not written atomically)
fails to load and the attempt before it is used instead.

Rank 0 decides; in a multi-pod job the other ranks may not see rank 0's volume, so the
checkpoint's bytes are broadcast over the job's process group and every rank resumes from the
same epoch with the same optimizer state (`share`).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ATTEMPT_PREFIX = "attempt-"


def job_dir(project: str | Path, job: str) -> Path:
    return Path(project) / job


def attempt_dir(project: str | Path, job: str, attempt: int) -> Path:
    """This attempt's Ultralytics save_dir."""
    return job_dir(project, job) / f"{ATTEMPT_PREFIX}{attempt}"


@dataclass(frozen=True)
class ResumePoint:
    """The checkpoint an attempt resumes from."""

    path: Path  # last.pt of an earlier attempt (for ranks > 0: a local copy)
    attempt: int  # the attempt that wrote it
    epoch: int  # 0-based epoch it finished; training resumes at epoch + 1
    finished: bool = False  # Ultralytics stripped it: that attempt trained every epoch

    @property
    def start_epoch(self) -> int:
        return self.epoch + 1


def _load_epoch(path: Path) -> int | None:
    """The epoch a last.pt was saved at (-1 = final, stripped), None if it does not load."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - a truncated or foreign file is not a resume point
        return None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("epoch"), int):
        return None
    return int(ckpt["epoch"])


def find(project: str | Path, job: str, attempt: int) -> ResumePoint | None:
    """The newest loadable last.pt of attempts before `attempt`, or None (a fresh start)."""
    for earlier in range(attempt - 1, -1, -1):
        last = attempt_dir(project, job, earlier) / "weights" / "last.pt"
        if not last.is_file():
            continue
        epoch = _load_epoch(last)
        if epoch is None:
            print(f"yolofit train: {last} does not load (cut short?); looking further back")
            continue
        return ResumePoint(last, earlier, epoch, finished=epoch < 0)
    return None


def share(point: ResumePoint | None, rank: int, world_size: int) -> ResumePoint | None:
    """Rank 0's resume point on every rank: the checkpoint's bytes go over the process group
    (ranks in other pods may not see rank 0's volume). Collective: every rank calls it."""
    if world_size <= 1:
        return point
    import torch.distributed as dist

    payload: list[Any] = [None]
    if rank == 0 and point is not None:
        payload = [(point.attempt, point.epoch, point.finished, str(point.path),
                    point.path.read_bytes())]
    dist.broadcast_object_list(payload, src=0)
    if payload[0] is None:
        return None
    src_attempt, epoch, finished, src_path, data = payload[0]
    if rank == 0:
        return point
    local = Path(tempfile.mkdtemp(prefix="yolofit-resume-")) / Path(src_path).name
    local.write_bytes(data)
    return ResumePoint(local, src_attempt, epoch, finished)
