"""DDP training of an Ultralytics YOLO model with Ultralytics' own trainer of its task.

`trainer_class(task)` is the task's Ultralytics trainer (DetectionTrainer,
SegmentationTrainer, PoseTrainer, OBBTrainer, ClassificationTrainer) with yolofit's DDP
mixed in; `YolofitTrainer` is the detection one.

Ultralytics' trainer supports DDP only as it launches it itself: one node, CUDA only, world size =
the number of devices in `device=`, its own process group. The pods the operator launches are
already the DDP ranks (any nodes x GPUs, gloo on CPU). `YolofitTrainer` keeps Ultralytics' data
pipeline, augmentation, loss, EMA, validation, checkpoints and results.csv, and changes only who
owns the process group and what the world size is.

The zero-loss trap this avoids: Ultralytics computes `world_size` from the device string - 0 on
CPU, 1 for a single `device=0` - while ultralytics.utils.RANK comes from the environment. Under an
externally started group (RANK set, CPU) its training loop runs `if RANK != -1: loss *=
self.world_size`, i.e. loss * 0: every gradient is zero, the logged loss items look normal, and
the weights only move by weight decay. It also builds no DistributedSampler unless LOCAL_RANK is
set and wraps nothing in DDP, so ranks would train different data on different initial weights.
Here world_size is the job's, LOCAL_RANK/RANK/WORLD_SIZE are exported before Ultralytics is
imported, and the model is wrapped in DDP (gloo on CPU, NCCL on CUDA).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import math
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from ultralytics.models.yolo.detect import DetectionTrainer

from yolofit.trainer import preflight, resume
from yolofit.trainer.config import TrainConfig, TrainerSettings
from yolofit.trainer.ddp import Topology, init_process_group
from yolofit.trainer.errors import (
    DataDenser,
    DataMissing,
    ModelDiffers,
    PlanMismatch,
    UnsupportedUltralytics,
)
from yolofit.trainer.exporter import TrainerMetrics
from yolofit.trainer.memory import MemoryTracker
from yolofit.trainer.offline import block_downloads, offline_requested
from yolofit.trainer.summary import Summary


def _dataset_dirs(data_yaml: Path) -> list[Path]:
    """The train/val directories a dataset YAML names, resolved as Ultralytics resolves them."""
    from ultralytics.utils import DATASETS_DIR

    from yolofit.estimator.density import load_data_yaml

    try:
        data = load_data_yaml(data_yaml)
    except ValueError as exc:
        raise DataMissing(f"dataset {exc} (spec.data)") from None
    root = Path(data.get("path") or data_yaml.parent)
    if not root.is_absolute() and not root.exists():
        root = DATASETS_DIR / root
    dirs = []
    for split in ("train", "val"):
        entries = data.get(split)
        if entries is None:
            raise DataMissing(f"dataset {data_yaml} has no '{split}' entry")
        for entry in entries if isinstance(entries, list) else [entries]:
            dirs.append((root / entry).resolve())
    return dirs


# The Ultralytics trainer of each task: (module, class).
TASK_TRAINERS: dict[str, tuple[str, str]] = {
    "detect": ("ultralytics.models.yolo.detect", "DetectionTrainer"),
    "segment": ("ultralytics.models.yolo.segment", "SegmentationTrainer"),
    "pose": ("ultralytics.models.yolo.pose", "PoseTrainer"),
    "obb": ("ultralytics.models.yolo.obb", "OBBTrainer"),
    "classify": ("ultralytics.models.yolo.classify", "ClassificationTrainer"),
}


def model_task(cfg: TrainConfig) -> str:
    """The task to train: the plan's, else the model's own (Ultralytics' guess_model_task
    on its YAML or checkpoint). A plan whose task disagrees with the model fails here."""
    from ultralytics.nn.tasks import guess_model_task

    model = model_argument(cfg.model)
    guessed = None
    with contextlib.suppress(Exception):
        if model.endswith((".yaml", ".yml")):
            from ultralytics.nn.tasks import yaml_model_load

            guessed = guess_model_task(yaml_model_load(model))
        else:
            guessed = guess_model_task(model)
    if cfg.task and guessed and guessed != cfg.task:
        raise PlanMismatch(f"task: the plan says {cfg.task} but {cfg.model} is a "
                           f"{guessed} model")
    task = cfg.task or guessed or "detect"
    if task not in TASK_TRAINERS:
        raise PlanMismatch(f"task: {task} is not one yolofit trains "
                           f"({', '.join(TASK_TRAINERS)})")
    return task


def model_argument(model: str) -> str:
    """The `model=` Ultralytics gets. A bare name such as 'yolov8s' (spec.model's short form)
    means that model's YAML, trained from scratch: Ultralytics would download yolov8s.pt."""
    return model if Path(model).suffix in {".pt", ".pth", ".yaml", ".yml"} else f"{model}.yaml"


def check_inputs(cfg: TrainConfig) -> None:
    """Fail with a message naming the path before Ultralytics would try to download it."""
    data_yaml = Path(cfg.data)
    if data_yaml.is_dir():  # classify: a folder of train/ and val/ class folders
        if not (data_yaml / "train").is_dir():
            raise DataMissing(f"classification dataset {data_yaml} has no train/ folder "
                              "(spec.data)")
    elif not data_yaml.is_file():
        raise DataMissing(
            f"dataset YAML not found: {data_yaml} (spec.data; is its volume mounted?)"
        )
    missing = [] if data_yaml.is_dir() else [d for d in _dataset_dirs(data_yaml)
                                             if not d.exists()]
    if missing:
        raise DataMissing(f"dataset {data_yaml} names a missing path: {missing[0]}")
    model = model_argument(cfg.model)
    if model.endswith((".pt", ".pth")):
        if not Path(model).is_file():
            raise DataMissing(
                f"model file not found: {model} (weights are never downloaded; mount "
                "the checkpoint or use a model YAML such as yolov8n.yaml)"
            )
        return
    from ultralytics.nn.tasks import yaml_model_load

    try:
        yaml_model_load(model)
    except FileNotFoundError:
        raise DataMissing(
            f"model YAML not found: {model} (neither a file nor an Ultralytics model name)"
        ) from None


def check_density(cfg: TrainConfig, task: str, rank: int = 0,
                  world_size: int = 1) -> int | None:
    """The densest training image's object count (label cache or files, as `yolofit data
    stats` reads them); DataDenser when it, or the training split's mean objects per image,
    exceeds what the plan assumed (the error carries both measured figures, the mean rounded
    up, so one re-plan takes both). None for classification (no objects) or a plan that
    assumed nothing. Rank 0 reads the labels and every rank decides from its figures
    (collective: every rank calls it), so a job reads them once, not once per rank."""
    if task == "classify" or cfg.objects_per_image is None:
        return None
    train = _train_density(cfg, rank, world_size)
    if train is None:
        return None
    most, exact_mean, source = train["max"], train["mean"], train["source"]
    mean = math.ceil(exact_mean)
    if most > cfg.objects_per_image:
        raise DataDenser(
            f"data: the densest training image holds {most} objects, the plan assumed "
            f"at most {cfg.objects_per_image} per image (spec.maxObjectsPerImage); re-plan "
            f"with {most} ({source})", most, mean)
    assumed_mean = cfg.mean_objects_per_image
    if assumed_mean is not None and exact_mean > assumed_mean:
        raise DataDenser(
            f"data: the training images hold {exact_mean:.2f} objects on average, the plan "
            f"assumed {assumed_mean} (spec.meanObjectsPerImage); re-plan with {mean} "
            f"({source})", most, mean)
    return int(most)


def _train_density(cfg: TrainConfig, rank: int, world_size: int) -> dict[str, Any] | None:
    """Rank 0's figures of the training split ({max, mean, source}; None: no train split),
    on every rank. A failure to read them on rank 0 reaches the other ranks too (as
    DataMissing), instead of leaving them waiting in the broadcast."""
    from yolofit.estimator.density import dataset_stats

    payload: list[Any] = [None]
    if rank == 0:
        try:
            train = next((s for s in dataset_stats(cfg.data) if s.split == "train"), None)
        except Exception as exc:
            if world_size > 1:
                _broadcast([{"error": f"{type(exc).__name__}: {exc}"}])
            raise
        if train is not None:
            payload = [{"max": train.max, "mean": train.mean, "source": train.source}]
    if world_size > 1:
        _broadcast(payload)
    found = payload[0]
    if isinstance(found, dict) and "error" in found:
        raise DataMissing(f"data: rank 0 could not read the training labels ({found['error']})")
    return found if isinstance(found, dict) else None


def _broadcast(payload: list[Any]) -> None:
    import torch.distributed as dist

    dist.broadcast_object_list(payload, src=0)


def check_bf16_support() -> None:
    """Ultralytics takes amp='bf16' (autocast to bfloat16, no GradScaler) in 8.4.190; fail
    clearly on a version in the supported range that does not."""
    from ultralytics.cfg import get_cfg

    try:
        get_cfg(overrides={"amp": "bf16"})
    except Exception as exc:  # noqa: BLE001 - any refusal means no bf16 switch
        raise UnsupportedUltralytics(f"this Ultralytics has no amp='bf16': {exc}") from None


def _ultralytics_amp(amp: str, device: torch.device) -> bool | str:
    if device.type != "cuda" or amp == "off":
        return False
    return "bf16" if amp == "bf16" else True


def ultralytics_overrides(
    cfg: TrainConfig, topo: Topology, device: torch.device, resume_from: Path | None = None
) -> dict[str, Any]:
    """Ultralytics train arguments for this rank (pure). `batch` is global: Ultralytics divides
    it by the world size per rank and derives accumulate = round(nbs / batch). Each attempt
    writes to its own save_dir (resume.attempt_dir); `resume_from` is an earlier attempt's
    last.pt."""
    save_dir = resume.attempt_dir(cfg.project, cfg.name, cfg.attempt)
    resume_args: dict[str, Any] = {"resume": str(resume_from)} if resume_from else {}
    return {
        **cfg.extra_args,
        "model": model_argument(cfg.model),
        "data": cfg.data,
        "imgsz": cfg.imgsz,
        "epochs": cfg.epochs,
        "batch": cfg.global_batch(topo.world_size),
        "nbs": cfg.nbs,
        "optimizer": cfg.optimizer,
        "amp": _ultralytics_amp(cfg.amp, device),
        "device": "cpu" if device.type == "cpu" else str(device.index),
        "project": str(save_dir.parent),
        "name": save_dir.name,
        "save_dir": str(save_dir),
        "exist_ok": True,
        # Plots need the Arial font (a download) and matplotlib time; the trainer reports metrics.
        "plots": cfg.extra_args.get("plots", False),
        **resume_args,
    }


# What a resumed attempt takes from its plan, not from the checkpoint's saved arguments:
# Ultralytics' resume restores the old run's args and lets only a few through (batch yes, nbs,
# amp, epochs or save_dir of the new attempt not all), so these are set again after it.
PLAN_RESUME_ARGS = ("batch", "nbs", "amp", "imgsz", "epochs", "device", "project", "name",
                    "save_dir", "exist_ok", "data", "plots", "optimizer")


class _CpuDDP(nn.parallel.DistributedDataParallel):
    """Ultralytics passes device_ids=[device.index], i.e. [None] for CPU; DDP refuses that."""

    def __init__(
        self, module: nn.Module, device_ids: list[int | None] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(module, device_ids=None if device_ids == [None] else device_ids, **kwargs)


@contextlib.contextmanager
def _cpu_ddp(device: torch.device) -> Iterator[None]:
    if device.type != "cpu":
        yield
        return
    original = nn.parallel.DistributedDataParallel
    nn.parallel.DistributedDataParallel = _CpuDDP  # type: ignore[misc, assignment]
    try:
        yield
    finally:
        nn.parallel.DistributedDataParallel = original  # type: ignore[misc]


if TYPE_CHECKING:  # the mixin is type-checked as the trainer it is mixed into
    from ultralytics.engine.trainer import BaseTrainer as _MixinBase
else:
    _MixinBase = object


class _YolofitDDP(_MixinBase):
    """Mixed into a task's Ultralytics trainer: ranks and process group come from the pod,
    not from `device=`."""

    run_state: RunState

    def __init__(self, run: RunState, overrides: dict[str, Any]) -> None:
        self.run_state = run
        super().__init__(overrides=overrides)
        self.world_size = run.topo.world_size  # Ultralytics counted local devices (0 on CPU)
        self.ddp = False  # never launch Ultralytics' own DDP subprocesses
        self.add_callback("on_train_epoch_start", self._no_oom_batch_halving)

    @staticmethod
    def _no_oom_batch_halving(trainer: Any) -> None:
        # After a CUDA OOM in the first epoch of a single-process run, Ultralytics halves the
        # batch and retries unless it already retried 3 times. A job's batch is planned: the
        # OOM must reach the operator, which re-plans with the same effective batch.
        trainer._oom_retries = 3

    def check_resume(self, overrides: dict[str, Any]) -> None:
        super().check_resume(overrides)
        if self.resume:  # the new plan's batch/accumulation and this attempt's directory
            for key in PLAN_RESUME_ARGS:
                if key in overrides:
                    setattr(self.args, key, overrides[key])

    def _setup_ddp(self) -> None:
        # The process group is already joined (ddp.init_process_group); only pin the device.
        if self.device.type == "cuda":
            self.device = torch.device("cuda", self.run_state.topo.local_rank)
            torch.cuda.set_device(self.device)

    def _setup_train(self) -> None:
        with _cpu_ddp(self.device):
            super()._setup_train()

    def get_model(self, cfg: Any = None, weights: Any = None, verbose: bool = True) -> Any:
        model = super().get_model(cfg=cfg, weights=weights, verbose=verbose)
        if self.run_state.cfg.checkpointing:
            try:
                from yolofit.estimator.checkpointing import apply_checkpointing
            except ImportError as exc:
                raise RuntimeError(
                    "the plan asks for activation checkpointing but "
                    "yolofit.estimator.checkpointing is unavailable"
                ) from exc
            self.run_state.checkpointed_modules = apply_checkpointing(model)
        return model

    def preprocess_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        self.run_state.maybe_inject_oom()
        return super().preprocess_batch(batch)

    def final_eval(self) -> None:
        if self.world_size <= 1:
            return super().final_eval()
        # Ultralytics' final re-validation of best.pt is collective: every rank must read
        # best.pt, which only rank 0 wrote (pods do not share a disk), and on CPU a DDP rank's
        # validator asks CUDA for its device. Per-epoch validation (all ranks, gathered on
        # rank 0) has run; keep the part that shapes the checkpoints: strip optimizer state.
        from ultralytics.utils import RANK
        from ultralytics.utils.torch_utils import strip_optimizer

        if RANK == 0:
            ckpt = strip_optimizer(self.last) if self.last.exists() else {}
            if self.best.exists():
                strip_optimizer(self.best, updates={"train_results": ckpt.get("train_results")})
        torch.distributed.barrier()
        return None


class YolofitTrainer(_YolofitDDP, DetectionTrainer):  # type: ignore[misc]
    """DetectionTrainer whose ranks and process group come from the pod."""


_TRAINERS: dict[str, type] = {"detect": YolofitTrainer}


def trainer_class(task: str) -> type:
    """The task's Ultralytics trainer with yolofit's DDP mixed in (built once per task)."""
    if task not in _TRAINERS:
        module, name = TASK_TRAINERS[task]
        base = getattr(importlib.import_module(module), name)
        _TRAINERS[task] = type(f"Yolofit{name}", (_YolofitDDP, base), {
            "__doc__": f"{name} whose ranks and process group come from the pod."})
    return _TRAINERS[task]


def state_hashes(model: nn.Module) -> dict[str, str]:
    """SHA-256 of the parameters and of the buffers (BatchNorm statistics), separately."""
    out = {}
    for kind, items in (
        ("parameters", model.named_parameters()),
        ("buffers", model.named_buffers()),
    ):
        h = hashlib.sha256()
        for name, t in sorted(items, key=lambda kv: kv[0]):
            h.update(name.encode())
            h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
        out[kind] = h.hexdigest()
    return out


class RunState:
    """What one rank measures while Ultralytics trains: steps, timings, losses, memory."""

    def __init__(
        self,
        settings: TrainerSettings,
        topo: Topology,
        device: torch.device,
        metrics: TrainerMetrics | None,
    ) -> None:
        self.settings, self.cfg, self.topo, self.device = (
            settings,
            settings.train_config,
            topo,
            device,
        )
        self.metrics = metrics
        self.memory = MemoryTracker(device)
        self.steps = 0
        self.images = 0
        self.train_seconds = 0.0
        self.losses: list[float] = []
        self.accumulate: int | None = None
        self.batch_per_rank: int | None = None
        self.checkpointed_modules = 0
        self.shards: list[list[str]] = []  # per epoch: the images this rank's sampler gave it
        self.start_epoch = 0
        self.epochs_done = 0
        self.epochs = 0
        self._t_prev = time.perf_counter()

    def maybe_inject_oom(self) -> None:
        s = self.settings
        if s.inject_oom_rank not in (None, self.topo.rank):
            return
        if s.inject_kill_at_step == self.steps:
            os.kill(os.getpid(), signal.SIGKILL)  # as a lost node: no summary, no cleanup
        if s.inject_oom_at_step == self.steps:
            raise torch.OutOfMemoryError(
                f"CUDA out of memory (injected by YOLOFIT_INJECT_OOM_AT_STEP={self.steps} on rank "
                f"{self.topo.rank})"
            )

    def on_train_start(self, trainer: Any) -> None:
        self.accumulate = trainer.accumulate  # nominal; warmup ramps up to it
        self.batch_per_rank = trainer.train_loader.batch_size
        self.start_epoch = self.epochs_done = trainer.start_epoch
        self.epochs = trainer.epochs

    def on_fit_epoch_end(self, trainer: Any) -> None:
        self.epochs_done = trainer.epoch + 1  # rank 0 has saved last.pt of this epoch

    def on_train_epoch_start(self, trainer: Any) -> None:
        self._t_prev = time.perf_counter()
        if self.metrics:
            self.metrics.epoch.set(trainer.epoch + 1)

    def on_train_batch_end(self, trainer: Any) -> None:
        now = time.perf_counter()
        dt, self._t_prev = now - self._t_prev, now  # includes waiting for data
        images = self.batch_per_rank or 0
        self.steps += 1
        self.images += images
        self.train_seconds += dt
        self.losses.append(float(trainer.loss.detach()))
        self.memory.sample()
        if self.metrics:
            items = {k: float(v) for k, v in (trainer.loss_items or {}).items()}
            self.metrics.observe_step(dt, images, items)
            self.metrics.set_memory(self.memory.peaks())

    def on_train_epoch_end(self, trainer: Any) -> None:
        """Record this rank's shard of the epoch (DDP only). Iterating a DistributedSampler
        has no side effect: it reseeds from seed + epoch, which Ultralytics set this epoch."""
        from torch.utils.data.distributed import DistributedSampler

        sampler = getattr(trainer.train_loader, "sampler", None)
        if isinstance(sampler, DistributedSampler):
            dataset = trainer.train_loader.dataset
            files = getattr(dataset, "im_files", None) or [  # classify: (path, class, ...)
                s[0] for s in dataset.samples]
            self.shards.append(sorted(Path(files[i]).name for i in sampler))

    @property
    def images_per_second(self) -> float:
        return self.images / self.train_seconds if self.train_seconds else 0.0

    def report(self, trainer: Any, path: Path) -> None:
        """rank-<r>.json: evidence that the ranks trained one model (weights hash) for real."""
        from ultralytics.utils.torch_utils import unwrap_model

        data = {
            "rank": self.topo.rank,
            "world_size": trainer.world_size,
            "batch_per_rank": self.batch_per_rank,
            "accumulate": self.accumulate,
            "nbs": trainer.args.nbs,
            "steps": self.steps,
            "losses": self.losses,
            "model": state_hashes(unwrap_model(trainer.model)),
            "ema": state_hashes(trainer.ema.ema) if trainer.ema else None,
            "checkpointed_modules": self.checkpointed_modules,
            "shards": self.shards,
            "attempt": self.cfg.attempt,
            "start_epoch": self.start_epoch,
            "epochs_done": self.epochs_done,
            "epochs": self.epochs,
            "save_dir": str(trainer.save_dir),
            "amp": bool(trainer.amp),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1))


def select_device(settings: TrainerSettings, topo: Topology) -> torch.device:
    want_cuda = settings.device == "cuda" or (
        settings.device == "auto" and torch.cuda.is_available()
    )
    if not want_cuda:
        return torch.device("cpu")
    if topo.local_rank >= torch.cuda.device_count():
        raise RuntimeError(
            f"local rank {topo.local_rank} has no GPU: {torch.cuda.device_count()} visible"
        )
    return torch.device("cuda", topo.local_rank)


def train(
    settings: TrainerSettings, topo: Topology, summary: Summary, metrics: TrainerMetrics | None
) -> RunState:
    """Train this rank. Raises on failure; `summary` is filled as far as training got."""
    if offline_requested():
        block_downloads()
    cfg = settings.train_config
    check_inputs(cfg)
    try:
        cfg.check_world(topo.world_size)
    except ValueError as exc:
        raise PlanMismatch(str(exc)) from None
    device = select_device(settings, topo)
    if ultralytics_overrides(cfg, topo, device)["amp"] == "bf16":
        check_bf16_support()
    run = RunState(settings, topo, device, metrics)
    summary.memory_kind = run.memory.kind
    if metrics:
        metrics.estimated.set(cfg.estimate_bytes)
    if topo.distributed:
        init_process_group(topo, device.type, cfg.ddp_timeout_seconds)
    summary.attempt = cfg.attempt
    summary.save_dir = str(resume.attempt_dir(cfg.project, cfg.name, cfg.attempt))
    try:
        if device.type == "cuda":
            torch.cuda.set_device(device)  # the broadcast below runs on this rank's GPU
        point = resume.share(
            resume.find(cfg.project, cfg.name, cfg.attempt) if topo.rank == 0 else None,
            topo.rank,
            topo.world_size,
        )
        if point is not None:
            summary.resumed_from = str(resume.attempt_dir(cfg.project, cfg.name, point.attempt)
                                       / "weights" / "last.pt")
            summary.start_epoch = summary.epochs_done = point.start_epoch
        if point is not None and point.finished:
            summary.epochs_done = cfg.epochs
            summary.message = (f"attempt {point.attempt} already trained every epoch "
                               f"({summary.resumed_from}); nothing to resume")
            print(f"yolofit train: {summary.message}")
            return run
        overrides = {**ultralytics_overrides(cfg, topo, device, point.path if point else None),
                     "task": model_task(cfg)}
        try:
            check_density(cfg, overrides["task"], topo.rank, topo.world_size)
        except DataDenser as exc:
            summary.objects_per_image = exc.objects_per_image
            summary.objects_per_image_mean = exc.mean_objects_per_image
            raise
        overrides.update(_preflight(cfg, overrides["task"], summary))
        trainer = trainer_class(overrides["task"])(run, overrides)
        for event in ("on_train_start", "on_train_epoch_start", "on_train_batch_end",
                      "on_train_epoch_end", "on_fit_epoch_end"):
            trainer.add_callback(event, getattr(run, event))
        try:
            trainer.train()
        finally:
            _fill(summary, run)
        report_dir = settings.rank_report_dir or Path(trainer.save_dir) / "yolofit"
        run.report(trainer, report_dir / f"rank-{topo.rank}.json")
    finally:
        if topo.distributed and torch.distributed.is_initialized():
            with contextlib.suppress(Exception):
                torch.distributed.destroy_process_group()
    return run


def _preflight(cfg: TrainConfig, task: str, summary: Summary) -> dict[str, Any]:
    """The checkpoint and the data's classes against the plan (preflight.py): the model=
    and pretrained= Ultralytics trains with; ModelDiffers when bigger than planned."""
    try:
        result = preflight.check(cfg, task)
    except ModelDiffers as exc:
        summary.model_found = exc.model_found
        raise
    if result.finding is not None and result.finding.model_found is not None:
        summary.model_found = result.finding.model_found
        print(f"yolofit train: {result.finding.message}")
    out: dict[str, Any] = {"model": model_argument(result.model)}
    if result.pretrained:
        out["pretrained"] = result.pretrained
    return out


def _fill(summary: Summary, run: RunState) -> None:
    peaks = run.memory.peaks()
    summary.memory_kind = peaks.kind
    summary.peak_allocated_bytes = peaks.peak_allocated_bytes
    summary.peak_reserved_bytes = peaks.peak_reserved_bytes
    summary.device_total_bytes = peaks.device_total_bytes
    summary.steps = run.steps
    summary.images_per_second = run.images_per_second
    if run.steps or run.epochs_done:  # training started: its own epoch count
        summary.start_epoch, summary.epochs_done = run.start_epoch, run.epochs_done
    if run.metrics:
        run.metrics.set_memory(peaks)
