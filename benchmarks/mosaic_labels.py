"""Labels per training sample out of Ultralytics' own train pipeline (Mosaic + RandomPerspective
with the default hyperparameters), for images that each hold exactly N labels.

    .venv/bin/python benchmarks/mosaic_labels.py [--objects 4 16] [--boxes 0.01-0.05 0.05-0.3]
        [--samples 2000]

A mosaic sample is cut from four images but keeps an imgsz x imgsz window of their 2*imgsz
canvas, so its *mean* label count is near one image's (times the zoom's E[1/s^2] = 4/3, plus
clipped boxes that survive), while its *maximum* is four images' worth. The estimator counts
the typical sample at MOSAIC_MEAN_FACTOR x the dataset mean and the densest at
MOSAIC_OBJECTS_FACTOR x the densest image (yolofit.estimator.profile); this measures both.
The dataset is generated (flat grey images, half 640x640, half 640x480; boxes uniform in
position, sides uniform in the given fraction of the image side); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_dataset(root: Path, objects: int, lo: float, hi: float, images: int = 64) -> Path:
    import cv2
    import numpy as np

    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    for i in range(images):
        h, w = (480, 640) if i % 2 else (640, 640)
        cv2.imwrite(str(root / "images" / f"{i}.jpg"), np.full((h, w, 3), 114, np.uint8))
        wh = lo + (hi - lo) * rng.random((objects, 2))
        xy = wh / 2 + (1 - wh) * rng.random((objects, 2))
        (root / "labels" / f"{i}.txt").write_text("".join(
            f"0 {x:.5f} {y:.5f} {a:.5f} {b:.5f}\n" for (x, y), (a, b) in zip(xy, wh, strict=True)))
    return root / "images"


def measure(objects: int, lo: float, hi: float, samples: int) -> dict[str, float]:
    from ultralytics.cfg import get_cfg
    from ultralytics.data.dataset import YOLODataset
    from ultralytics.utils import LOGGER

    LOGGER.setLevel("WARNING")
    with tempfile.TemporaryDirectory() as tmp:
        images = make_dataset(Path(tmp) / "ds", objects, lo, hi)
        ds = YOLODataset(img_path=str(images), imgsz=640, augment=True, hyp=get_cfg(),
                         data={"names": {0: "a"}, "nc": 1, "channels": 3}, task="detect")
        random.seed(0)
        counts = sorted(len(ds[i % len(ds)]["cls"]) for i in range(samples))
    return {"objects": objects, "mean": statistics.mean(counts), "max": counts[-1],
            "p99": counts[int(0.99 * len(counts)) - 1]}


def main() -> int:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--objects", nargs="+", type=int, default=[4, 16])
    ap.add_argument("--boxes", nargs="+", default=["0.01-0.05", "0.05-0.3"])
    ap.add_argument("--samples", type=int, default=2000)
    args = ap.parse_args()
    print("| labels per image | box side (fraction) | samples | mean per sample | x mean | "
          "p99 | max | x max |\n|---|---|---|---|---|---|---|---|")
    for box in args.boxes:
        lo, hi = (float(x) for x in box.split("-"))
        for n in args.objects:
            r = measure(n, lo, hi, args.samples)
            print(f"| {n} | {lo}-{hi} | {args.samples} | {r['mean']:.2f} | "
                  f"x{r['mean'] / n:.2f} | {r['p99']} | {r['max']} | x{r['max'] / n:.2f} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
