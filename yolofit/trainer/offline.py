"""Keep Ultralytics from reaching the network in training pods.

YOLO_OFFLINE=1 only turns off Ultralytics' online check (update checks, event sync). It does not
stop `check_det_dataset()` from fetching Arial.ttf (it always calls `check_font`, which probes the
URL with requests.head), `check_amp()` from downloading yolo26n.pt, or a missing '*.pt' model or
dataset from being downloaded. `block_downloads()` makes every download fail fast with a message
that names the URL: a pod then fails with a clear reason instead of hanging on timeouts or
silently training on something it fetched.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


class DownloadBlocked(ConnectionError):
    """A download was attempted while offline. A ConnectionError, so Ultralytics' own offline
    handling applies where it has one (check_amp() then skips its check and keeps AMP on)."""


def offline_requested() -> bool:
    return os.environ.get("YOLO_OFFLINE", "").lower() in {"1", "true", "yes"}


def block_downloads() -> None:
    """Patch Ultralytics' download entry points (idempotent)."""
    from ultralytics.data import utils as data_utils
    from ultralytics.utils import downloads

    if getattr(downloads.safe_download, "_yolofit_blocked", False):
        return
    original_is_url = downloads.is_url

    def safe_download(url: str | Path, *args: Any, **kwargs: Any) -> Path:
        if Path(str(url)).exists():  # Ultralytics also uses it to unzip local archives
            return original_safe_download(url, *args, **kwargs)
        raise DownloadBlocked(
            f"offline (YOLO_OFFLINE=1): refusing to download {url}; "
            "mount the file and give its local path"
        )

    def is_url(url: str | Path, check: bool = False) -> bool:
        return original_is_url(url, check=False) and not check  # never probe the network

    original_safe_download = downloads.safe_download
    safe_download._yolofit_blocked = True  # type: ignore[attr-defined]
    downloads.safe_download = safe_download
    downloads.is_url = is_url
    data_utils.safe_download = safe_download  # imported by name there
