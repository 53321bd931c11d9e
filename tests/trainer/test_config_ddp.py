"""Unit tests: the plan as the operator writes it, and the DDP topology of a pod (pure)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from yolofit.operator.launch import build_pod
from yolofit.sandbox.localrun import pod_env
from yolofit.trainer.config import TrainConfig, TrainerSettings
from yolofit.trainer.ddp import TopologyError, combine_exit_codes, resolve

from .launch import Job

PLAN = json.dumps({"model": "yolov8n.yaml", "data": "/d.yaml", "batch_per_gpu": 2})


def _with_env(env: dict[str, str]) -> TrainerSettings:
    """Settings from exactly `env` (plus a minimal plan), whatever the test runner's env has."""
    env = {"YOLOFIT_TRAIN_CONFIG": PLAN, **env}
    mp = pytest.MonkeyPatch()
    try:
        for k in (
            "MASTER_ADDR",
            "MASTER_PORT",
            "WORLD_SIZE",
            "RANK",
            "LOCAL_RANK",
            "PET_NNODES",
            "PET_NPROC_PER_NODE",
            "PET_NODE_RANK",
            "PET_MASTER_ADDR",
            "PET_MASTER_PORT",
        ):
            mp.delenv(k, raising=False)
        for k, v in env.items():
            mp.setenv(k, v)
        return TrainerSettings()  # type: ignore[call-arg]
    finally:
        mp.undo()


def test_operator_pod_env_is_accepted(tmp_path: Path) -> None:
    spec, plan = Job(data=tmp_path / "d.yaml", output=tmp_path, nodes=2).spec_and_plan()
    meta = {"metadata": {"name": "j", "namespace": "ns", "uid": "u"}}
    for rank in (0, 1):
        env = pod_env(build_pod(meta, spec, plan, rank, 0, {}, []))
        s = _with_env(env)
        cfg = s.train_config
        assert cfg.extra_args == {"warmup_epochs": 0, "seed": 0}  # the operator's "args"
        assert (cfg.job, cfg.namespace, cfg.batch_per_gpu, cfg.world_size) == ("j", "ns", 2, 2)
        cfg.check_world(2)
        topo = resolve(s)
        assert (topo.rank, topo.world_size, topo.local_rank, topo.is_worker) == (rank, 2, 0, True)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, (0, 1, 0, 1, True)),
        (
            {"WORLD_SIZE": "4", "RANK": "3", "MASTER_ADDR": "m", "MASTER_PORT": "1"},
            (3, 4, 0, 1, True),
        ),
        # Kubeflow, 2 pods x 4 GPUs: RANK is the pod index, WORLD_SIZE pods x GPUs (or pods).
        (
            {
                "WORLD_SIZE": "8",
                "RANK": "1",
                "PET_NNODES": "2",
                "PET_NPROC_PER_NODE": "4",
                "PET_NODE_RANK": "1",
                "MASTER_ADDR": "m",
                "MASTER_PORT": "1",
            },
            (4, 8, 0, 4, False),
        ),
        (
            {
                "WORLD_SIZE": "2",
                "RANK": "1",
                "PET_NNODES": "1:2",
                "PET_NPROC_PER_NODE": "4",
                "MASTER_ADDR": "m",
                "MASTER_PORT": "1",
            },
            (4, 8, 0, 4, False),
        ),
        # A worker (torchrun or spawned by yolofit train): RANK and WORLD_SIZE are global.
        (
            {
                "WORLD_SIZE": "8",
                "RANK": "6",
                "LOCAL_RANK": "2",
                "PET_NPROC_PER_NODE": "4",
                "MASTER_ADDR": "m",
                "MASTER_PORT": "1",
            },
            (6, 8, 2, 4, True),
        ),
    ],
)
def test_topology(env: dict[str, str], expected: tuple[int, int, int, int, bool]) -> None:
    t = resolve(_with_env(env))
    assert (t.rank, t.world_size, t.local_rank, t.nproc_per_node, t.is_worker) == expected


def test_worker_env_of_second_pod() -> None:
    t = resolve(
        _with_env(
            {
                "WORLD_SIZE": "8",
                "RANK": "1",
                "PET_NNODES": "2",
                "PET_NPROC_PER_NODE": "4",
                "MASTER_ADDR": "m",
                "MASTER_PORT": "7",
            }
        )
    )
    assert t.worker_env(3) == {
        "RANK": "7",
        "LOCAL_RANK": "3",
        "WORLD_SIZE": "8",
        "LOCAL_WORLD_SIZE": "4",
        "MASTER_ADDR": "m",
        "MASTER_PORT": "7",
    }


@pytest.mark.parametrize(
    "env",
    [
        {"WORLD_SIZE": "2", "RANK": "0"},  # no rendezvous address
        {"WORLD_SIZE": "2", "RANK": "2", "MASTER_ADDR": "m", "MASTER_PORT": "1"},
        {"PET_NPROC_PER_NODE": "2", "MASTER_ADDR": "m", "MASTER_PORT": "1"},  # no PET_NNODES
        {
            "WORLD_SIZE": "3",
            "PET_NNODES": "2",
            "PET_NPROC_PER_NODE": "2",
            "MASTER_ADDR": "m",
            "MASTER_PORT": "1",
        },
        {"PET_NPROC_PER_NODE": "many"},
    ],
)
def test_inconsistent_topology_is_refused(env: dict[str, str]) -> None:
    with pytest.raises(TopologyError):
        resolve(_with_env(env))


def test_plan_checks() -> None:
    base = {"model": "yolov8n", "data": "/d.yaml", "batch_per_gpu": 4, "nbs": 64}
    TrainConfig(**base, accumulate=8).check_world(2)
    with pytest.raises(ValueError, match="round"):
        TrainConfig(**base, accumulate=4).check_world(2)
    with pytest.raises(ValueError, match="ranks"):
        TrainConfig(**base, accumulate=8, world_size=4).check_world(2)
    with pytest.raises(ValidationError, match="plan-owned"):
        TrainConfig(**base, args={"batch": 32})
    with pytest.raises(ValidationError, match="unknown|Extra"):
        TrainConfig(**base, batchsize=3)


def test_exit_code_of_a_pod_is_the_most_specific() -> None:
    assert combine_exit_codes([0, 0]) == 0
    assert combine_exit_codes([1, 88]) == 88
    assert combine_exit_codes([2, 1]) == 2
    assert combine_exit_codes([1, 143]) == 143  # the SIGTERM explains its peer's error
    assert combine_exit_codes([0, -9]) == -9
