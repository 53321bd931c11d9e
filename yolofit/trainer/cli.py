"""`yolofit train` (the training pods' entrypoint) and `yolofit dataset synth DIR`.

`yolofit train` reads the plan and the DDP environment (config.py), starts one worker per local GPU
when a pod has several (ddp.py), and otherwise trains as one rank. Every rank ends by writing its
JSON summary to the termination log and exits 0, 1 (error), 2 (dataset/model missing) or 88 (CUDA
out of memory). torch and Ultralytics are imported only after RANK/LOCAL_RANK/WORLD_SIZE are set.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import Any

from pydantic import ValidationError

from yolofit.trainer.compat import check_ultralytics_version, installed_ultralytics
from yolofit.trainer.config import TrainerSettings
from yolofit.trainer.ddp import (
    Topology,
    TopologyError,
    export_worker_env,
    resolve,
    spawn_local_workers,
)
from yolofit.trainer.errors import Terminated, classify
from yolofit.trainer.summary import Summary, write_termination_log

# Per-GPU workers run the same `train` through the trainer's own entry (no other layer imported).
TRAIN_COMMAND = (sys.executable, "-m", "yolofit.trainer.cli", "train")


def register(subparsers: Any) -> None:
    train = subparsers.add_parser(
        "train",
        help="train as the ranks of a YOLOTrainingJob (env YOLOFIT_TRAIN_CONFIG + DDP env)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.set_defaults(func=run_train)

    dataset = subparsers.add_parser("dataset", help="datasets for tests and demos")
    dsub = dataset.add_subparsers(dest="dataset_command", metavar="COMMAND", required=True)
    synth = dsub.add_parser("synth", help="write a tiny synthetic YOLO detection dataset")
    synth.add_argument("dir", help="output directory (data.yaml is written there)")
    synth.add_argument("--train", type=int, default=8, help="training images (default 8)")
    synth.add_argument("--val", type=int, default=4, help="validation images (default 4)")
    synth.add_argument("--imgsz", type=int, default=64, help="image size in pixels (default 64)")
    synth.add_argument("--nc", type=int, default=2, help="number of classes (default 2)")
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(func=run_synth)


def run_synth(args: argparse.Namespace) -> int:
    from yolofit.trainer.synthetic import make_synthetic_dataset

    print(make_synthetic_dataset(args.dir, args.train, args.val, args.imgsz, args.nc, args.seed))
    return 0


def _fail(summary: Summary, path: os.PathLike[str] | str, reason: str, message: str) -> int:
    summary.exit_reason, summary.message = reason, message  # type: ignore[assignment]
    print(f"yolofit train: rank {summary.rank}: {reason}: {message}", file=sys.stderr)
    write_termination_log(summary, Path(path))
    return summary.exit_code


def run_train(_args: argparse.Namespace | None = None) -> int:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    log_path = os.environ.get("YOLOFIT_TERMINATION_LOG", "/dev/termination-log")
    summary = Summary(rank=int(os.environ.get("RANK", "0") or 0))
    try:
        settings = TrainerSettings()  # type: ignore[call-arg]
        topo = resolve(settings, cuda_count=_cuda_count)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        return _fail(summary, log_path, "error", f"invalid trainer environment: {problems}")
    except TopologyError as exc:
        return _fail(summary, log_path, "error", f"invalid DDP environment: {exc}")
    if not topo.is_worker:
        return spawn_local_workers(topo, TRAIN_COMMAND, settings.termination_log)
    summary.rank = topo.rank
    export_worker_env(topo)
    return _run_rank(settings, topo, summary)


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count()


def _raise_terminated(signum: int, _frame: FrameType | None) -> None:
    raise Terminated(f"terminated by signal {signum} (pod deleted?)")


def _run_rank(settings: TrainerSettings, topo: Topology, summary: Summary) -> int:
    cfg = settings.train_config
    metrics = None
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        check_ultralytics_version(installed_ultralytics())
        from yolofit.trainer import trainer  # imports torch and Ultralytics
        from yolofit.trainer.exporter import TrainerMetrics
        from yolofit.trainer.memory import host_peak_rss_bytes

        if cfg.metrics_port:
            metrics = TrainerMetrics(cfg.namespace, cfg.job, topo.rank, cfg.gpu_class)
            metrics.host_rss.set(host_peak_rss_bytes())  # measured from the first scrape on
            metrics.serve(cfg.metrics_port + topo.local_rank)
        trainer.train(settings, topo, summary, metrics)
        summary.exit_reason = "completed"
    except BaseException as exc:  # every failure must leave a summary
        summary.exit_reason, summary.message, expected = classify(exc)
        if not expected:
            traceback.print_exc()
        print(
            f"yolofit train: rank {topo.rank}: {summary.exit_reason}: {summary.message}",
            file=sys.stderr,
        )
    write_termination_log(summary, settings.termination_log)
    if metrics:
        time.sleep(cfg.linger_seconds)  # let Prometheus scrape the final values
        metrics.shutdown()
    return summary.exit_code


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (python -m yolofit.trainer.cli): the same subcommands as `yolofit`."""
    parser = argparse.ArgumentParser(prog="yolofit")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
