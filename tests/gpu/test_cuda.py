"""The GPU tier: what only a CUDA device can show (`make test-gpu`; skipped elsewhere).

- the trainer's MemoryTracker on CUDA reads the caching allocator's peaks and the device total;
- the caching-allocator model the estimator replays traces through gives the real allocator's
  numbers, with and without the expandable segments the training pods switch on;
- the GPU class data's bf16 flag is the device's;
- one real training run per AMP mode, started exactly as the operator starts a pod, measures a
  peak within the stated band of the plan's estimate.

Runs in a few minutes on one GPU (T4 to H200); needs no cluster and downloads nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from estimator.test_allocator import CASES  # tests/ is on sys.path (rootdir-relative packages)

from yolofit.estimator.allocator import CachingAllocatorModel

CUDA = torch.cuda.is_available()
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not CUDA, reason=(
        f"needs a CUDA GPU: torch.cuda.is_available() is False here (torch {torch.__version__}, "
        f"CUDA build {torch.version.cuda or 'none'}); run `make test-gpu` on a machine with one")),
]
MiB = 2**20
GiB = 2**30
# The band the real run must land in, as measured / predicted. Above: the planner budgets
# against the prediction with 10 % headroom by default, so a larger under-prediction would
# let a plan that "fits" run out of memory. Below: an estimate twice the truth wastes half
# the card and would itself be a defect worth a look.
BAND = (0.5, 1.10)


def pod_alloc_conf() -> str:
    """PYTORCH_CUDA_ALLOC_CONF exactly as the operator puts it into a training pod."""
    from trainer.launch import Job

    from yolofit.operator.launch import build_pod

    spec, plan = Job(data=Path("d.yaml"), output=Path("out")).spec_and_plan()
    meta = {"metadata": {"name": "j", "namespace": "ns", "uid": "u"}}
    pod = build_pod(meta, spec, plan, 0, 0, {}, [])
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    return str(env["PYTORCH_CUDA_ALLOC_CONF"])


# --- MemoryTracker's CUDA branch --------------------------------------------------------------

def test_memory_tracker_reads_the_cuda_allocator_and_device_total() -> None:
    from yolofit.trainer.memory import MemoryTracker

    device = torch.device("cuda", 0)
    torch.cuda.empty_cache()
    tracker = MemoryTracker(device)
    assert tracker.kind == "cuda"
    x = torch.empty(256 * MiB, dtype=torch.uint8, device=device)
    tracker.sample()
    del x
    y = torch.empty(MiB, dtype=torch.uint8, device=device)  # after the peak: must not lower it
    peaks = tracker.peaks()
    assert peaks.kind == "cuda"
    assert peaks.peak_allocated_bytes >= 256 * MiB
    assert peaks.peak_reserved_bytes >= peaks.peak_allocated_bytes
    # cudaMemGetInfo's used memory holds the allocator's segments and the CUDA context.
    assert peaks.device_total_bytes > peaks.peak_reserved_bytes
    assert peaks.host_peak_rss_bytes > 0
    del y
    torch.cuda.empty_cache()
    again = MemoryTracker(device).peaks()  # a new tracker starts from a reset peak
    assert again.peak_allocated_bytes < 256 * MiB


# --- the allocator model against the real caching allocator -----------------------------------

REPLAY = """
import json, sys, torch
ops = json.loads(sys.argv[1])
handles = {}
torch.cuda.init()
for op in ops:
    if op[0] == "m":
        handles[op[1]] = torch.empty(op[2], dtype=torch.uint8, device="cuda")
    elif op[0] == "f":
        del handles[op[1]]
    else:
        torch.cuda.empty_cache()
print(json.dumps([torch.cuda.memory_allocated(), torch.cuda.memory_reserved(),
                  torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()]))
