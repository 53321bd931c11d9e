"""Model identity without torch: which Ultralytics config a model name or file means.

`resolve_model` mirrors `ultralytics.nn.tasks.yaml_model_load` (lookup in the package's
cfg/models, the P6 rename, the scale letter) with PyYAML only, and `config_hash` hashes the
resulting dict, so the planner (in the webhook) and the tracer agree on a profile's
`config_hash` without either importing torch. Only a .pt whose name is not a shipped model
is unpickled (torch, lazily).
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ModelRef:
    """A model as the user named it, resolved to its config: `name` for display,
    `config_hash` for identity, `path` to the YAML (or .pt) it came from."""

    name: str
    config_hash: str
    path: Path
    config: dict[str, Any]

    @property
    def task(self) -> str:
        """The Ultralytics task the config trains (see `task_of`)."""
        return task_of(self.config)


TASKS: tuple[str, ...] = ("detect", "segment", "pose", "obb", "classify")


def task_of(config: Mapping[str, Any]) -> str:
    """The task of a model config, by its output module, as Ultralytics'
    `guess_model_task` decides it (nn/tasks.py cfg2task) - without torch. A config whose
    head is none of the five tasks yolofit trains says so with its module's name."""
    try:
        module = str(config["head"][-1][-2]).lower()
    except (KeyError, IndexError, TypeError):
        return "detect"
    if module in {"classify", "classifier", "cls", "fc"}:
        return "classify"
    if "detect" in module:
        return "detect"
    if "semanticsegment" in module:
        return "semantic"
    for task in ("segment", "pose", "obb", "depth"):
        if task in module:
            return task
    return module


def task_from_name(model: str) -> str | None:
    """The task a model *name* implies by Ultralytics' suffix convention (yolo11s-seg.pt,
    yolo11s-cls.yaml, ...): used to default and cross-check a job's task without reading
    files. None when the name carries no task suffix (then it is a detection model)."""
    stem = Path(model).stem.lower()
    for suffix, task in (("-seg", "segment"), ("-pose", "pose"), ("-obb", "obb"),
                         ("-cls", "classify")):
        if stem.endswith(suffix) or f"{suffix}-" in stem or f"{suffix}6" in stem:
            return task
    return None


def model_task(model: str) -> str | None:
    """The task of a model as admission can know it without torch: a shipped model's YAML
    (its head), else what its file name implies (task_from_name); None when neither says
    (a custom checkpoint named e.g. best.pt: detection unless the job says otherwise)."""
    name = _normalise(model)
    if name.endswith(".pt") and _find_yaml(Path(name).with_suffix(".yaml").name) is None:
        return task_from_name(model)
    try:
        return resolve_model(model).task
    except UnknownModel:
        return task_from_name(model)


# Ultralytics' imgsz when train() is not given one: cfg/default.yaml's 640, except that
# ClassificationTrainer sets 224 (models/yolo/classify/train.py).
DEFAULT_IMGSZ = 640
TASK_DEFAULT_IMGSZ = {"classify": 224}


def default_imgsz(task: str | None) -> int:
    """The imgsz Ultralytics trains `task` at when the user gives none."""
    return TASK_DEFAULT_IMGSZ.get(task or "detect", DEFAULT_IMGSZ)


def with_kpt_shape(ref: ModelRef, kpt_shape: tuple[int, int] | list[int] | None) -> ModelRef:
    """A pose model trained on data whose kpt_shape differs from the YAML's: Ultralytics
    rebuilds the head for the data's shape (PoseModel(data_kpt_shape=...)), so it is another
    architecture, with its own config hash. Other tasks, or the same shape: unchanged."""
    if kpt_shape is None or ref.task != "pose":
        return ref
    shape = [int(x) for x in kpt_shape]
    if len(shape) != 2 or shape[0] < 1 or shape[1] not in (2, 3):
        raise ValueError(f"kpt_shape: must be [keypoints, 2 or 3], got {list(kpt_shape)}")
    if list(ref.config.get("kpt_shape", [17, 3])) == shape:
        return ref
    config = {**ref.config, "kpt_shape": shape}
    return ModelRef(name=f"{ref.name}-kpt{shape[0]}x{shape[1]}", config_hash=config_hash(config),
                    path=ref.path, config=config)


class UnknownModel(ValueError):
    """The model is neither a shipped Ultralytics YAML nor an existing local file."""


