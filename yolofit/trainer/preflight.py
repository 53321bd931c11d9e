"""Pre-flight: before the first optimizer step, check what admission had to assume.

Admission plans from the architecture named in spec.model and the class count in
spec.classes; it cannot open the checkpoint (spec.weights) or the data YAML on a tenant's
volume. Here, in the pod, both are read:

- the checkpoint is loaded as Ultralytics loads it (`ultralytics.nn.tasks.load_checkpoint`:
  `torch.load` on CPU, `weights_only` as `ULTRALYTICS_SAFE_LOAD` says) and its architecture
  (the model YAML it carries, with its scale) and class count read;
- the data YAML's `names`/`nc` give the class count the model is built with (Ultralytics
  builds `Model(cfg, nc=data["nc"])`);
- the model Ultralytics will train is built and the checkpoint loaded into it exactly as
  `yolo train model=<arch>.yaml pretrained=<weights>` does (`Model.load`). In 8.4.190 that
  call rebuilds the Detect class branch at the checkpoint's width when the checkpoint has
  more classes (c3 = max(ch, min(nc, 100))), so a checkpoint's nc can add parameters even
  when the data's nc matches the plan: the parameter count of the loaded model is compared,
  not the names.

`compare` (pure) decides: bigger than planned (another family, a larger scale, more
parameters, more classes) stops the rank with exit reason model-differs and
`model_found = {"model": <architecture>, "nc": <classes to plan with>}` in the summary, for
the operator's re-plan; smaller (a smaller scale of the same family, fewer classes) trains
on and reports `model_found`. A smaller checkpoint trains as itself (`model=<weights>`, as
`yolo train model=best.pt`): fine-tuning keeps the checkpoint's architecture. A checkpoint of
another task is a weights source only: the planned architecture trains, Ultralytics transfers
what matches.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from yolofit.estimator.identity import (
    ModelRef,
    UnknownModel,
    checkpoint_architecture,
    config_hash,
    resolve_model,
    task_of,
)
from yolofit.trainer.config import TrainConfig
from yolofit.trainer.errors import DataMissing, ModelDiffers

Relation = Literal["same", "smaller", "other"]
MAX_NAME = 64  # chars of the architecture name kept in the summary


@dataclass(frozen=True)
class Side:
    """One model: its architecture, the classes it is built with and its parameter count."""

    model: str
    config_hash: str
    nc: int
    params: int
    plan_nc: int | None = None  # classes that make the plan's head as wide as this one's


@dataclass(frozen=True)
class Finding:
    verdict: Literal["as-planned", "smaller", "bigger"]
    model_found: dict[str, Any] | None
    message: str


@dataclass(frozen=True)
class Preflight:
    """What to train: `model`/`pretrained` for Ultralytics, and what was found."""

    model: str
    pretrained: str | None
    finding: Finding | None


def relation(planned: dict[str, Any], found: dict[str, Any]) -> Relation:
    """same: one architecture; smaller: the same layers at a scale where no layer is wider
    or repeated more often (as Ultralytics' parse_model scales them); other: anything else."""
    if config_hash(planned) == config_hash(found):
        return "same"
    strip = ("scale", "scales", "yaml_file", "nc", "ch", "channels")
    if {k: v for k, v in planned.items() if k not in strip} != \
            {k: v for k, v in found.items() if k not in strip}:
        return "other"
    mine, theirs = _layer_sizes(planned), _layer_sizes(found)
    if mine is None or theirs is None:
        return "other"
    return "smaller" if all(t <= m for t, m in zip(theirs, mine, strict=True)) else "other"


def _layer_sizes(config: dict[str, Any]) -> list[float] | None:
    """Per layer: its repeats and its output channels at the config's scale
    (max(round(n x depth), 1) and min(c, max_channels) x width, as parse_model does)."""
    scales, scale = config.get("scales"), config.get("scale")
    row: Any = [config.get("depth_multiple", 1.0), config.get("width_multiple", 1.0),
                float("inf")]
    if isinstance(scales, dict) and scales:
        row = scales.get(scale) or next(iter(scales.values()))
    if not isinstance(row, list | tuple) or len(row) < 2:
        return None
    depth, width = float(row[0]), float(row[1])
    max_channels = float(row[2]) if len(row) > 2 else float("inf")
    out: list[float] = []
    for layer in [*config.get("backbone", []), *config.get("head", [])]:
        repeats, args = layer[1], layer[3] if len(layer) > 3 else []
        out.append(max(round(repeats * depth), 1) if isinstance(repeats, int) and repeats > 1
                   else 0)
        first = args[0] if isinstance(args, list) and args else None
        out.append(min(first, max_channels) * width if isinstance(first, int) else 0)
    return out


def compare(planned: Side, found: Side, rel: Relation) -> Finding:
    """The verdict on what trains (`found`) against the plan (`planned`). Pure."""
    plan_nc = max(found.nc, found.plan_nc or found.nc)
    model_found = {"model": found.model[:MAX_NAME], "nc": plan_nc}
    what = (f"{found.model} ({found.params:,} parameters, {found.nc} classes); the plan is for "
            f"{planned.model} ({planned.params:,} parameters, {planned.nc} classes)")
    if rel == "other" or found.params > planned.params or found.nc > planned.nc:
        why = (f" (Ultralytics keeps the checkpoint's {plan_nc}-class head width)"
               if plan_nc > found.nc else "")
        return Finding("bigger", model_found, f"model: training would build {what}; "
                       f"re-plan as {found.model} with nc {plan_nc}{why} (spec.model, "
                       f"spec.classes)")
    if rel == "same" and found.params == planned.params and found.nc == planned.nc:
        return Finding("as-planned", None, "")
    return Finding("smaller", model_found, f"model: training builds {what}; it needs less "
                   f"memory than planned")


def data_classes(data: str) -> int | None:
    """The class count of a dataset YAML (`names`, else `nc`); None for a classification
    folder or a YAML that gives neither (Ultralytics then fails on its own)."""
    path = Path(data)
    if not path.is_file():
        return None
    try:
        d = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    names = d.get("names") if isinstance(d, dict) else None
    if isinstance(names, dict | list) and names:
        return len(names)
    nc = d.get("nc") if isinstance(d, dict) else None
    return nc if isinstance(nc, int) and nc > 0 else None


def sources(cfg: TrainConfig) -> tuple[str | None, str | None]:
    """(checkpoint, planned architecture): spec.weights with spec.model, or a .pt model with
    the architecture its name implies (None when it implies none: an old config)."""
    if cfg.weights:
        return cfg.weights, cfg.model
    if cfg.model.endswith(".pt"):
        try:
            return cfg.model, checkpoint_architecture(cfg.model) + ".yaml"
        except UnknownModel:
            return cfg.model, None
    return None, cfg.model


def load_weights(path: str) -> Any:
    """The checkpoint's model, loaded as Ultralytics' trainer loads `pretrained=`."""
    if not Path(path).is_file():
        raise DataMissing(f"weights: checkpoint not found: {path} (spec.weights; is its volume "
                          "mounted? nothing is downloaded)")
    from ultralytics.nn.tasks import load_checkpoint

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            model, _ = load_checkpoint(path)
    except Exception as exc:  # noqa: BLE001 - any failure to load is one user-facing condition
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataMissing(f"weights: cannot load {path} as an Ultralytics checkpoint "
                          f"({type(exc).__name__}: {first[:300]}); give a .pt saved by "
                          f"Ultralytics training (spec.weights)") from None
    if not isinstance(getattr(model, "yaml", None), dict):
        raise DataMissing(f"weights: {path} holds no Ultralytics model config "
                          "(spec.weights)")
    return model


def _name(config: dict[str, Any], planned: ModelRef | None) -> str:
    """The architecture's name: the plan's when it is the same, else the shipped model the
    checkpoint's YAML file names, else that file's stem."""
    digest = config_hash(config)
    if planned is not None and planned.config_hash == digest:
        return planned.name
    stem = Path(str(config.get("yaml_file") or "custom")).stem
    with contextlib.suppress(UnknownModel, OSError):
        if resolve_model(f"{stem}.yaml").config_hash == digest:
            return stem
    return f"{stem}-{digest}" if stem == "custom" else stem


def _params(model: Any) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def _build(ref: ModelRef, nc: int) -> Any:
    from yolofit.estimator.models import build_model

    return build_model(ref, nc=nc)


def check(cfg: TrainConfig, task: str) -> Preflight:
    """Read the checkpoint and the data; what to train, and the verdict (None: nothing to
    compare). Raises ModelDiffers when it is bigger than planned, DataMissing when the
    checkpoint cannot be loaded."""
    weights, arch = sources(cfg)
    data_nc = data_classes(cfg.data) if task != "classify" else None
    plan_nc = cfg.classes
    planned = None
    with contextlib.suppress(UnknownModel):
        planned = resolve_model(arch) if arch else None
    if weights is None or arch is None or planned is None:  # nothing to compare
        finding = _nc_only(cfg.model, plan_nc, data_nc)
        if cfg.weights:  # an architecture yolofit cannot resolve: Ultralytics builds it
            return _raise_if_bigger(Preflight(cfg.model, cfg.weights, finding))
        return _raise_if_bigger(Preflight(cfg.model, None, finding))
    ckpt = load_weights(weights)
    found_cfg = dict(ckpt.yaml)
    if task_of(found_cfg) != planned.task:  # a weights source for the planned architecture
        found_cfg = dict(planned.config)
    rel = relation(dict(planned.config), found_cfg)
    nc = data_nc or plan_nc or int(found_cfg.get("nc") or 80)
    found_ref = ModelRef(name=_name(found_cfg, planned), config_hash=config_hash(found_cfg),
                         path=Path(weights), config=found_cfg)
    built = _build(found_ref, nc)
    before = _params(built)
    with contextlib.redirect_stdout(io.StringIO()):
        built.load(ckpt, verbose=False)  # Ultralytics' own transfer (may widen the head)
    after = _params(built)
    ckpt_nc = int(getattr(ckpt, "nc", None) or ckpt.yaml.get("nc") or nc)
    found = Side(found_ref.name, found_ref.config_hash, nc, after,
                 plan_nc=ckpt_nc if after > before else None)
    planned_nc = plan_nc or nc
    planned_side = Side(planned.name, planned.config_hash, planned_nc,
                        before if rel == "same" and planned_nc == nc
                        else _params(_build(planned, planned_nc)))
    finding = compare(planned_side, found, rel)
    # A smaller architecture trains as itself; the planned one otherwise.
    model = weights if rel == "smaller" else arch
    return _raise_if_bigger(Preflight(model, None if model == weights else weights, finding))


def _nc_only(model: str, plan_nc: int | None, data_nc: int | None) -> Finding | None:
    """No checkpoint: only the data's classes can differ from the plan."""
    if plan_nc is None or data_nc is None or plan_nc == data_nc:
        return None
    name = Path(model).stem
    found = {"model": name[:MAX_NAME], "nc": data_nc}
    if data_nc > plan_nc:
        return Finding("bigger", found, f"data: the dataset has {data_nc} classes, the plan "
                       f"assumed {plan_nc} (spec.classes); re-plan with classes: {data_nc}")
    return Finding("smaller", found, f"data: the dataset has {data_nc} classes, the plan "
                   f"assumed {plan_nc} (spec.classes); it needs less memory than planned")


def _raise_if_bigger(result: Preflight) -> Preflight:
    if result.finding is not None and result.finding.verdict == "bigger":
        raise ModelDiffers(result.finding.message, result.finding.model_found or {})
    return result
