"""How a rank's training can end, as the termination summary names it.

Expected failures (bad input, a plan that does not fit the launch, an unsupported Ultralytics,
SIGTERM) are reported as one line; anything else also prints its traceback.
"""

from __future__ import annotations

import sys
from typing import Any

from yolofit.trainer.summary import ExitReason


class TrainerFailure(Exception):
    """An expected failure: its message says all (no traceback)."""

    reason: ExitReason = "error"


class DataMissing(TrainerFailure):
    """The dataset or model file named by the plan does not exist (exit code 2)."""

    reason = "data-missing"


class DataDenser(TrainerFailure):
    """The data holds more objects per image than the plan assumed (exit code 3): the
    operator re-plans with the measured figure before any GPU memory is spent."""

    reason = "data-denser"

    def __init__(self, message: str, objects_per_image: int,
                 mean_objects_per_image: int | None = None) -> None:
        super().__init__(message)
        self.objects_per_image = objects_per_image  # the densest training image
        self.mean_objects_per_image = mean_objects_per_image  # the split's mean, rounded up


class ModelDiffers(TrainerFailure):
    """The checkpoint or the data's classes make a bigger model than the plan's (exit code
    4): the operator re-plans with `model_found` before any GPU memory is spent."""

    reason = "model-differs"

    def __init__(self, message: str, model_found: dict[str, Any]) -> None:
        super().__init__(message)
        self.model_found = model_found


class PlanMismatch(TrainerFailure):
    """The plan does not fit the launch (world size, accumulation): an operator bug (exit 1)."""


class UnsupportedUltralytics(TrainerFailure):
    """The installed Ultralytics is outside the range the trainer's overrides were made for."""


class Terminated(TrainerFailure):
    """SIGTERM (pod deletion, drain, eviction): still leave a summary; exit 143."""

    reason = "terminated"


def is_cuda_oom(exc: BaseException) -> bool:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return "cuda" in text and "out of memory" in text


def classify(exc: BaseException) -> tuple[ExitReason, str, bool]:
    """(exit reason, one-line message, expected) of the exception that ended training."""
    if isinstance(exc, TrainerFailure):
        return exc.reason, str(exc), True
    if is_cuda_oom(exc):
        return "oom", str(exc).strip().splitlines()[0], True
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return "error", text[0] if text else type(exc).__name__, False
