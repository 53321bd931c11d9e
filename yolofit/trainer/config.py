"""Settings of `yolofit train`: the plan (JSON in YOLOFIT_TRAIN_CONFIG) and the DDP environment.

One typed settings class reads everything the operator puts into a training pod. Nothing here
imports torch or Ultralytics, so the DDP environment can be resolved (and Ultralytics' import-time
RANK constants set) before either is imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Ultralytics arguments the plan owns: the planner chose them, so extra args may not override them.
PLAN_OWNED_ARGS = frozenset(
    {
        "model",
        "data",
        "imgsz",
        "epochs",
        "batch",
        "nbs",
        "amp",
        "optimizer",
        "device",
        "project",
        "name",
        "save_dir",
        "resume",
        "task",
        "pretrained",
    }
)


class TrainConfig(BaseModel):
    """The fitted plan of one YOLOTrainingJob as the trainer receives it (YOLOFIT_TRAIN_CONFIG)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), populate_by_name=True)

    model: str = Field(
        description="Ultralytics model: a model YAML (e.g. 'yolov8n.yaml', trained "
        "from scratch) or a local .pt checkpoint path. Nothing is downloaded."
    )
    weights: str | None = Field(
        None, description="Checkpoint to start from (spec.weights, or a .pt spec.model): "
        "checked against the planned architecture before the first step "
        "(yolofit.trainer.preflight), then loaded as Ultralytics' pretrained= does."
    )
    classes: int | None = Field(
        None, ge=1, description="The class count (nc) the plan assumed (spec.classes); "
        "checked against the data YAML before the first step. None: not checked."
    )
    data: str = Field(description="Path of the dataset YAML inside the pod (a mounted volume); "
                      "for classify, the dataset directory (train/ and val/ class folders).")
    task: Literal["detect", "segment", "pose", "obb", "classify"] | None = Field(
        None, description="Ultralytics task (spec.task); default: the model's own task.")
    objects_per_image: int | None = Field(
        None, ge=0, description="Most objects per image the plan assumed; before its first "
        "step the trainer measures the data and stops (data-denser) when it holds more.")
    mean_objects_per_image: int | None = Field(
        None, ge=0, description="Mean objects per image the plan assumed (segment and pose "
        "loss terms); the trainer stops (data-denser) when the training split's mean is "
        "higher. None: the plan does not depend on it (not checked).")
    imgsz: int = Field(640, gt=0, description="Training image size in pixels (planned).")
    epochs: int = Field(1, gt=0, description="Number of epochs.")
    batch_per_gpu: int = Field(gt=0, description="Images per rank per forward/backward pass.")
    nbs: int = Field(
        64, gt=0, description="Nominal batch: images per optimizer step over all ranks."
    )
    accumulate: int = Field(
        1,
        gt=0,
        description="Passes accumulated per optimizer step; must equal "
        "Ultralytics' round(nbs / (batch_per_gpu * world_size)).",
    )
    amp: Literal["off", "fp16", "bf16"] = Field(
        "off",
        description="Mixed precision. fp16 uses "
        "Ultralytics' AMP with a GradScaler, bf16 Ultralytics' "
        "amp='bf16'. Forced off on CPU.",
    )
    checkpointing: bool = Field(
        False,
        description="Apply activation checkpointing to the model "
        "(yolofit.estimator.checkpointing.apply_checkpointing).",
    )
    optimizer: str = Field(
        "SGD", description="Ultralytics optimizer name (SGD, AdamW, MuSGD, ...)."
    )
    extra_args: dict[str, Any] = Field(
        default_factory=dict,
        validation_alias=AliasChoices("extra_args", "args"),
        description="Further Ultralytics train arguments (spec.args), "
        "passed through. Plan-owned keys are refused.",
    )
    namespace: str = Field("default", description="Kubernetes namespace of the job (metric label).")
    job: str = Field("local", description="Name of the YOLOTrainingJob (metric label).")
    gpu_class: str = Field("cpu", description="GPU class the plan chose (metric label).")
    estimate_bytes: int = Field(
        0,
        ge=0,
        description="The plan's predicted peak bytes per rank, "
        "exported as yolofit_trainer_estimated_peak_bytes.",
    )
    metrics_port: int = Field(
        9400,
        ge=0,
        le=65535,
        description="Prometheus port of local rank 0; "
        "local rank r serves on metrics_port + r. 0 disables the exporter.",
    )
    project: str = Field(
        "/output",
        description="Output directory (spec.outputDir, the job's volume). Attempt n writes "
        "under <project>/<name>/attempt-<n> and resumes from an earlier attempt's last.pt.",
    )
    name: str = Field("train", description="Run name under project: the job's name.")
    linger_seconds: float = Field(
        0.0,
        ge=0,
        description="Keep the exporter up this long after "
        "training so Prometheus scrapes the final values.",
    )
    attempt: int = Field(
        0, ge=0, description="Launch attempt (0 first; +1 per OOM re-plan or gang restart)."
    )
    world_size: int | None = Field(
        None,
        ge=1,
        description="Planned ranks (nodes x GPUs per node); checked against the DDP environment.",
    )
    nodes: int | None = Field(None, ge=1, description="Planned pods (informational).")
    gpus_per_node: int | None = Field(
        None, ge=1, description="Planned GPUs per pod (informational)."
    )
    ddp_timeout_seconds: float = Field(
        1800.0,
        gt=0,
        description="Timeout of collective operations and of the rendezvous, in seconds.",
    )

    @field_validator("extra_args")
    @classmethod
    def _no_plan_owned(cls, value: dict[str, Any]) -> dict[str, Any]:
        clash = sorted(PLAN_OWNED_ARGS & value.keys())
        if clash:
            raise ValueError(f"extra_args may not set plan-owned arguments: {', '.join(clash)}")
        return value

    def global_batch(self, world_size: int) -> int:
        """Ultralytics' `batch` argument: it divides it by the world size per rank."""
        return self.batch_per_gpu * world_size

    def check_world(self, world_size: int) -> None:
        """Fail unless the launch matches the plan: the plan's batch geometry assumes its world."""
        if self.world_size is not None and self.world_size != world_size:
            raise ValueError(
                f"plan is for {self.world_size} ranks but the DDP environment has {world_size}"
            )
        self.check_accumulate(world_size)

    def check_accumulate(self, world_size: int) -> None:
        """Fail unless Ultralytics' own round(nbs / batch) reproduces the planned accumulation."""
        derived = max(round(self.nbs / self.global_batch(world_size)), 1)
        if derived != self.accumulate:
            raise ValueError(
                f"plan inconsistent: accumulate={self.accumulate} but Ultralytics derives "
                f"round(nbs {self.nbs} / (batch_per_gpu {self.batch_per_gpu} x world "
                f"{world_size})) = {derived}"
            )


