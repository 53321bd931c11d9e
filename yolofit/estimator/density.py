"""Label density of a YOLO dataset: how many objects an image, a training sample and so a
training batch can carry (`yolofit data stats`, and the trainer's check before its first step).

Per split: images, objects per image (mean, p99, max), and the most objects one training
*sample* can carry. With mosaic (Ultralytics' default) a sample is cut from four images; it
can never hold more labels than those four images have together (mosaic and the affine that
follows only drop or clip labels; copy_paste, off by default, could add more and is not
counted), so the bound is the sum of the four largest per-image counts. Without mosaic (or
for the validation split) it is the densest image. The TaskAlignedAssigner pads every sample
of a batch to the batch's densest sample, so this per-sample bound is also the worst case a
training batch can carry per sample - what the estimator's per-object term needs.

Labels come from Ultralytics' own label cache (`labels/<split>.cache`, written by its
dataset on first use) when it is present and readable, else from the label .txt files.
Pure: no torch (numpy only to read the cache).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

IMAGE_SUFFIXES = {".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp",
                  ".pfm", ".heic"}
MOSAIC_IMAGES = 4


@dataclass(frozen=True)
class SplitStats:
    split: str
    images: int
    objects: int
    mean: float
    p99: int
    max: int
    max_per_sample: int  # mosaic: sum of the four densest images; else the densest image
    source: str  # "label cache <path>" or "label files <dir>"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _p99(counts: Sequence[int]) -> int:
    ordered = sorted(counts)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(0.99 * len(ordered)) - 1))]


def split_stats(split: str, counts: Sequence[int], source: str, mosaic: bool = True
                ) -> SplitStats:
    counts = list(counts)
    if not counts:
        return SplitStats(split, 0, 0, 0.0, 0, 0, 0, source)
    top = sorted(counts, reverse=True)
    per_sample = sum(top[:MOSAIC_IMAGES]) if mosaic and split == "train" else top[0]
    return SplitStats(split, len(counts), sum(counts), sum(counts) / len(counts), _p99(counts),
                      top[0], per_sample, source)


def _label_path(image: Path) -> Path:
    """Ultralytics' img2label_paths: the last /images/ becomes /labels/, suffix .txt."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    text = str(image)
    if sa in text:
        head, _, tail = text.rpartition(sa)
        text = head + sb + tail
    return Path(text).with_suffix(".txt")


def _images(entry: Path) -> list[Path]:
    if entry.is_dir():
        return sorted(p for p in entry.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if entry.suffix == ".txt" and entry.is_file():  # a list of image paths
        base = entry.parent
        out = []
        for line in entry.read_text().splitlines():
            line = line.strip()
            if line:
                p = Path(line)
                out.append(p if p.is_absolute() else (base / p).resolve())
        return out
    raise FileNotFoundError(f"{entry} is neither an image folder nor a list of images")


def _from_cache(labels_dir: Path) -> tuple[list[int], str] | None:
    cache = labels_dir.with_suffix(".cache")
    if not cache.is_file():
        return None
    try:
        import numpy as np

        data = np.load(str(cache), allow_pickle=True).item()
        return [len(item["cls"]) for item in data["labels"]], f"label cache {cache}"
    except Exception:  # noqa: BLE001 - an unreadable or foreign cache: read the files
        return None


def _from_files(images: list[Path]) -> list[int]:
    counts = []
    for image in images:
        label = _label_path(image)
        try:
            text = label.read_text()
        except FileNotFoundError:
            counts.append(0)  # an image without a label file is a background image
            continue
        counts.append(sum(1 for line in text.splitlines() if line.strip()))
    return counts


def load_data_yaml(path: Path) -> dict[str, Any]:
    """An Ultralytics dataset YAML as a mapping; ValueError naming the file and what is wrong
    when it is not valid YAML or not a mapping (path, train, val, names)."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ValueError(f"{path} is not valid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a {type(data).__name__}, not a dataset mapping "
                         "(path, train, val, names)")
    return data


def dataset_stats(data_yaml: Path | str, mosaic: bool = True) -> list[SplitStats]:
    """Stats of every split the data YAML names (train, val, test when present)."""
    path = Path(data_yaml)
    data = load_data_yaml(path)
    root = Path(data.get("path") or path.parent)
    if not root.is_absolute():
        root = (path.parent / root).resolve()
    out = []
    for split in ("train", "val", "test"):
        entries = data.get(split)
        if not entries:
            continue
        counts: list[int] = []
        sources = []
        for entry in entries if isinstance(entries, list) else [entries]:
            images = _images(root / entry)
            labels_dir = _label_path(images[0]).parent if images else None
            cached = _from_cache(labels_dir) if labels_dir is not None else None
            if cached is not None and len(cached[0]) == len(images):
                counts += cached[0]
                sources.append(cached[1])
            else:
                counts += _from_files(images)
                sources.append(f"label files {labels_dir}")
        out.append(split_stats(split, counts, "; ".join(sources), mosaic))
    return out


def render(stats: Sequence[SplitStats]) -> str:
    lines = [f"{'split':<6}{'images':>8}{'objects':>9}{'mean/img':>10}{'p99/img':>9}"
             f"{'max/img':>9}{'max/sample':>12}  source"]
    for s in stats:
        lines.append(f"{s.split:<6}{s.images:>8}{s.objects:>9}{s.mean:>10.2f}{s.p99:>9}"
                     f"{s.max:>9}{s.max_per_sample:>12}  {s.source}")
    lines.append("max/sample: with mosaic (train), the sum of the 4 densest images (a mosaic "
                 "sample is cut from 4 images and never gains labels); else the densest image. "
                 "Plan with --objects set to max/img (the estimate applies mosaic x4) and "
                 "--mean-objects to mean/img rounded up (x5/3 a mosaic sample); in a "
                 "YOLOTrainingJob, spec.maxObjectsPerImage and spec.meanObjectsPerImage.")
    return "\n".join(lines)
