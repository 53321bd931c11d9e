"""Fixtures of the trainer tests: a tiny synthetic detection dataset, made once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from yolofit.trainer.synthetic import make_synthetic_dataset


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """data.yaml of 8 train + 4 val images, 64x64, 2 classes."""
    return make_synthetic_dataset(
        tmp_path_factory.mktemp("synthetic"), n_train=8, n_val=4, imgsz=64, nc=2
    )
