"""Hand-made memory profiles for tests (no tracing): linear terms chosen per test; and the
short spec and policy builders of the pure tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from yolofit.estimator.profile import Profile, ProfileKey, ProfileStore, Terms
from yolofit.operator.api import GPUCapacityPolicySpec, YOLOTrainingJobSpec
from yolofit.operator.testing import write_synthetic_profiles as make_profiles

__all__ = ["build_profile", "make_profiles", "make_two_models", "pol", "spec", "summary"]

GiB = 2**30
MiB = 2**20
# Above every shipped class count (1-80 are interpolated from shipped profiles, never traced):
FAILING_NC = 113  # build_profile fails for this class count (the ProfilingFailed path)
HOG_NC = 114  # build_profile touches memory until it is stopped (the budget's path)
HANG_NC = 115  # build_profile waits until it is killed (the killed-worker path)


def build_profile(key: ProfileKey) -> Profile:
    """A stand-in tracer for the operator's Profiling path (YOLOFIT_OPERATOR_PROFILE_BUILDER
    =opfixtures:build_profile): a small profile for any key, after a short pause; it fails
    for FAILING_NC classes."""
    import time

    time.sleep(1.0)
    if key.nc == HOG_NC:
        held = []
        for _ in range(64):  # up to 4 GiB, 64 MiB every 50 ms, every page written
            held.append(bytearray(64 * MiB))
            time.sleep(0.05)
    if key.nc == HANG_NC:
        time.sleep(3600)
    if key.nc == FAILING_NC:
        raise RuntimeError(f"tracer crashed on {key.model} with {key.nc} classes (test builder)")
    per_sample = int(150 * MiB * (0.5 if key.checkpointing else 1.0))
    return Profile(key=key, params=11_000_000, allocated=Terms(GiB, per_sample, 1024),
                   reserved=Terms(int(1.1 * GiB), int(per_sample * 1.1), 1024),
                   breakdown={"activations": Terms(0, per_sample)}, source="test-builder")


def summary(rank: int, peak: int, reason: str = "completed", message: str = "",
            kind: str = "cuda") -> str:
    """A trainer termination summary, written by the trainer's own encoder (the contract)."""
    from yolofit.trainer.summary import Summary

    return Summary(rank=rank, memory_kind=kind,  # type: ignore[arg-type]
                   peak_allocated_bytes=max(peak - 2**29, 0),
                   peak_reserved_bytes=max(peak - 2**28, 0), device_total_bytes=peak,
                   steps=10, images_per_second=12.5, exit_reason=reason,  # type: ignore[arg-type]
                   message=message).to_json()


def make_two_models(d: Path) -> ProfileStore:
    """The operator tests' profiles: yolov8n (1 GiB + 200 MiB a sample) and yolov8x (20 GiB
    + 2 GiB a sample), in `d`."""
    make_profiles(d, "yolov8n", fixed_gib=1.0, per_sample_mib=200)
    make_profiles(d, "yolov8x", fixed_gib=20.0, per_sample_mib=2048)
    return ProfileStore(d, shipped=None)


def spec(**kw: Any) -> YOLOTrainingJobSpec:
    """A yolov8n job spec on /d.yaml, with `kw` (camelCase or snake_case) on top."""
    return YOLOTrainingJobSpec.model_validate({"model": "yolov8n", "data": "/d.yaml", **kw})


def pol(**kw: Any) -> GPUCapacityPolicySpec:
    return GPUCapacityPolicySpec.model_validate(kw)
