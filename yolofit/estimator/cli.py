"""`yolofit estimate`, `yolofit plan` and `yolofit profiles build|list`.

Arguments are taken as strings and checked here, so every bad input is one line that names
its flag (argparse's own errors print the usage block). A missing profile is traced once
with the tracer (imported lazily: torch and ultralytics load only then), with progress on
stderr, and cached in the profile store.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from yolofit.cli import UsageError
from yolofit.estimator.gpu import GpuClass, from_memory, get_gpu_class, known_classes
from yolofit.estimator.identity import TASKS, default_imgsz
from yolofit.estimator.planner import AMP_CHOICES, Plan, PlanRequest, plan
from yolofit.estimator.profile import (
    AMP_MODES,
    OPTIMIZERS,
    SHIPPED_PROFILES,
    Profile,
    ProfileKey,
    ProfileMissing,
    ProfileStore,
    UnknownModel,
    estimate,
    model_families,
    objects_per_sample,
    resolve_model,
)
from yolofit.units import format_bytes, parse_bytes

_FAMILIES = ("yolov3(-tiny,-spp)u, yolov5{n,s,m,l,x}u, yolov6{n..x}, yolov8{n..x}, "
             "yolov9{t,s,m,c,e}, yolov10{n,s,m,b,l,x}, yolo11{n..x}, yolo12{n..x}, yolo26{n..x}")
MAX_TRACES_PER_COMMAND = 8  # amp x checkpointing x a few imgsz; a loop guard, not a policy


# --- argument checking ---------------------------------------------------------------------

def _int(flag: str, text: str, minimum: int = 1) -> int:
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"{flag}: expected an integer, got {text!r}") from None
    if value < minimum:
        raise UsageError(f"{flag}: must be at least {minimum}, got {value}")
    return value


def _imgsz(flag: str, text: str) -> int:
    value = _int(flag, text, minimum=-(2**31))
    if value < 32 or value % 32:
        raise UsageError(f"{flag}: must be a positive multiple of 32 (the model stride), "
                         f"got {text}")
    return value


def _imgsz_or_default(text: str | None, task: str) -> int:
    """--imgsz, else what Ultralytics trains the task at (640; classify 224)."""
    return default_imgsz(task) if text is None else _imgsz("--imgsz", text)


def _choice(flag: str, text: str, choices: tuple[str, ...]) -> str:
    for choice in choices:
        if text.lower() == choice.lower():
            return choice
    raise UsageError(f"{flag}: must be one of {', '.join(choices)}, got {text!r}")


def _model(text: str, task: str | None = None) -> tuple[str, str, str]:
    try:
        ref = resolve_model(text)
    except UnknownModel as exc:
        if Path(text).is_file():
            raise UsageError(f"--model: {exc}") from None
        raise UsageError(f"--model: {exc}; give a local .yaml/.pt or a shipped detection "
                         f"model: {_FAMILIES} (e.g. yolov8s.yaml, yolo11m.yaml); YAMLs: "
                         f"{', '.join(model_families())}") from None
    if task is not None and task != ref.task:
        raise UsageError(f"--task: {text} trains task {ref.task}, not {task}; pass "
                         f"--task {ref.task} or omit it")
    return ref.name, ref.config_hash, ref.task


def _optimizer(text: str) -> str:
    chosen = _choice("--optimizer", text, ("auto", *OPTIMIZERS))
    # Without the dataset size we cannot repeat Ultralytics' auto rule (MuSGD above 10000
    # iterations); AdamW is what it picks for all but long runs.
    return "AdamW" if chosen == "auto" else chosen


def _gpu(flag: str, text: str) -> GpuClass:
    try:
        return get_gpu_class(text)
    except KeyError:
        raise UsageError(f"{flag}: unknown GPU class {text!r}; known: "
                         f"{', '.join(known_classes())}") from None


def _size(flag: str, text: str) -> int:
    try:
        value = parse_bytes(text)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from None
    if value < 2**30:
        raise UsageError(f"{flag}: {text!r} is less than 1 GiB; write e.g. 15GiB or 80GB")
    return value


# --- tracing on demand ---------------------------------------------------------------------

def _progress(message: str) -> None:
    print(f"[yolofit] {message}", file=sys.stderr, flush=True)


# The tracer helper's build_profile(key, progress=None) -> Profile; the first module that
# has it wins (the operator's setting `profile_builder` names one of these too).
BUILDER_MODULES = ("yolofit.estimator.build", "yolofit.estimator.tracer")


def _tracer() -> Callable[..., Profile]:
    errors = []
    for name in BUILDER_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            errors.append(str(exc))
            continue
        if hasattr(module, "build_profile"):
            return module.build_profile  # type: ignore[no-any-return]
        errors.append(f"{name} has no build_profile")
    raise UsageError(f"--model: no profile cached and the tracer is unavailable "
                     f"({'; '.join(errors)})")


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Ultralytics logs to stdout (its handler holds the stdout of import time); while
    tracing, send file descriptor 1 to stderr so `--json` output stays parseable."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def trace_and_store(store: ProfileStore, key: ProfileKey, model: str | None = None) -> Profile:
    """Trace `key` once (first use of a model configuration), cache it, return it. `model`
    is the path the user gave when it is a local file (the key holds only its stem)."""
    _progress(f"no profile for {key.id}; tracing one training step on CPU (once, then cached)")
    from yolofit.estimator.trace_worker import limit_heap_retention

    limit_heap_retention()  # this process exists to trace now: keep its heap from growing
    extra: dict[str, Any] = {}
    with _stdout_to_stderr():
        if model is not None and Path(model).is_file():
            from yolofit.estimator.models import build_model

            extra["model"] = build_model(resolve_model(model), nc=key.nc)
        profile = _tracer()(key, progress=_progress, **extra)
    path = store.put(profile)
    _progress(f"profile cached in {path}")
    return profile


def _profile_for(store: ProfileStore, key: ProfileKey, model: str) -> Profile:
    return store.get(key) or trace_and_store(store, key, model)


# --- yolofit estimate ----------------------------------------------------------------------

def _task(text: str | None) -> str | None:
    return None if text is None else _choice("--task", text, TASKS)


def _estimate_cmd(args: argparse.Namespace) -> int:
    name, chash, task = _model(args.model, _task(args.task))
    imgsz = _imgsz_or_default(args.imgsz, task)
    batch = _int("--batch", args.batch)
    amp = _choice("--amp", args.amp, AMP_MODES)
    objects = _int("--objects", args.objects, minimum=0)
    mean = _mean_objects(args, objects)
    nc = _int("--nc", args.nc)
    optimizer = _optimizer(args.optimizer)
    gpu = _gpu("--gpu", args.gpu)
    if args.gpu_memory is not None:
        gpu = dataclasses.replace(gpu, usable_bytes=_size("--gpu-memory", args.gpu_memory))
    key = ProfileKey(name, chash, imgsz, amp, optimizer, nc, args.checkpointing)
    profile = _profile_for(ProfileStore(), key, args.model)
    est = estimate(profile, batch, objects, gpu, mean_objects=mean)
    doc: dict[str, Any] = {
        **est.to_dict(), "task": profile.task, "profile_id": key.id, "gpu_class": gpu.name,
        "batch": batch,
        "objects_per_image": objects, "objects_per_sample": objects_per_sample(objects),
        "mean_objects_per_image": mean,
        "usable_bytes": gpu.usable_bytes, "budget_bytes": gpu.budget_bytes,
        "fits": est.device_total_bytes <= gpu.budget_bytes, "profile_source": profile.source,
    }
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(_estimate_table(doc, key, gpu))
    return 0


def _mean_objects(args: argparse.Namespace, objects: int) -> int | None:
    if args.mean_objects is None:
        return None
    mean = _int("--mean-objects", args.mean_objects, minimum=0)
    if mean > objects:
        raise UsageError(f"--mean-objects: must not exceed --objects ({objects}), got {mean}; "
                         "give the dataset's mean labels per image (yolofit data stats)")
    return mean


def _estimate_table(doc: dict[str, Any], key: ProfileKey, gpu: GpuClass) -> str:
    lines = [f"{key.model} ({doc['task']})  imgsz {key.imgsz}  batch {doc['batch']}  "
             f"amp {key.amp}  "
             f"{key.optimizer}  nc {key.nc}  checkpointing {'on' if key.checkpointing else 'off'}"
             f"  objects {doc['objects_per_image']}/image ({doc['objects_per_sample']}/sample)",
             "", f"{'component':<22}{'MiB':>12}{'GiB':>10}"]
    for component, n in doc["breakdown"].items():
        lines.append(f"{component:<22}{n / 2**20:>12.1f}{n / 2**30:>10.2f}")
    lines.append("")
    for label, field in (("peak allocated", "peak_allocated_bytes"),
                         ("peak reserved", "peak_reserved_bytes"),
                         ("device total", "device_total_bytes")):
        n = doc[field]
        lines.append(f"{label:<22}{n / 2**20:>12.1f}{n / 2**30:>10.2f}")
    verdict = "fits" if doc["fits"] else "does NOT fit"
    lines.append(f"\n{verdict} on {gpu.name}: {format_bytes(doc['device_total_bytes'])} of "
                 f"{format_bytes(gpu.budget_bytes)} budget ({format_bytes(gpu.usable_bytes)} "
                 f"usable, {gpu.headroom:.0%} headroom); peak reserved is what Ultralytics "
                 f"prints as GPU_mem")
    lines.append(f"profile: {doc['profile_source']}")
    return "\n".join(lines)


# --- yolofit plan --------------------------------------------------------------------------

def _plan_classes(args: argparse.Namespace) -> list[GpuClass]:
    headroom = None
    if args.headroom is not None:
        try:
            headroom = float(args.headroom)
        except ValueError:
            raise UsageError(f"--headroom: expected a fraction like 0.1, got {args.headroom!r}"
                             ) from None
        if not 0.0 <= headroom < 1.0:
            raise UsageError(f"--headroom: must be in [0, 1), got {args.headroom}")
    names = [n for n in (args.gpu_class or "").split(",") if n.strip()]
    classes = [_gpu("--gpu-class", n.strip()) for n in names]
    if args.gpu_memory is not None:
        usable = _size("--gpu-memory", args.gpu_memory)
        if classes:
            classes = [dataclasses.replace(g, usable_bytes=usable) for g in classes]
        else:
            # A bare size says nothing of the arch: trust a bf16 pin (auto picks fp16).
            bf16 = args.amp.lower() == "bf16"
            classes = [from_memory(usable, name=args.gpu_memory, bf16=bf16)]
    if not classes:
        raise UsageError("--gpu-memory: give --gpu-memory SIZE or --gpu-class NAME[,NAME...]")
    if headroom is not None:
        classes = [g.with_headroom(headroom) for g in classes]
    return classes


def _plan_request(args: argparse.Namespace) -> PlanRequest:
    _, chash, task = _model(args.model, _task(args.task))
    fields = dict(
        model=args.model, config_hash=chash, imgsz=_imgsz_or_default(args.imgsz, task),
        nc=_int("--nc", args.nc), nbs=_int("--nbs", args.nbs),
        world_size=_int("--gpus", args.gpus) * _int("--nodes", args.nodes),
        amp=_choice("--amp", args.amp, AMP_CHOICES), objects=_int("--objects", args.objects, 0),
        mean_objects=_mean_objects(args, _int("--objects", args.objects, 0)),
        optimizer=_optimizer(args.optimizer), allow_checkpointing=not args.no_checkpointing,
        allow_imgsz_reduction=args.min_imgsz is not None,
        min_imgsz=_imgsz("--min-imgsz", args.min_imgsz) if args.min_imgsz else None,
        batch_per_gpu=_int("--batch", args.batch) if args.batch is not None else None,
    )
    try:
        return PlanRequest(**fields)
    except ValueError as exc:  # checked above flag by flag; this is a backstop
        raise UsageError(str(exc)) from None


def _plan_cmd(args: argparse.Namespace) -> int:
    req = _plan_request(args)
    classes = _plan_classes(args)
    store = ProfileStore()
    for _ in range(MAX_TRACES_PER_COMMAND + 1):
        try:
            result = plan(req, classes, store)
            break
        except ProfileMissing as missing:
            trace_and_store(store, missing.key, args.model)
    else:
        raise UsageError(f"--model: still missing profiles after {MAX_TRACES_PER_COMMAND} traces")
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(_plan_text(result))
    return 0 if result.fits else 1


def _plan_text(p: Plan) -> str:
    if not p.fits:
        return f"does not fit: {p.reason}"
    args = " ".join(f"{k}={v}" for k, v in p.ultralytics_args.items())
    return "\n".join([
        f"fits on {p.gpu_class}: batch {p.batch_per_gpu} per GPU x {p.world_size} GPU(s) = "
        f"{p.batch_per_gpu * p.world_size}, accumulate {p.accumulate} "
        f"(effective batch {p.batch_per_gpu * p.world_size * p.accumulate}), amp {p.amp}, "
        f"checkpointing {'on' if p.checkpointing else 'off'}, imgsz {p.imgsz}",
        f"predicted per GPU: allocated {format_bytes(p.predicted_allocated_bytes)}, reserved "
        f"{format_bytes(p.predicted_reserved_bytes)}, device total "
        f"{format_bytes(p.predicted_device_bytes)} of {format_bytes(p.budget_bytes)} budget "
        f"({format_bytes(p.usable_bytes)} usable) - utilisation {p.utilisation:.0%}",
        f"ultralytics args: {args}  (Ultralytics derives accumulate = round(nbs / batch))",
    ])


# --- yolofit profiles ----------------------------------------------------------------------

def _profiles_list(args: argparse.Namespace) -> int:
    store = ProfileStore()
    profiles = sorted(store.profiles.values(), key=lambda p: p.key.id)
    if args.json:
        print(json.dumps([p.to_dict() for p in profiles], indent=1))
        return 0
    print(f"{len(profiles)} profiles (shipped: {store.shipped}; cache: {store.cache_dir})")
    for p in profiles:
        print(f"{p.key.id:<58} params {p.params / 1e6:6.1f}M  reserved "
              f"{format_bytes(p.reserved.fixed)} + {format_bytes(p.reserved.per_sample)}/sample"
              f"  [{p.source}]")
    return 0


def _profiles_build(args: argparse.Namespace) -> int:
    """With --model: trace the keys into the profile cache. Without --model (the shipped
    set) or with --out: the tracer helper's precompute() writes a shipped-profiles file."""
    models = [m.strip() for m in (args.model or "").split(",") if m.strip()]
    sizes = [_imgsz("--imgsz", s) for s in args.imgsz.split(",")]
    amps = [_choice("--amp", a, AMP_MODES) for a in args.amp.split(",")]
    optimizer = _optimizer(args.optimizer)
    nc = _int("--nc", args.nc)
    checkpointing = (False, True) if args.checkpointing else (False,)
    refs = {m: _model(m) for m in models}
    if not models or args.out:
        return _precompute(models, sizes, amps, optimizer, nc, checkpointing, args)
    store = ProfileStore()
    for model, (name, chash, _) in refs.items():
        for imgsz in sizes:
            for amp in amps:
                for ckpt in checkpointing:
                    key = ProfileKey(name, chash, imgsz, amp, optimizer, nc, ckpt)
                    if store.traced(key) is None or args.force:
                        trace_and_store(store, key, model)
                    else:
                        _progress(f"{key.id}: already in the store")
    return 0


