"""Tiny synthetic YOLO datasets for every task: filled rectangles on noise, with exact labels.

Used by the tests and `make demo` so training runs offline in seconds. Layout (detect,
segment, pose, obb): DIR/images/{train,val}/*.png, DIR/labels/{train,val}/*.txt,
DIR/data.yaml (absolute path). Labels per task, in Ultralytics' formats:
- detect: `cls cx cy w h`;
- segment: `cls x1 y1 ... x4 y4`, the rectangle's outline as a polygon;
- pose: `cls cx cy w h` + the rectangle's 4 corners as keypoints `x y v` (kpt_shape [4, 3],
  flip_idx swapping left and right corners);
- obb: `cls x1 y1 ... x4 y4`, the rectangle's corners (axis-aligned rotated boxes);
- classify: no labels: DIR/{train,val}/class<k>/*.png, one rectangle colour per class, and
  the dataset is the directory (Ultralytics' classify data= is a folder).
`objects` fixes the number of rectangles per image (the densest image is then known
exactly); by default each image has 1-3.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from PIL import Image

COLOURS = ((230, 40, 40), (40, 200, 60), (50, 80, 230), (230, 200, 40))
TASKS = ("detect", "segment", "pose", "obb", "classify")
KPT_SHAPE = (4, 3)
FLIP_IDX = (1, 0, 3, 2)  # corners: top-left, top-right, bottom-right, bottom-left


def _rects(rng: np.random.Generator, size: int, nc: int, count: int
           ) -> list[tuple[int, int, int, int, int]]:
    out = []
    for _ in range(count):
        cls = int(rng.integers(0, nc))
        w, h = (int(v) for v in rng.integers(max(size // 6, 2), max(size // 2, 3), 2))
        x0, y0 = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
        out.append((cls, x0, y0, w, h))
    return out


def _label(task: str, rect: tuple[int, int, int, int, int], size: int) -> str:
    cls, x0, y0, w, h = rect
    cx, cy, nw, nh = (x0 + w / 2) / size, (y0 + h / 2) / size, w / size, h / size
    corners = [(x0 / size, y0 / size), ((x0 + w) / size, y0 / size),
               ((x0 + w) / size, (y0 + h) / size), (x0 / size, (y0 + h) / size)]
    flat = " ".join(f"{x:.6f} {y:.6f}" for x, y in corners)
    if task in ("segment", "obb"):
        return f"{cls} {flat}"
    box = f"{cls} {cx:.6f} {cy:.6f} {nw:.6f} {nh:.6f}"
    if task == "pose":
        return box + " " + " ".join(f"{x:.6f} {y:.6f} 2" for x, y in corners)
    return box


def _paint(img: np.ndarray, rects: list[tuple[int, int, int, int, int]]) -> np.ndarray:
    for cls, x0, y0, w, h in rects:
        img[y0 : y0 + h, x0 : x0 + w] = COLOURS[cls % len(COLOURS)]
    return img


def make_synthetic_dataset(
    root: str | Path, n_train: int = 8, n_val: int = 4, imgsz: int = 64, nc: int = 2,
    seed: int = 0, task: str = "detect", objects: int | list[int] | None = None,
) -> Path:
    """Write the dataset under `root`; return its data.yaml (classify: the directory).
    `objects`: rectangles per image, one number for all or one per train+val image."""
    if task not in TASKS:
        raise ValueError(f"task: must be one of {', '.join(TASKS)}, got {task!r}")
    root = Path(root).resolve()
    rng = np.random.default_rng(seed)
    counts = iter(objects if isinstance(objects, list) else [])
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            noise = rng.integers(0, 64, (imgsz, imgsz, 3), dtype=np.uint8)
            if isinstance(objects, int):
                count = objects
            elif isinstance(objects, list):
                count = next(counts)
            else:
                count = int(rng.integers(1, 4))
            if task == "classify":
                cls = i % nc
                rects = [(cls, *r[1:]) for r in _rects(rng, imgsz, 1, 1)]
                folder = root / split / f"class{cls}"
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(_paint(noise, rects)).save(folder / f"{i:05d}.png")
                continue
            rects = _rects(rng, imgsz, nc, count)
            (root / "images" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(_paint(noise, rects)).save(root / "images" / split / f"{i:05d}.png")
            text = "\n".join(_label(task, r, imgsz) for r in rects)
            (root / "labels" / split / f"{i:05d}.txt").write_text(text + "\n" if text else "")
    if task == "classify":
        return root
    data: dict[str, object] = {
        "path": str(root),
        "train": "images/train",
        "val": "images/val",
        "names": {i: f"class{i}" for i in range(nc)},
    }
    if task == "pose":
        data["kpt_shape"] = list(KPT_SHAPE)
        data["flip_idx"] = list(FLIP_IDX)
    data_yaml = root / "data.yaml"
    data_yaml.write_text(yaml.safe_dump(data, sort_keys=False))
    return data_yaml
