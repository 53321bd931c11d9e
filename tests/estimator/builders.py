"""Short builders for hand-made profiles and GPU classes (no tracing)."""

from __future__ import annotations

from yolofit.estimator.gpu import GpuClass
from yolofit.estimator.profile import Profile, ProfileKey, Terms

MiB = 2**20
GiB = 2**30
HASH = "abc123def456"


def key(imgsz: int = 640, amp: str = "fp16", ckpt: bool = False, model: str = "yolov8s",
        optimizer: str = "AdamW", nc: int = 80) -> ProfileKey:
    return ProfileKey(model, HASH, imgsz, amp, optimizer, nc, ckpt)


def profile(k: ProfileKey, fixed: int = 1 * GiB, per_sample: int = 512 * MiB,
            per_object: int = 0, overhead: Terms | None = None,
            params: int = 10_000_000, per_mean_object: int = 0) -> Profile:
    """Allocated = fixed + per_sample*b + per_object*b*o + per_mean_object*b*mean;
    reserved adds `overhead`."""
    overhead = overhead or Terms(0, 0)
    weights = Terms(4 * params, 0)
    rest = Terms(fixed - 4 * 4 * params, per_sample, per_object, per_mean_object)
    breakdown = {"weights": weights, "gradients": weights, "optimizer_state": weights + weights,
                 "activations": rest, "allocator_overhead": overhead}
    allocated = Terms(fixed, per_sample, per_object, per_mean_object)
    return Profile(k, params, allocated, allocated + overhead, breakdown,
                   [{"batch": 1}, {"batch": 2}], "hand-made")


def gpu(name: str = "lab", usable: int = 10 * GiB, bf16: bool = False, headroom: float = 0.1,
        context: int = 500 * MiB, cublas: int = 0, cudnn: int = 0, fragmentation: float = 0.0,
        nccl: int = 0) -> GpuClass:
    return GpuClass(name=name, memory_bytes=usable, usable_bytes=usable, bf16=bf16,
                    headroom=headroom, cuda_context_bytes=context, cublas_workspace_bytes=cublas,
                    cudnn_workspace_bytes=cudnn, fragmentation=fragmentation, nccl_bytes=nccl)