def _precompute(models: list[str], sizes: list[int], amps: list[str], optimizer: str, nc: int,
                checkpointing: tuple[bool, ...], args: argparse.Namespace) -> int:
    budget = None
    if args.budget is not None:
        budget = float(_int("--budget", args.budget))
    try:
        module = importlib.import_module("yolofit.estimator.precompute")
    except ImportError as exc:
        raise UsageError(f"--model: the precompute tracer is unavailable ({exc})") from None
    out = Path(args.out) if args.out else SHIPPED_PROFILES
    keys = module.keys_for(models or module.SHIPPED_MODELS, sizes, amps, [optimizer],
                           checkpointing, nc)
    if args.force and out.is_file():
        raise UsageError(f"--force: delete {out} to re-trace a shipped-profiles file")
    with _stdout_to_stderr():
        profiles = module.precompute(keys, out, _progress, budget)
    print(f"{len(profiles)} profiles in {out}")
    return 0


# --- yolofit data stats --------------------------------------------------------------------

def _data_stats(args: argparse.Namespace) -> int:
    from yolofit.estimator.density import dataset_stats, render

    path = Path(args.data)
    if not path.is_file():
        raise UsageError(f"DATA: no dataset YAML at {args.data}")
    try:
        stats = dataset_stats(path, mosaic=not args.no_mosaic)
    except (OSError, ValueError) as exc:
        raise UsageError(f"DATA: {exc}") from None
    if args.json:
        print(json.dumps([s.to_dict() for s in stats], indent=2))
    else:
        print(render(stats))
    return 0


