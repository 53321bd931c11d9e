"""Measured peak memory of one rank: CUDA allocator peaks, or the process's peak RSS on CPU.

On CUDA the three numbers the estimator predicts are measured: the caching allocator's peak
allocated and peak reserved bytes, and the device total the process used (total - free from
cudaMemGetInfo, which includes the CUDA context and library workspaces; one process per GPU in a
pod). On CPU there is no VRAM: all three carry the process's peak resident set size and the kind is
"host-rss", so nobody mistakes it for a GPU number.
"""

from __future__ import annotations

import resource
import sys
from dataclasses import dataclass
from typing import Literal

import torch

MemoryKind = Literal["cuda", "host-rss"]


def host_peak_rss_bytes() -> int:
    """Peak RSS of this process (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


@dataclass(frozen=True)
class MemoryPeaks:
    kind: MemoryKind
    peak_allocated_bytes: int
    peak_reserved_bytes: int
    device_total_bytes: int
    host_peak_rss_bytes: int


class MemoryTracker:
    """Samples the device total at every step (cudaMemGetInfo has no peak of its own)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind: MemoryKind = "cuda" if device.type == "cuda" else "host-rss"
        self._device_used_peak = 0
        if self.kind == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    def sample(self) -> None:
        if self.kind == "cuda":
            free, total = torch.cuda.mem_get_info(self.device)
            self._device_used_peak = max(self._device_used_peak, total - free)

    def peaks(self) -> MemoryPeaks:
        rss = host_peak_rss_bytes()
        if self.kind != "cuda":
            return MemoryPeaks("host-rss", rss, rss, rss, rss)
        self.sample()
        return MemoryPeaks(
            "cuda",
            peak_allocated_bytes=torch.cuda.max_memory_allocated(self.device),
            peak_reserved_bytes=torch.cuda.max_memory_reserved(self.device),
            device_total_bytes=self._device_used_peak,
            host_peak_rss_bytes=rss,
        )
