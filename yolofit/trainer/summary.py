"""The JSON summary each rank leaves in its termination message (docs/ARCHITECTURE.md).

Kubernetes keeps at most 4096 bytes of a termination message, so the message text is capped.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

ExitReason = Literal["completed", "oom", "error", "data-missing", "data-denser"]

# data-denser: the dataset holds more objects per image than the plan assumed; the operator
# re-plans with `objects_per_image` (the measured densest image) before any GPU step.
EXIT_CODES: dict[ExitReason, int] = {"completed": 0, "error": 1, "data-missing": 2,
                                     "data-denser": 3, "oom": 88}
MESSAGE_LIMIT = 1024  # chars; leaves room for several local ranks' summaries in one message


@dataclass
class Summary:
    rank: int
    memory_kind: Literal["cuda", "host-rss"] = "host-rss"
    peak_allocated_bytes: int = 0
    peak_reserved_bytes: int = 0
    device_total_bytes: int = 0
    steps: int = 0
    images_per_second: float = 0.0
    exit_reason: ExitReason = "completed"
    message: str = ""
    objects_per_image: int | None = None  # measured densest training image (data-denser)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.exit_reason]

    def to_json(self) -> str:
        data = asdict(self)
        if len(self.message) > MESSAGE_LIMIT:
            data["message"] = self.message[: MESSAGE_LIMIT - 3] + "..."
        data["images_per_second"] = round(self.images_per_second, 3)
        return json.dumps(data, separators=(",", ":"))


def write_termination_log(summary: Summary, path: Path) -> None:
    """Write the summary; a failure to write must not hide the training outcome."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(summary.to_json())
    except OSError as exc:
        print(f"yolofit train: cannot write termination log {path}: {exc}", file=sys.stderr)