# --- registration --------------------------------------------------------------------------

def _common(p: argparse.ArgumentParser, amp_default: str, amp_choices: tuple[str, ...]) -> None:
    p.add_argument("--model", required=True,
                   help="shipped model of any task (yolov8s.yaml, yolo11m, yolo11s-seg, "
                        "yolo11s-pose, yolo11s-obb, yolo11s-cls) or a local .yaml/.pt")
    p.add_argument("--imgsz", help="training image size, multiple of 32; default "
                   "Ultralytics' for the task: 640, classify 224")
    p.add_argument("--amp", default=amp_default, help=f"one of {', '.join(amp_choices)}")
    p.add_argument("--objects", default="50",
                   help="most labels in one image of the dataset (mosaic puts up to 4x in a "
                        "sample; the estimate accounts for it): sizes the assigner's padded "
                        "targets")
    p.add_argument("--mean-objects", default=None,
                   help="mean labels per image of the dataset (yolofit data stats): sizes the "
                        "loss terms that follow the real labels (segment masks, keypoints); "
                        "default: every sample counted at --objects (an upper bound)")
    p.add_argument("--optimizer", default="auto",
                   help="auto (taken as AdamW, Ultralytics' pick below 10000 iterations), SGD, "
                        "AdamW or MuSGD")
    p.add_argument("--nc", default="80", help="number of classes")
    p.add_argument("--task", help=f"{', '.join(TASKS)}; default the model's own (checked "
                                   "against it when given)")
    p.add_argument("--json", action="store_true", help="print JSON")


