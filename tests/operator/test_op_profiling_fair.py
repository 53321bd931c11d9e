"""The profiler traces missing keys fairly across namespaces: a namespace that asks for one
key after another namespace asked for many gets the next free worker, not the end of the
line; a queued key whose asking jobs were all deleted is not traced. Real worker processes
with the stand-in builder of opfixtures (about a second each)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from yolofit.estimator.profile import ProfileKey, ProfileStore
from yolofit.operator.metrics import REGISTRY
from yolofit.operator.profiling import Profiler

BUILDER = "opfixtures:build_profile"


def _key(nc: int) -> ProfileKey:
    return ProfileKey("yolov8n", "abc123def456", 640, "fp16", "AdamW", nc, False)


async def test_one_namespaces_burst_does_not_hold_another_namespaces_first_estimate(
        tmp_path: Path) -> None:
    store = ProfileStore(cache_dir=tmp_path, shipped=None)
    order: list[int] = []
    all_done = asyncio.Event()

    async def done(key: ProfileKey) -> None:
        order.append(key.nc)
        if len(order) == 3:
            all_done.set()

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = {r: sample("yolofit_traces_total", result=r) for r in ("ok", "dropped")}
    seconds_before = sample("yolofit_trace_duration_seconds_count")
    profiler = Profiler(store, BUILDER, done, workers=1)
    try:
        assert not profiler.busy()
        burst, quiet, doomed = [_key(nc) for nc in (3, 4)], _key(5), _key(6)
        for i, key in enumerate(burst):  # the first starts at once, the second waits
            assert await profiler.start(key, ("flood", f"j{i}")) is None
        assert await profiler.start(burst[1], ("flood", "j1")) is None  # again: queued once
        assert await profiler.start(burst[1], ("other", "o")) is None  # another job asks
        assert await profiler.start(quiet, ("quiet", "q")) is None
        assert await profiler.start(doomed, ("doomed", "d")) is None
        assert len(profiler.inflight) == 1 and len(profiler.queue) == 3 and profiler.busy()
        # What the jobs' status says (Profiler.ahead): the running key none, the quiet
        # namespace's key first in line although it asked last.
        assert [profiler.ahead(k) for k in (burst[0], quiet, doomed, burst[1])] == [
            None, 0, 1, 2]
        assert [sample("yolofit_trace_queue_keys", namespace=ns)
                for ns in ("flood", "quiet", "doomed")] == [1, 1, 1]
        profiler.forget(("doomed", "d"))  # deleted before its key's turn: not traced
        profiler.forget(("flood", "j1"))  # ...but ("other", "o") still waits for burst[1]
        await asyncio.wait_for(all_done.wait(), 120)
        assert order == [3, 5, 4]  # first come, first served would be [3, 4, 5]
        assert all(store.get(k) is not None for k in (*burst, quiet))
        assert not profiler.inflight and len(profiler.queue) == 0
        await asyncio.sleep(0)  # the last trace's task ends (its `done` has run)
        assert not profiler.busy()  # (a replica that stops leading stops its server now)
        assert store.get(doomed) is None and 6 not in order
        # What an SRE sees: three traces ok, one dropped, each timed; the queue drained.
        assert sample("yolofit_traces_total", result="ok") - before["ok"] == 3
        assert sample("yolofit_traces_total", result="dropped") - before["dropped"] == 1
        assert sample("yolofit_trace_duration_seconds_count") - seconds_before == 3
        assert sample("yolofit_trace_queue_keys", namespace="flood") == 0
    finally:
        profiler.shutdown()
