"""Start `yolofit train` ranks as local processes with the env the operator gives its pods.

The pods come from the operator's own pure builder (`yolofit.operator.launch.build_pod`); only
what a pod gets from the cluster is replaced: rank 0's DNS name becomes 127.0.0.1, the
rendezvous and metrics ports become free local ports (pods have their own IPs), and the
termination log and Ultralytics' config dir move into the test's temp dir.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yolofit.operator.api import Plan, YOLOTrainingJobSpec
from yolofit.operator.launch import build_pod

# Variables of the test runner's own environment that must not leak into a rank.
_DDP_VARS = (
    "MASTER_ADDR",
    "MASTER_PORT",
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "PET_MASTER_ADDR",
    "PET_MASTER_PORT",
    "PET_NNODES",
    "PET_NPROC_PER_NODE",
    "PET_NODE_RANK",
    "YOLOFIT_TRAIN_CONFIG",
    "YOLOFIT_INJECT_OOM_AT_STEP",
    "YOLOFIT_INJECT_OOM_RANK",
    "YOLOFIT_TERMINATION_LOG",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def yolofit_command(pod_command: list[str]) -> list[str]:
    """The pod's `yolofit train`, from this interpreter's environment."""
    assert pod_command[0] == "yolofit"
    script = Path(sys.executable).with_name("yolofit")
    if script.is_file():
        return [str(script), *pod_command[1:]]
    return [sys.executable, "-m", "yolofit.cli", *pod_command[1:]]


@dataclass
class Job:
    """A YOLOTrainingJob's spec and plan, small enough to train on CPU in seconds."""

    data: Path
    output: Path
    nodes: int = 2
    per_node: int = 1
    batch_per_gpu: int = 2
    nbs: int = 8
    epochs: int = 1
    model: str = "yolov8n"
    args: dict[str, Any] = field(default_factory=lambda: {"warmup_epochs": 0, "seed": 0})
    name: str = "tiny"
    namespace: str = "team-a"
    gpu_class: str = "cpu-test"
    checkpointing: bool = False

    def spec_and_plan(self) -> tuple[YOLOTrainingJobSpec, Plan]:
        gpus = self.nodes * self.per_node
        spec = YOLOTrainingJobSpec(
            model=self.model,
            data=str(self.data),
            classes=2,
            imgsz=64,
            epochs=self.epochs,
            nbs=self.nbs,
            amp="off",
            gpus={"nodes": self.nodes, "per_node": self.per_node},
            output_dir=str(self.output),
            args=self.args,
        )
        plan = Plan(
            gpu_class=self.gpu_class,
            nodes=self.nodes,
            gpus_per_node=self.per_node,
            gpus=gpus,
            batch_per_gpu=self.batch_per_gpu,
            accumulate=max(round(self.nbs / (self.batch_per_gpu * gpus)), 1),
            amp="off",
            checkpointing=self.checkpointing,
            imgsz=64,
            predicted_device_bytes=123_456_789,
        )
        return spec, plan


@dataclass
class Rank:
    rank: int
    proc: subprocess.Popen[str]
    termination_log: Path
    metrics_port: int
    env: dict[str, str]

    def summary(self) -> Any:
        return json.loads(self.termination_log.read_text())


def pod_env(pod: dict[str, Any]) -> dict[str, str]:
    container = pod["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def start_ranks(
    job: Job,
    tmp: Path,
    config_patch: dict[str, Any] | None = None,
    extra_env: dict[str, str] | None = None,
) -> list[Rank]:
    """Start one process per pod of the job (each runs the pod's command and env)."""
    spec, plan = job.spec_and_plan()
    meta = {"metadata": {"name": job.name, "namespace": job.namespace, "uid": "uid-1"}}
    master_port = free_port()
    base = {k: v for k, v in os.environ.items() if k not in _DDP_VARS}
    ranks = []
    for r in range(job.nodes):
        metrics_port = free_port()
        pod = build_pod(
            meta,
            spec,
            plan,
            r,
            attempt=0,
            node_selector={},
            tolerations=[],
            metrics_port=metrics_port,
            gated=False,
        )
        env = pod_env(pod)
        assert env["MASTER_ADDR"] == env["PET_MASTER_ADDR"] and env["RANK"] == str(r)
        env.update(
            MASTER_ADDR="127.0.0.1",
            PET_MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(master_port),
            PET_MASTER_PORT=str(master_port),
        )
        if config_patch:
            env["YOLOFIT_TRAIN_CONFIG"] = json.dumps(
                {**json.loads(env["YOLOFIT_TRAIN_CONFIG"]), **config_patch}
            )
        log = tmp / f"termination-log-{r}"
        env.update(
            YOLOFIT_TERMINATION_LOG=str(log),
            YOLO_CONFIG_DIR=str(tmp / "ultralytics"),
            YOLOFIT_DEVICE="cpu",
            **(extra_env or {}),
        )
        full_env = {**base, **env}
        out = open(tmp / f"rank-{r}.log", "w")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            yolofit_command(pod["spec"]["containers"][0]["command"]),
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=tmp,
        )
        ranks.append(Rank(r, proc, log, metrics_port, env))
    return ranks


def wait_all(ranks: list[Rank], timeout: float) -> list[int]:
    """Exit codes of all ranks; those still running after `timeout` are killed (-9)."""
    deadline = time.monotonic() + timeout
    for r in ranks:
        try:
            r.proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            r.proc.kill()
            r.proc.wait()
    return [int(r.proc.returncode) for r in ranks]


def log_of(tmp: Path, rank: int) -> str:
    return (tmp / f"rank-{rank}.log").read_text(errors="replace")