def register(subparsers: Any) -> None:
    est = subparsers.add_parser(
        "estimate", help="peak GPU memory of one training configuration, with a breakdown",
        description="Peak GPU memory per GPU of an Ultralytics training step: weights, "
                    "gradients, optimizer state, EMA, activations, loss, validation, "
                    "workspaces, context, allocator overhead.")
    _common(est, "fp16", AMP_MODES)
    est.add_argument("--batch", default="16", help="batch per GPU")
    est.add_argument("--checkpointing", action="store_true", help="activation checkpointing on")
    est.add_argument("--gpu", "--gpu-class", dest="gpu", default="t4",
                     help=f"GPU class for context/workspaces ({', '.join(known_classes())})")
    est.add_argument("--gpu-memory", help="override the class's usable memory, e.g. 15GiB")
    est.set_defaults(func=_estimate_cmd)

    pl = subparsers.add_parser(
        "plan", help="fit a training job to a GPU: AMP, batch, accumulation, checkpointing",
        description="Choose AMP, the largest batch per GPU, accumulation, checkpointing and "
                    "(with --min-imgsz) a smaller imgsz. Exit code 1 when it does not fit.")
    _common(pl, "auto", AMP_CHOICES)
    pl.add_argument("--gpu-memory", help="usable memory per GPU, e.g. 15GiB")
    pl.add_argument("--gpu-class", "--gpu", dest="gpu_class",
                    help="GPU class(es) in preference order, e.g. t4,a100-40gb")
    pl.add_argument("--gpus", default="1", help="GPUs per node")
    pl.add_argument("--nodes", default="1", help="nodes (world size = gpus x nodes)")
    pl.add_argument("--nbs", default="64", help="nominal batch size (Ultralytics nbs)")
    pl.add_argument("--batch", help="pin the batch per GPU")
    pl.add_argument("--headroom", help="fraction of usable memory kept free (default 0.10)")
    pl.add_argument("--no-checkpointing", action="store_true",
                    help="do not use activation checkpointing as a lever")
    pl.add_argument("--min-imgsz", help="allow reducing imgsz down to this floor")
    pl.set_defaults(func=_plan_cmd)

    prof = subparsers.add_parser("profiles", help="build or list memory profiles")
    psub = prof.add_subparsers(dest="profiles_command", metavar="ACTION", required=True)
    build = psub.add_parser(
        "build", help="trace profiles into the cache, or (no --model / --out) precompute the "
                      "shipped-profiles file")
    build.add_argument("--model", help="model(s), comma-separated; omit for the shipped set "
                                       "(yolov8, yolo11, yolo26 x n/s/m/l/x)")
    build.add_argument("--out", help="write a shipped-profiles file here (default without "
                                     "--model: the package's data/profiles.json)")
    build.add_argument("--budget", help="precompute: stop after this many seconds")
    build.add_argument("--imgsz", default="320,640,1280", help="comma-separated sizes")
    build.add_argument("--amp", default="off,fp16", help="comma-separated AMP modes")
    build.add_argument("--optimizer", default="auto")
    build.add_argument("--nc", default="80")
    build.add_argument("--checkpointing", action="store_true", help="also trace checkpointing")
    build.add_argument("--force", action="store_true", help="re-trace profiles already stored")
    build.set_defaults(func=_profiles_build)
    data = subparsers.add_parser("data", help="dataset facts the memory plan depends on")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    stats = dsub.add_parser(
        "stats", help="objects per image (mean, p99, max) and per training sample, per split",
        description="Reads Ultralytics' label cache where present, else the label files. "
                    "max/sample bounds what one training sample (and so every sample of a "
                    "padded batch) can carry: with mosaic, the four densest images together.")
    stats.add_argument("data", metavar="DATA.yaml")
    stats.add_argument("--no-mosaic", action="store_true", help="training without mosaic")
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(func=_data_stats)
    lst = psub.add_parser("list", help="list shipped and cached profiles")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=_profiles_list)