def config_hash(config: Mapping[str, Any]) -> str:
    """12 hex digits of sha256 over the model dict (as `yaml_model_load` returns it) minus
    the entries that do not change the architecture's memory: `yaml_file`, `nc` (keyed
    separately), `ch`/`channels` (DetectionModel adds it; RGB input is 3) and the scales not
    in use."""
    d = {k: v for k, v in config.items() if k not in ("yaml_file", "nc", "ch", "channels")}
    scales = d.get("scales")
    if isinstance(scales, dict) and d.get("scale") in scales:
        d["scales"] = {d["scale"]: scales[d["scale"]]}
    text = json.dumps(d, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def ultralytics_models_dir() -> Path:
    """Ultralytics' cfg/models directory, found without importing ultralytics (or torch)."""
    spec = importlib.util.find_spec("ultralytics")
    if spec is None or spec.origin is None:
        raise UnknownModel("ultralytics is not installed")
    return Path(spec.origin).parent / "cfg" / "models"


def _shipped_yaml_index() -> dict[str, Path]:
    return {p.name: p for p in sorted(ultralytics_models_dir().rglob("*.yaml"))}


_yaml_index_cache: dict[str, Path] | None = None


def shipped_yaml_index() -> dict[str, Path]:
    global _yaml_index_cache
    if _yaml_index_cache is None:
        _yaml_index_cache = _shipped_yaml_index()
    return _yaml_index_cache


def _scale(stem: str) -> str:
    # Same rule as ultralytics.nn.tasks.guess_model_scale.
    m = re.search(r"yolo(e-)?[v]?\d+([nslmx])", stem)
    return m.group(2) if m else ""


def _find_yaml(model: str) -> Path | None:
    """Mirror ultralytics.nn.tasks.yaml_model_load's lookup: the file itself, else the
    scale-less family file (yolov8s.yaml -> yolov8.yaml; yolov5su.yaml -> yolov5u.yaml,
    which Ultralytics serves from yolov5.yaml)."""
    path = Path(model)
    if path.is_file():
        return path
    return _shipped_yaml(path)


def is_shipped_name(model: str) -> bool:
    """`model` is a name (no directory) of a shipped architecture, e.g. yolo11m,
    yolov8s.yaml or yolo11s-pose-kpt5x3; decided from the shipped index alone, without
    looking for a file of that name."""
    kpt = _KPT_NAME.fullmatch(model)
    if kpt:
        model = kpt.group(1) + (kpt.group(4) or "")
    if "/" in model or model.endswith(".pt"):
        return False
    return _shipped_yaml(Path(_normalise(model))) is not None


def _shipped_yaml(path: Path) -> Path | None:
    index = shipped_yaml_index()
    if path.name in index:
        return index[path.name]
    unified = re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", path.name)
    for candidate in (unified, re.sub(r"u\.yaml$", ".yaml", unified)):
        if candidate in index:
            return index[candidate]
    return None


def _normalise(model: str) -> str:
    name = model if model.endswith((".yaml", ".yml", ".pt")) else model + ".yaml"
    stem = Path(name).stem
    # Ultralytics' P6 rename: yolov8s6 -> yolov8s-p6; its v5u weights are yolov5n6u.
    if stem in (f"yolov{d}{x}6{u}" for x in "nsmlx" for d in (5, 8) for u in ("", "u")):
        stem = re.sub(r"(\d+)([nslmx])6(.+)?$", r"\1\2-p6\3", stem)
        name = str(Path(name).with_name(stem + Path(name).suffix))
    return name


def model_name(model: str) -> str:
    """The display name a key carries: 'yolov8s.yaml' -> 'yolov8s', 'yolov8s6' -> 'yolov8s-p6'."""
    return Path(_normalise(model)).stem


# A pose model rebuilt for the data's keypoint shape (`with_kpt_shape`'s name).
_KPT_NAME = re.compile(r"(.+-pose)-kpt(\d+)x(\d+)(\.ya?ml|\.pt)?")


def resolve_model(model: str) -> ModelRef:
    """Resolve 'yolov8s.yaml', 'yolo11m', 'path/to/custom.yaml', 'yolov8s.pt' or 'best.pt'.

    YAMLs are read with PyYAML only. A .pt named like a shipped model takes that YAML's
    identity; any other .pt is unpickled with torch (imported lazily, once per model).
    'yolo11s-pose-kpt5x3' is the pose model rebuilt for 5 keypoints of 3 values (the name
    `with_kpt_shape` gives it)."""
    kpt = _KPT_NAME.fullmatch(model)
    if kpt and not Path(model).is_file():
        return with_kpt_shape(resolve_model(kpt.group(1) + (kpt.group(4) or "")),
                              (int(kpt.group(2)), int(kpt.group(3))))
    name = _normalise(model)
    stem = Path(name).stem
    if name.endswith(".pt"):
        # Ultralytics' released weights (yolov8s.pt, yolo11m.pt, ...) are built from the
        # shipped YAML of the same name: use its identity without torch (a webhook must not
        # import it). Memory does not depend on weight values; nc is keyed separately.
        shipped = _find_yaml(Path(name).with_suffix(".yaml").name)
        if shipped is None:
            return _resolve_pt(Path(name))
        name = Path(name).with_suffix(".yaml").name
    found = _find_yaml(name)
    if found is None:
        raise UnknownModel(f"unknown model {model!r}")
    config = _read_config(found)
    config["scale"] = _scale(stem)
    return ModelRef(name=stem, config_hash=config_hash(config), path=found, config=config)


_CONFIGS: dict[tuple[str, int, int], dict[str, Any]] = {}
_CONFIGS_MAX = 512


def _read_config(found: Path) -> dict[str, Any]:
    """The model YAML's mapping, a fresh copy per call (Ultralytics' model constructors
    write into it). Parsed once per file version (path, mtime, size): every admission
    review resolves its model, and parsing a model YAML takes ~7 ms."""
    import yaml  # PyYAML, no torch

    try:
        stat = found.stat()
        version = (str(found), stat.st_mtime_ns, stat.st_size)
        config = _CONFIGS.get(version)
        if config is None:
            config = yaml.safe_load(found.read_text())
            if not isinstance(config, dict) or "backbone" not in config \
                    or "head" not in config:
                raise UnknownModel(f"{str(found)!r} is not an Ultralytics model YAML "
                                   "(no backbone/head)")
            if len(_CONFIGS) >= _CONFIGS_MAX:  # custom paths (CLI) must not grow it forever
                _CONFIGS.clear()
            _CONFIGS[version] = config
    except (OSError, yaml.YAMLError) as exc:
        raise UnknownModel(f"cannot read {str(found)!r}: {str(exc).splitlines()[0]}") from None
    return copy.deepcopy(config)


def _resolve_pt(path: Path) -> ModelRef:
    if not path.is_file():
        raise UnknownModel(f"model file {str(path)!r} does not exist")
    import torch  # lazy: only the CLI resolves .pt files

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure: not a checkpoint
        raise UnknownModel(f"cannot load {str(path)!r} as an Ultralytics checkpoint: "
                           f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
    model = (ckpt.get("ema") or ckpt.get("model")) if isinstance(ckpt, dict) else ckpt
    config = dict(getattr(model, "yaml", None) or {})
    if not config:
        raise UnknownModel(f"{str(path)!r} holds no Ultralytics model config")
    return ModelRef(name=path.stem, config_hash=config_hash(config), path=path, config=config)


class AmbiguousModel(UnknownModel):
    """A name that points at a model family but not at one architecture (no scale)."""


def checkpoint_architecture(path: str) -> str:
    """The shipped architecture a checkpoint's *file name* implies, without opening it:
    '/data/yolo11m-seg.pt' -> 'yolo11m-seg', 'yolov8s6.pt' -> 'yolov8s-p6'. Ultralytics'
    released weights are named this way. Raises UnknownModel when the name implies no
    shipped model ('best.pt', 'yolo11m_v2.pt') and AmbiguousModel when it names a family
    but no scale ('yolov8.pt': Ultralytics would silently pick the first scale)."""
    name = _normalise(Path(path).name)
    stem = Path(name).stem
    if not name.endswith(".pt") or _find_yaml(f"{stem}.yaml") is None \
            or not _SHIPPED_NAME.fullmatch(stem):
        raise UnknownModel(f"{Path(path).name} names no architecture")
    ref = resolve_model(f"{stem}.yaml")
    scales = ref.config.get("scales")
    if isinstance(scales, dict) and len(scales) > 1 and ref.config.get("scale") not in scales:
        raise AmbiguousModel(f"{Path(path).name} names the family {stem} but no scale "
                             f"({', '.join(scales)})")
    return ref.name


# A shipped model's file name: letters, digits, '-' and '.' only (no '_', spaces, ...).
_SHIPPED_NAME = re.compile(r"[a-z][a-z0-9.-]*")


def model_families() -> list[str]:
    """Detection model families Ultralytics ships, for error messages."""
    other_tasks = r"-(cls|seg|pose|obb|sem|depth|world|worldv2)|rtdetr|yoloe"
    return sorted({re.sub(r"\.yaml$", "", n) for n in shipped_yaml_index()
                   if not re.search(other_tasks, n)})
