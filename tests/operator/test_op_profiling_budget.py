"""A trace runs in its own worker under the memory budget: over the budget it is killed and
its job's key fails with the reason; a worker killed from outside (SIGKILL, as the OOM killer
does) fails the same way; and the next trace always works (a fresh worker, nothing shared).

Real worker processes (spawned, as in production) with the stand-in builder of opfixtures,
which can hog memory or hang on request (by class count)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest
from opfixtures import HANG_NC, HOG_NC

from yolofit.estimator.profile import ProfileKey, ProfileStore
from yolofit.operator.metrics import REGISTRY
from yolofit.operator.profiling import Profiler
from yolofit.operator.settings import OperatorSettings

BUILDER = "opfixtures:build_profile"
MiB = 2**20


def _key(nc: int, model: str = "yolo11x", imgsz: int = 1280) -> ProfileKey:
    return ProfileKey(model, "abc123def456", imgsz, "fp16", "AdamW", nc, False)


class Finished:
    def __init__(self) -> None:
        self.keys: list[ProfileKey] = []
        self.event = asyncio.Event()

    async def __call__(self, key: ProfileKey) -> None:
        self.keys.append(key)
        self.event.set()

    async def wait_for(self, key: ProfileKey, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while key not in self.keys:
            self.event.clear()
            await asyncio.wait_for(self.event.wait(), max(deadline - time.monotonic(), 0.1))


async def _next_trace_works(profiler: Profiler, finished: Finished, store: ProfileStore) -> None:
    ok = _key(2, "yolov8n", 640)
    assert await profiler.start(ok) is None
    await finished.wait_for(ok)
    assert ok.id not in profiler.failed
    profile = store.get(ok)
    assert profile is not None and profile.source == "test-builder"


async def test_a_trace_over_the_budget_is_killed_with_the_reason(tmp_path: Path) -> None:
    store = ProfileStore(cache_dir=tmp_path, shipped=None)
    finished = Finished()
    profiler = Profiler(store, BUILDER, finished, budget_bytes=300 * MiB)

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    failed, rss = sample("yolofit_traces_total", result="failed"), sample(
        "yolofit_trace_peak_rss_bytes_sum")
    try:
        hog = _key(HOG_NC)
        assert await profiler.start(hog) is None
        await finished.wait_for(hog)
        error = profiler.failed[hog.id]
        assert error.startswith("trace of yolo11x@1280 was killed (memory budget 300.0 MiB")
        assert sample("yolofit_traces_total", result="failed") - failed == 1
        assert sample("yolofit_trace_peak_rss_bytes_sum") - rss > 300 * MiB  # what it reached
        assert store.get(hog) is None
        assert await profiler.start(hog) == error  # the job's status keeps saying why
        await _next_trace_works(profiler, finished, store)
        profiler.retry_after = 0  # the interval has passed: a job asking traces it again
        finished.keys.clear()
        assert await profiler.start(hog) is None and hog.id not in profiler.failed
        await finished.wait_for(hog)
        assert profiler.failed[hog.id].startswith(error.split(": it reached")[0])  # anew
    finally:
        profiler.shutdown()


async def test_a_worker_killed_from_outside_fails_its_key_and_the_next_trace_works(
        tmp_path: Path) -> None:
    store = ProfileStore(cache_dir=tmp_path, shipped=None)
    finished = Finished()
    profiler = Profiler(store, BUILDER, finished, budget_bytes=3 * 1024 * MiB)
    try:
        hang = _key(HANG_NC)
        assert await profiler.start(hang) is None
        deadline = time.monotonic() + 60
        while hang.id not in profiler.running:
            assert time.monotonic() < deadline, "the worker never started"
            await asyncio.sleep(0.05)
        pid = profiler.running[hang.id].pid
        await asyncio.sleep(1.5)  # in the builder by now
        os.kill(pid, signal.SIGKILL)  # what the kernel's OOM killer does
        await finished.wait_for(hang)
        assert profiler.failed[hang.id] == (
            "trace of yolo11x@1280 was killed (SIGKILL, memory budget 3.0 GiB; the "
            "container's memory limit or the OOM killer)")
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # reaped, not a zombie
        await _next_trace_works(profiler, finished, store)
    finally:
        profiler.shutdown()


def test_the_budget_setting_is_a_size_or_a_one_line_error() -> None:
    assert OperatorSettings(trace_memory_budget="3072Mi").trace_memory_budget_bytes == 3 * 2**30
    assert OperatorSettings().trace_memory_budget_bytes is None
    with pytest.raises(ValueError, match="trace_memory_budget: 'lots' is not a size; write e.g"):
        OperatorSettings(trace_memory_budget="lots")
