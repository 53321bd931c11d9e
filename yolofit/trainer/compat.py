"""The Ultralytics versions the trainer supports.

`YolofitTrainer` overrides internals of ultralytics.engine.trainer.BaseTrainer (_setup_ddp,
_setup_train, final_eval, the OOM retry counter) whose shape is stable within 8.4.x; tested with
8.4.190. Checked from package metadata, before Ultralytics is imported.
"""

from __future__ import annotations

import re
from importlib import metadata

from yolofit.trainer.errors import UnsupportedUltralytics

SUPPORTED_ULTRALYTICS = ((8, 4, 0), (8, 5, 0))  # [min, max)
TESTED_ULTRALYTICS = "8.4.190"


def installed_ultralytics() -> str:
    try:
        return metadata.version("ultralytics")
    except metadata.PackageNotFoundError:
        raise UnsupportedUltralytics("ultralytics is not installed") from None


def check_ultralytics_version(version: str) -> None:
    parts = tuple(int(p) for p in re.findall(r"\d+", version)[:3])
    low, high = SUPPORTED_ULTRALYTICS
    if not low <= parts < high:
        raise UnsupportedUltralytics(
            f"ultralytics {version} is not supported by yolofit train: it needs "
            f">={'.'.join(map(str, low))},<{'.'.join(map(str, high[:2]))} "
            f"(tested with {TESTED_ULTRALYTICS})"
        )
