"""The operator's Profiling path with the real profile builder, end to end, once.

Every other operator and CLI test replaces the builder with a stand-in (opfixtures.build_profile)
so a job is not held up by tracing. This one runs what production runs: the operator's
Profiler starts the default builder (the estimator's tracer) in a worker process, the
profile lands in the store's cache directory, and the planner plans from it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from yolofit.estimator.gpu import known_classes
from yolofit.estimator.identity import resolve_model
from yolofit.estimator.planner import PlanRequest, plan_for_class
from yolofit.estimator.profile import ProfileKey, ProfileStore
from yolofit.operator.profiling import Profiler
from yolofit.operator.settings import OperatorSettings

pytestmark = pytest.mark.slow  # a real trace of yolov8n in a worker process


async def test_a_missing_profile_is_traced_by_the_real_builder(tmp_path: Path) -> None:
    builder = OperatorSettings.model_fields["profile_builder"].default
    assert builder == "yolofit.estimator.build:build_profile"  # what production runs
    ref = resolve_model("yolov8n.yaml")
    key = ProfileKey("yolov8n", ref.config_hash, 64, "off", "AdamW", 2, False)
    store = ProfileStore(cache_dir=tmp_path, shipped=None)
    finished = asyncio.Event()

    async def done(k: ProfileKey) -> None:
        assert k == key
        finished.set()

    profiler = Profiler(store, builder, done)
    try:
        assert await profiler.start(key) is None
        assert await profiler.start(key) is None  # already running: not started twice
        await asyncio.wait_for(finished.wait(), timeout=600)
    finally:
        profiler.shutdown()
    assert profiler.failed == {}

    # Persisted: a fresh store (another operator replica, a restart) finds it on disk.
    profile = ProfileStore(cache_dir=tmp_path, shipped=None).get(key)
    assert profile is not None and profile.source.startswith("traced on CPU")
    assert 2_900_000 < profile.params < 3_200_000  # yolov8n with a 2-class head
    # FP32 weights, gradients and AdamW's two moments are at least 16 bytes a parameter.
    assert profile.allocated.fixed >= 16 * profile.params
    assert profile.allocated.per_sample > 0 and profile.allocated.per_object >= 0
    assert profile.reserved.fixed >= profile.allocated.fixed
    assert len(profile.traced_at) >= 4

    t4 = known_classes()["t4"]
    result = plan_for_class(PlanRequest(model="yolov8n.yaml", nc=2, imgsz=64, amp="off",
                                        objects=5), t4, store)
    assert result.fits and result.profile_id == key.id
    assert result.batch_per_gpu == 64  # tiny images: the nbs cap binds, not memory
