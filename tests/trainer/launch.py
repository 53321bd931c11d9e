"""Start `yolofit train` ranks as local processes with the env the operator gives its pods.

The pods come from the operator's own pure builder (`yolofit.operator.launch.build_pod`) and run
through `yolofit.sandbox.localrun`, which replaces only what a pod gets from the cluster: rank
0's DNS name becomes 127.0.0.1, the rendezvous and metrics ports become free local ports (pods
have their own IPs), and the termination log and Ultralytics' config dir move into the test's
temp dir, which is also the processes' working directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yolofit.operator.api import Plan, YOLOTrainingJobSpec
from yolofit.operator.launch import build_pod
from yolofit.sandbox.localrun import LocalPod, pod_env, start_pods


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
    task: str | None = None
    weights: str | None = None  # spec.weights: a checkpoint to start from
    classes: int = 2

    def spec_and_plan(self) -> tuple[YOLOTrainingJobSpec, Plan]:
        gpus = self.nodes * self.per_node
        spec = YOLOTrainingJobSpec(
            model=self.model,
            data=str(self.data),
            classes=self.classes,
            weights=self.weights,
            imgsz=64,
            epochs=self.epochs,
            nbs=self.nbs,
            amp="off",
            gpus={"nodes": self.nodes, "per_node": self.per_node},
            output_dir=str(self.output),
            args=self.args,
            task=self.task,
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
            task=self.task or "",
        )
        return spec, plan


    def attempt_dir(self, attempt: int = 0) -> Path:
        """Where attempt n of the job writes (Ultralytics' save_dir)."""
        return self.output / self.name / f"attempt-{attempt}"


def start_ranks(
    job: Job,
    tmp: Path,
    config_patch: dict[str, Any] | None = None,
    extra_env: dict[str, str] | None = None,
    attempt: int = 0,
    plan: Plan | None = None,
) -> list[LocalPod]:
    """Start one process per pod of the job, in rank order (each runs the pod's command and
    env, on CPU); wait for them with `yolofit.sandbox.localrun.wait_pods`. `attempt` and `plan`
    relaunch the job as the operator does after an OOM re-plan or a gang restart."""
    spec, planned = job.spec_and_plan()
    plan = plan or planned
    meta = {"metadata": {"name": job.name, "namespace": job.namespace, "uid": "uid-1"}}
    pods = []
    for r in range(job.nodes):
        pod = build_pod(
            meta, spec, plan, r, attempt=attempt, node_selector={}, tolerations=[], gated=False
        )
        env = pod_env(pod)
        assert env["MASTER_ADDR"] == env["PET_MASTER_ADDR"] and env["RANK"] == str(r)
        pods.append(pod)
    return start_pods(
        pods,
        tmp if attempt == 0 else tmp / f"attempt-{attempt}",
        extra_env={"YOLOFIT_DEVICE": "cpu", **(extra_env or {})},
        config_patch=config_patch,
    )
