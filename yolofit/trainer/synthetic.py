"""A tiny synthetic YOLO detection dataset: filled rectangles on noise, with exact labels.

Used by the tests and `make demo` so training runs offline in seconds. Layout:
    DIR/images/{train,val}/*.png, DIR/labels/{train,val}/*.txt, DIR/data.yaml (absolute path)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from PIL import Image

COLOURS = ((230, 40, 40), (40, 200, 60), (50, 80, 230), (230, 200, 40))


def _image(rng: np.random.Generator, size: int, nc: int) -> tuple[np.ndarray, list[str]]:
    img = rng.integers(0, 64, (size, size, 3), dtype=np.uint8)
    labels = []
    for _ in range(int(rng.integers(1, 4))):
        cls = int(rng.integers(0, nc))
        w, h = (int(v) for v in rng.integers(size // 6, size // 2, 2))
        x0, y0 = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
        img[y0 : y0 + h, x0 : x0 + w] = COLOURS[cls % len(COLOURS)]
        cx, cy = (x0 + w / 2) / size, (y0 + h / 2) / size
        labels.append(f"{cls} {cx:.6f} {cy:.6f} {w / size:.6f} {h / size:.6f}")
    return img, labels


def make_synthetic_dataset(
    root: str | Path, n_train: int = 8, n_val: int = 4, imgsz: int = 64, nc: int = 2, seed: int = 0
) -> Path:
    """Write the dataset under `root` and return the path of its data.yaml."""
    root = Path(root).resolve()
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img, labels = _image(rng, imgsz, nc)
            Image.fromarray(img).save(root / "images" / split / f"{i:05d}.png")
            (root / "labels" / split / f"{i:05d}.txt").write_text("\n".join(labels) + "\n")
    data = {
        "path": str(root),
        "train": "images/train",
        "val": "images/val",
        "names": {i: f"class{i}" for i in range(nc)},
    }
    data_yaml = root / "data.yaml"
    data_yaml.write_text(yaml.safe_dump(data, sort_keys=False))
    return data_yaml
