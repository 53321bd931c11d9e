"""The JSON summary a pod leaves in its termination message (docs/ARCHITECTURE.md).

Kubernetes keeps at most 4096 bytes of a container's termination message, and a pod has one
container whatever its number of local ranks. So every pod writes ONE JSON object:

- the pod-level fields a one-rank pod always had (`rank` = the pod's first global rank, the
  memory peaks as the max over its local ranks, `steps`, `exit_reason` = the most specific
  failure, `message`), plus what the attempt did with its checkpoints (`attempt`,
  `start_epoch`, `epochs_done`, `save_dir`, `resumed_from`);
- `ranks`: one compact row per local rank, `[rank, peak_allocated, peak_reserved,
  device_total, steps, exit_code]` (RANK_FIELDS), so per-rank peaks survive.

`encode()` guarantees the byte budget (MAX_BYTES, under the kubelet's 4096) for up to 16 local
ranks by keeping the ends of long paths and shortening the message as far as needed. The
operator's parser (yolofit.operator.feedback.parse_summary) reads this format;
tests/trainer/test_local_ranks.py runs the real trainer and feeds its output to the
operator's reconciler, so the two cannot drift apart.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

ExitReason = Literal["completed", "oom", "error", "data-missing", "data-denser", "model-differs",
                     "terminated"]

# data-denser: the dataset holds more objects per image than the plan assumed; the operator
# re-plans with `objects_per_image` (the measured densest image) and
# `objects_per_image_mean` (the training split's mean, rounded up) before any GPU step.
# model-differs: the checkpoint (spec.weights) or the data's classes make a bigger model than
# the plan's; `model_found` names it ({"model": "yolo11l", "nc": 80}) for the re-plan.
# 143 = 128 + SIGTERM, as a shell reports it: the operator's failure policy restarts the gang
# for a rank stopped from outside (drain, eviction, preemption) instead of failing the job.
EXIT_CODES: dict[ExitReason, int] = {"completed": 0, "error": 1, "data-missing": 2,
                                     "data-denser": 3, "model-differs": 4, "oom": 88,
                                     "terminated": 143}
MESSAGE_LIMIT = 1024  # chars of the message kept at most (before the byte budget)
MAX_BYTES = 3900  # the kubelet keeps 4096 bytes of a termination message; leave some slack
MAX_LOCAL_RANKS = 16  # the most GPUs per pod the API allows (spec.gpus.perNode)
PATH_LIMIT = 256  # chars of save_dir / resumed_from kept (their ends)
RANK_FIELDS = (
    "rank",
    "peak_allocated_bytes",
    "peak_reserved_bytes",
    "device_total_bytes",
    "steps",
    "exit_code",
)
# A pod reports the most telling failure of its ranks.
# (a SIGTERM explains the errors of the ranks whose group it broke)
_REASON_PRIORITY: tuple[ExitReason, ...] = ("oom", "data-denser", "model-differs",
                                            "data-missing", "terminated", "error", "completed")


@dataclass
class Summary:
    """What one rank measured and how it ended."""

    rank: int
    memory_kind: Literal["cuda", "host-rss"] = "host-rss"
    peak_allocated_bytes: int = 0
    peak_reserved_bytes: int = 0
    device_total_bytes: int = 0
    steps: int = 0
    images_per_second: float = 0.0
    exit_reason: ExitReason = "completed"
    message: str = ""
    attempt: int = 0
    start_epoch: int = 0  # 0-based epoch this attempt started at (> 0: resumed)
    epochs_done: int = 0  # epochs with a checkpoint on the volume when the rank ended
    save_dir: str = ""  # this attempt's output directory
    resumed_from: str = ""  # the checkpoint this attempt resumed from ("" = fresh start)
    objects_per_image: int | None = None  # measured densest training image (data-denser)
    objects_per_image_mean: int | None = None  # the training split's mean, rounded up (same)
    # what the pre-flight found when it differs from the plan: {"model": <architecture>,
    # "nc": <classes to plan with>} (model-differs when bigger; reported when smaller)
    model_found: dict[str, Any] | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.exit_reason]

    def to_json(self) -> str:
        return encode([self])


def pod_fields(summaries: Sequence[Summary]) -> dict[str, Any]:
    """The pod-level object of one or more local ranks' summaries (pure)."""
    ranks = sorted(summaries, key=lambda s: s.rank)
    worst = min(ranks, key=lambda s: _REASON_PRIORITY.index(s.exit_reason))
    first = ranks[0]
    out = asdict(first)
    out.update(
        memory_kind="cuda" if all(s.memory_kind == "cuda" for s in ranks) else "host-rss",
        peak_allocated_bytes=max(s.peak_allocated_bytes for s in ranks),
        peak_reserved_bytes=max(s.peak_reserved_bytes for s in ranks),
        device_total_bytes=max(s.device_total_bytes for s in ranks),
        steps=max(s.steps for s in ranks),
        images_per_second=round(sum(s.images_per_second for s in ranks), 3),
        exit_reason=worst.exit_reason,
        message=worst.message[:MESSAGE_LIMIT],
        epochs_done=max(s.epochs_done for s in ranks),
        objects_per_image=max((s.objects_per_image for s in ranks
                               if s.objects_per_image is not None), default=None),
        objects_per_image_mean=max((s.objects_per_image_mean for s in ranks
                                    if s.objects_per_image_mean is not None), default=None),
        model_found=next((s.model_found for s in ranks if s.model_found is not None), None),
        ranks=[[s.rank, s.peak_allocated_bytes, s.peak_reserved_bytes, s.device_total_bytes,
                s.steps, s.exit_code] for s in ranks],
    )
    return out


def encode(summaries: Sequence[Summary]) -> str:
    """One JSON object for the pod, at most MAX_BYTES bytes: paths keep their last
    PATH_LIMIT characters, then the message is shortened as far as needed."""
    data = pod_fields(summaries)
    for key in ("resumed_from", "save_dir"):
        if len(data[key]) > PATH_LIMIT:
            data[key] = "..." + data[key][-(PATH_LIMIT - 3):]
    text = _dumps(data)
    while len(text.encode()) > MAX_BYTES and data["message"]:
        message = data["message"]
        data["message"] = message[: len(message) // 2] + "..." if len(message) > 8 else ""
        text = _dumps(data)
    if len(text.encode()) > MAX_BYTES:  # more ranks than the API allows: keep the maxima
        data.pop("ranks")
        text = _dumps(data)
    return text


def _dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"))


def read_summaries(paths: Sequence[Path]) -> list[Summary]:
    """The per-rank summaries local workers wrote (see ddp.spawn_local_workers)."""
    out = []
    for path in paths:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        rows = data.pop("ranks", None) or []
        if rows and len(rows) == 1:
            data["rank"] = rows[0][0]
        known = {k: v for k, v in data.items() if k in Summary.__dataclass_fields__}
        try:
            out.append(Summary(**known))
        except TypeError:
            continue
    return out


def write_termination_log(summary: Summary | Sequence[Summary], path: Path) -> None:
    """Write the pod's summary; a failure to write must not hide the training outcome."""
    text = encode([summary] if isinstance(summary, Summary) else summary)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as exc:
        print(f"yolofit train: cannot write termination log {path}: {exc}", file=sys.stderr)
