"""Fitting per-class constants from calibration rows (synthetic rows, known constants)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from yolofit.estimator.calibration import (
    FieldPoint,
    Row,
    epoch_emptied,
    field_prediction,
    fit_class,
    fit_classes,
    read_rows,
    write_calibration,
)
from yolofit.estimator.gpu import DATA

MiB = 2**20


def _rows(n: int = 60, context: int = 300 * MiB, ws: int = 200 * MiB, frag: float = 0.04,
          noise: int = 0, seed: int = 0) -> list[Row]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        traced = rng.randint(500, 60_000) * MiB
        reserved = int(traced * (1 + frag)) + ws + rng.randint(-noise, noise)
        rows.append(Row("t4", reserved, reserved + context, traced))
    return rows


def test_recovers_exact_constants() -> None:
    fit = fit_class(_rows())
    assert fit.fragmentation == pytest.approx(0.04, abs=1e-6)
    assert abs(fit.workspace_bytes - 200 * MiB) <= 2 * MiB
    assert fit.cuda_context_bytes == 300 * MiB
    assert fit.median_rel_error < 1e-3


def test_noise_is_covered_for_most_rows() -> None:
    rows = _rows(noise=100 * MiB, seed=3)
    fit = fit_class(rows)
    predicted = [r.traced_reserved * (1 + fit.fragmentation) + fit.workspace_bytes for r in rows]
    covered = sum(p >= r.measured_reserved for p, r in zip(predicted, rows, strict=True))
    assert covered >= 0.95 * len(rows)


def test_groups_by_class_and_writes_json(tmp_path: Path) -> None:
    rows = _rows() + [Row("mystery", 2 * r.measured_reserved, 2 * r.measured_reserved + 400 * MiB,
                          2 * r.traced_reserved) for r in _rows(seed=1)]
    fitted = fit_classes(rows)
    assert set(fitted) == {"mystery", "t4"}
    path = tmp_path / "gpu_classes.json"
    path.write_text(DATA.read_text())
    write_calibration(fitted, "calibration.csv on T4, 2026-11-29", path)
    data = json.loads(path.read_text())
    t4 = data["classes"]["t4"]
    assert t4["calibrated"] is True and t4["cuda_context_mib"] == 300.0
    assert t4["calibration"]["source"].startswith("calibration.csv")
    assert "mystery" in data["calibrated_unknown_classes"]


def test_reads_csv(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("gpu_class,measured_reserved_bytes,measured_device_bytes,traced_reserved_bytes,"
                    "model\nt4,2000,2500,1500,yolov8n\nt4,,,,oom-row\n")
    assert read_rows(path) == [Row("t4", 2000, 2500, 1500)]


def test_no_rows_is_an_error() -> None:
    with pytest.raises(ValueError):
        fit_class([])


def test_field_cache_regime_is_decided_by_the_emptied_prediction() -> None:
    """empty_above 0 (<= 8.3.86): always emptied; else emptied iff the emptied-regime
    prediction (allocated x (1 + emptied overhead) + workspaces) exceeds empty_above."""
    alloc, cublas, cudnn = 4000 * MiB, 64 * MiB, 168.0
    emptied_pred = alloc + 400 * MiB + cublas + cudnn * MiB  # overhead 0.1
    always = FieldPoint(alloc, 1.0, 0.0)
    above = FieldPoint(alloc, 1.0, emptied_pred - 1)
    within = FieldPoint(alloc, 1.0, emptied_pred)  # kept: the emptied prediction is not above
    assert epoch_emptied(always, cublas, cudnn, 0.1) and epoch_emptied(above, cublas, cudnn, 0.1)
    assert not epoch_emptied(within, cublas, cudnn, 0.1)
    assert field_prediction(above, cublas, cudnn, 0.25, 0.1) == emptied_pred
    assert field_prediction(within, cublas, cudnn, 0.25, 0.1) == emptied_pred + 600 * MiB
