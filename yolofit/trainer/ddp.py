"""The DDP topology of a training pod, per-GPU worker processes, and process-group setup.

The operator gives pods Kubeflow PyTorchJob's environment. With one GPU per pod, RANK and
WORLD_SIZE are already global. With several GPUs per pod (PET_NPROC_PER_NODE > 1), RANK is the pod
index, and `yolofit train` starts one worker process per GPU, like torchrun, with the global RANK,
LOCAL_RANK and WORLD_SIZE a worker needs. Under torchrun itself LOCAL_RANK is set and nothing is
spawned.

`resolve()` is pure; `spawn_local_workers()` and `init_process_group()` are the thin shell.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import FrameType

from yolofit.trainer.config import TrainerSettings
from yolofit.trainer.summary import read_summaries, write_termination_log


class TopologyError(ValueError):
    """The pod's DDP environment is inconsistent (a bad launch, not a training failure)."""


@dataclass(frozen=True)
class Topology:
    """Where this process sits in the job (for a pod parent: where its local rank 0 sits)."""

    world_size: int
    rank: int
    local_rank: int
    nproc_per_node: int
    node_rank: int
    master_addr: str
    master_port: int
    is_worker: bool  # False: a pod process that must start nproc_per_node workers

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def worker_env(self, local_rank: int) -> dict[str, str]:
        """Environment of local worker `local_rank` (the variables torchrun would set)."""
        return {
            "RANK": str(self.node_rank * self.nproc_per_node + local_rank),
            "LOCAL_RANK": str(local_rank),
            "WORLD_SIZE": str(self.world_size),
            "LOCAL_WORLD_SIZE": str(self.nproc_per_node),
            "MASTER_ADDR": self.master_addr,
            "MASTER_PORT": str(self.master_port),
        }


def _parse_nproc(value: str | None, cuda_count: Callable[[], int]) -> int:
    if value is None or value == "":
        return 1
    if value in {"gpu", "auto"}:
        return max(cuda_count(), 1)
    try:
        n = int(value)
    except ValueError:
        raise TopologyError(
            f"PET_NPROC_PER_NODE={value!r} is not an integer, 'gpu' or 'auto'"
        ) from None
    if n < 1:
        raise TopologyError(f"PET_NPROC_PER_NODE={n} must be at least 1")
    return n


def _parse_nnodes(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(
            value.rsplit(":", 1)[-1]
        )  # torchrun's elastic 'min:max' form: the job size is max
    except ValueError:
        raise TopologyError(f"PET_NNODES={value!r} is not an integer or 'min:max'") from None


def resolve(s: TrainerSettings, cuda_count: Callable[[], int] = lambda: 0) -> Topology:
    """Derive this process's place in the job from the pod's environment (pure)."""
    nproc = _parse_nproc(s.nproc_per_node, cuda_count)
    nnodes = _parse_nnodes(s.nnodes)
    if s.local_rank is not None:  # a per-GPU worker: RANK and WORLD_SIZE are global
        world = s.world_size or 1
        rank = s.rank or 0
        local_rank, node_rank, is_worker = s.local_rank, s.node_rank or 0, True
        nproc = max(nproc, local_rank + 1)
    elif nproc == 1:
        world = s.world_size or nnodes or 1
        rank = s.rank if s.rank is not None else (s.node_rank or 0)
        local_rank, node_rank, is_worker = 0, rank, True
    else:
        if nnodes is None:
            raise TopologyError("PET_NPROC_PER_NODE > 1 needs PET_NNODES (the number of pods)")
        world = nnodes * nproc
        node_rank = s.node_rank if s.node_rank is not None else (s.rank or 0)
        if s.world_size not in (None, nnodes, world):
            raise TopologyError(
                f"WORLD_SIZE={s.world_size} is neither the pod count {nnodes} "
                f"nor pods x GPUs per pod {world}"
            )
        if not 0 <= node_rank < nnodes:
            raise TopologyError(f"PET_NODE_RANK/RANK={node_rank} is outside 0..{nnodes - 1}")
        rank, local_rank, is_worker = node_rank * nproc, 0, False
    if not 0 <= rank < world:
        raise TopologyError(f"RANK={rank} is outside 0..{world - 1} (WORLD_SIZE={world})")
    if world > 1 and (not s.master_addr or not s.master_port):
        raise TopologyError(f"WORLD_SIZE={world} needs MASTER_ADDR and MASTER_PORT (or PET_*)")
    return Topology(
        world_size=world,
        rank=rank,
        local_rank=local_rank,
        nproc_per_node=nproc,
        node_rank=node_rank,
        master_addr=s.master_addr or "127.0.0.1",
        master_port=s.master_port or 29500,
        is_worker=is_worker,
    )


def export_worker_env(topo: Topology) -> None:
    """Set RANK/LOCAL_RANK/WORLD_SIZE in os.environ before Ultralytics is imported.

    Ultralytics reads them once, at import (ultralytics.utils.RANK, LOCAL_RANK); its data samplers,
    barriers, logging and the loss scaling all key off those constants.
    """
    if "ultralytics" in sys.modules:
        from ultralytics.utils import RANK  # noqa: PLC0415 - only to diagnose a wrong import order

        expected = topo.rank if topo.distributed else -1
        if expected != RANK:
            raise RuntimeError(
                f"ultralytics was imported before the DDP environment was set "
                f"(its RANK is {RANK}, this process is rank {expected})"
            )
    os.environ.update(topo.worker_env(topo.local_rank) if topo.distributed else {"WORLD_SIZE": "1"})


def init_process_group(topo: Topology, device_type: str, timeout_s: float) -> str:
    """Join the job's process group: NCCL on CUDA, gloo on CPU. Returns the backend."""
    import torch.distributed as dist

    backend = "nccl" if device_type == "cuda" else "gloo"
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = topo.master_addr, str(topo.master_port)
    dist.init_process_group(
        backend=backend,
        init_method="env://",
        rank=topo.rank,
        world_size=topo.world_size,
        timeout=timedelta(seconds=timeout_s),
    )
    return backend


# Exit codes, most specific first: the pod reports the most telling failure of its workers
# (a SIGTERM, 143, explains the errors, 1, of the workers whose group it broke).
_EXIT_PRIORITY = (88, 2, 143, 1)


def combine_exit_codes(codes: Sequence[int]) -> int:
    for code in _EXIT_PRIORITY:
        if code in codes:
            return code
    return next((c for c in codes if c != 0), 0)


def spawn_local_workers(topo: Topology, argv: Sequence[str], termination_log: Path) -> int:
    """Run one `yolofit train` worker per local GPU; write the pod's one summary.

    The container has a single termination message (4096 bytes at most), so the pod reports
    one compact object: maxima over its ranks plus a row per rank (summary.encode).
    """
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="yolofit-ranks-") as tmp:
        logs = [Path(tmp) / f"rank-{i}.json" for i in range(topo.nproc_per_node)]
        for i, log in enumerate(logs):
            env = {**os.environ, **topo.worker_env(i), "YOLOFIT_TERMINATION_LOG": str(log)}
            procs.append(subprocess.Popen(list(argv), env=env))

        def forward(signum: int, _frame: FrameType | None) -> None:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signum)

        signal.signal(signal.SIGTERM, forward)
        codes = [p.wait() for p in procs]
        summaries = read_summaries(logs)
        if summaries:
            write_termination_log(summaries, termination_log)
    return combine_exit_codes(codes)