"""


@pytest.mark.parametrize(("name", "expandable", "ops", "allocated", "reserved",
                          "peak_allocated", "peak_reserved"), CASES, ids=[c[0] for c in CASES])
def test_allocator_model_matches_the_cuda_caching_allocator(
        name: str, expandable: bool, ops: list[Any], allocated: int, reserved: int,
        peak_allocated: int, peak_reserved: int) -> None:
    """Each hand-worked case of tests/estimator/test_allocator.py, replayed on the real
    allocator in a fresh process; expandable cases with the pods' own allocator setting."""
    env = {k: v for k, v in os.environ.items() if k != "PYTORCH_CUDA_ALLOC_CONF"}
    if expandable:
        env["PYTORCH_CUDA_ALLOC_CONF"] = pod_alloc_conf()
        assert "expandable_segments:True" in env["PYTORCH_CUDA_ALLOC_CONF"]
    out = subprocess.run([sys.executable, "-c", REPLAY, json.dumps(ops)], env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    real = json.loads(out.stdout.strip().splitlines()[-1])
    model = CachingAllocatorModel(expandable_segments=expandable)
    handles: dict[str, int] = {}
    for op in ops:
        if op[0] == "m":
            handles[op[1]] = model.malloc(op[2])
        elif op[0] == "f":
            model.free(handles.pop(op[1]))
        else:
            model.empty_cache()
    s = model.stats()
    assert real == [s.allocated, s.reserved, s.peak_allocated, s.peak_reserved], (
        f"{name}: real allocator (allocated, reserved, peaks) {[v / MiB for v in real]} MiB, "
        f"model {[v / MiB for v in (s.allocated, s.reserved, s.peak_allocated, s.peak_reserved)]}")


# --- the class data and AMP --------------------------------------------------------------------

FAMILIES = {(7, 5): "turing", (8, 0): "ampere", (8, 6): "ampere-ga10x", (8, 7): "ampere-ga10x",
            (8, 9): "ada-lovelace", (9, 0): "hopper"}


def local_class() -> Any:
    """This GPU as the operator would see it through GPU Feature Discovery's labels."""
    from yolofit.estimator.gpu import from_gfd_labels

    free, total = torch.cuda.mem_get_info(0)
    labels = {"nvidia.com/gpu.product": torch.cuda.get_device_name(0).replace(" ", "-"),
              "nvidia.com/gpu.memory": str(total // MiB),
              "nvidia.com/gpu.family": FAMILIES.get(torch.cuda.get_device_capability(0), "")}
    return from_gfd_labels(labels)


def test_the_class_data_knows_whether_this_gpu_has_bf16() -> None:
    has_bf16 = torch.cuda.get_device_capability(0) >= (8, 0)
    assert local_class().bf16 == has_bf16, local_class()
    if has_bf16:
        from yolofit.trainer.trainer import check_bf16_support

        check_bf16_support()  # this Ultralytics takes amp='bf16'
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y = torch.nn.Conv2d(3, 8, 3).cuda()(torch.randn(2, 3, 32, 32, device="cuda"))
        assert y.dtype == torch.bfloat16


# --- one real run against the estimate -----------------------------------------------------------

@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from yolofit.trainer.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("gpu-data"), n_train=48, n_val=16,
                                  imgsz=640, nc=80)


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_a_real_training_run_measures_what_the_plan_predicted(amp: str, dataset: Path,
                                                              tmp_path: Path) -> None:
    """yolov8s at 640, 16 images per step, 3 steps with an optimizer step each and a
    validation pass: planned by the real planner from the shipped profile for this GPU,
    started with the operator's pod command and env, measured by the trainer."""
    from yolofit.estimator.planner import PlanRequest, plan_for_class
    from yolofit.estimator.profile import ProfileStore
    from yolofit.operator.admission import to_api_plan
    from yolofit.operator.api import YOLOTrainingJobSpec
    from yolofit.operator.launch import build_pod
    from yolofit.sandbox.localrun import start_pods, wait_pods

    gpu = local_class()
    if amp == "bf16" and not gpu.bf16:
        pytest.skip(f"{torch.cuda.get_device_name(0)} has no bf16")
    spec = YOLOTrainingJobSpec(model="yolov8s", data=str(dataset), classes=80, imgsz=640,
                               epochs=1, nbs=16, amp=amp, optimizer="AdamW",
                               max_objects_per_image=3, output_dir=str(tmp_path / "runs"),
                               args={"warmup_epochs": 0, "seed": 0, "workers": 2})
    request = PlanRequest(model="yolov8s", nc=80, imgsz=640, nbs=16, amp=amp, objects=3,
                          optimizer="AdamW", batch_per_gpu=16, allow_checkpointing=False)
    planned = plan_for_class(request, gpu, ProfileStore(cache_dir=tmp_path / "profiles"))
    assert planned.fits, planned.reason
    plan = to_api_plan(planned, spec, 0.0)
    meta = {"metadata": {"name": f"gpu-{amp}", "namespace": "gpu-tier", "uid": "u"}}
    pod = build_pod(meta, spec, plan, 0, 0, {}, [], gated=False)
    [rank] = start_pods([pod], tmp_path, extra_env={"YOLOFIT_DEVICE": "cuda"})
    assert wait_pods([rank], timeout=540) == [0], rank.output()[-4000:]

    s = rank.summary()
    s = s[0] if isinstance(s, list) else s
    assert s["memory_kind"] == "cuda" and s["exit_reason"] == "completed"
    assert s["steps"] == 3  # 48 images / 16: the measurement covers optimizer steps
    measured = {"reserved": s["peak_reserved_bytes"], "device": s["device_total_bytes"]}
    predicted = {"reserved": plan.predicted_reserved_bytes,
                 "device": plan.predicted_device_bytes}
    report = json.loads((tmp_path / "runs" / meta["metadata"]["name"] / "yolofit"
                         / "rank-0.json").read_text())
    assert report["amp"] is True
    for what in measured:
        ratio = measured[what] / predicted[what]
        assert BAND[0] <= ratio <= BAND[1], (
            f"{amp} on {gpu.name}: measured peak {what} {measured[what] / GiB:.2f} GiB vs "
            f"predicted {predicted[what] / GiB:.2f} GiB (ratio {ratio:.2f}, band {BAND})")