class TrainerSettings(BaseSettings):
    """Everything `yolofit train` reads from its environment.

    The DDP variables follow Kubeflow's PyTorchJob: MASTER_ADDR/PORT, WORLD_SIZE, RANK and the
    torchrun-style PET_* variables. LOCAL_RANK is set only in per-GPU worker processes (by torchrun
    or by `yolofit train` itself when a pod has several GPUs).
    """

    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", populate_by_name=True)

    train_config: TrainConfig = Field(
        validation_alias="YOLOFIT_TRAIN_CONFIG", description="The plan as JSON (see TrainConfig)."
    )
    termination_log: Path = Field(
        Path("/dev/termination-log"),
        validation_alias="YOLOFIT_TERMINATION_LOG",
        description="File the JSON summary is written to at exit.",
    )
    inject_oom_at_step: int | None = Field(
        None,
        validation_alias="YOLOFIT_INJECT_OOM_AT_STEP",
        description="Test hook: raise torch.OutOfMemoryError "
        "in the forward pass of this (0-based) step.",
    )
    inject_oom_rank: int | None = Field(
        None,
        validation_alias="YOLOFIT_INJECT_OOM_RANK",
        description="Test hook: global rank that injects the OOM (all ranks when unset).",
    )
    inject_kill_at_step: int | None = Field(
        None,
        validation_alias="YOLOFIT_INJECT_KILL_AT_STEP",
        description="Test hook: the rank kills itself with SIGKILL (as a node loss would) "
        "before this (0-based) step; YOLOFIT_INJECT_OOM_RANK selects the rank.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", validation_alias="YOLOFIT_DEVICE", description="auto: CUDA when available."
    )
    rank_report_dir: Path | None = Field(
        None,
        validation_alias="YOLOFIT_RANK_REPORT_DIR",
        description="Where each rank writes rank-<r>.json (weight "
        "hashes, losses, batch geometry); default <save_dir>/yolofit.",
    )
    master_addr: str | None = Field(
        None,
        validation_alias=AliasChoices("MASTER_ADDR", "PET_MASTER_ADDR"),
        description="Rendezvous host (rank 0's pod).",
    )
    master_port: int | None = Field(
        None,
        validation_alias=AliasChoices("MASTER_PORT", "PET_MASTER_PORT"),
        description="Rendezvous TCP port.",
    )
    world_size: int | None = Field(
        None,
        validation_alias="WORLD_SIZE",
        description="Global number of ranks, or of pods (Kubeflow sets "
        "the pod count when PET_NPROC_PER_NODE > 1).",
    )
    rank: int | None = Field(
        None,
        validation_alias="RANK",
        description="Global rank; the pod (node) index when several local ranks share a pod.",
    )
    local_rank: int | None = Field(
        None, validation_alias="LOCAL_RANK", description="Set only in per-GPU worker processes."
    )
    nnodes: str | None = Field(
        None,
        validation_alias="PET_NNODES",
        description="Number of pods; torchrun's 'min:max' form is accepted.",
    )
    nproc_per_node: str | None = Field(
        None,
        validation_alias="PET_NPROC_PER_NODE",
        description="Ranks (GPUs) per pod: an integer, 'gpu' or 'auto'.",
    )
    node_rank: int | None = Field(
        None, validation_alias="PET_NODE_RANK", description="Index of this pod."
    )
