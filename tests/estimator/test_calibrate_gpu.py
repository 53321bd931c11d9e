"""The non-GPU logic of benchmarks/calibrate_gpu.py: matrix, budget, CSV, fit maths."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "calibrate_gpu.py"
spec = importlib.util.spec_from_file_location("calibrate_gpu", PATH)
assert spec and spec.loader
cal = importlib.util.module_from_spec(spec)
sys.modules["calibrate_gpu"] = cal
spec.loader.exec_module(cal)

MiB = 2**20


def test_matrix_is_the_full_product() -> None:
    m = cal.build_matrix()
    assert len(m) == 3 * 5 * 3 * 3 * 2 * 2
    assert len(set(m)) == len(m)
    assert {e.labels for e in m} == {"sparse", "dense"}
    dense = next(e for e in m if e.labels == "dense")
    assert dense.objects == 4 * cal.DENSE_OBJECTS  # per mosaic sample


def test_budget_takes_cheapest_first_and_never_overspends() -> None:
    m = cal.build_matrix(families=["yolov8"], imgsz=[320, 640], batches=[1, 32])
    run, skipped = cal.select_within_budget(m, 30.0)
    assert sum(cal.predicted_seconds(e) for e in run) <= 30.0
    assert len(run) + len(skipped) == len(m)
    costs = [cal.predicted_seconds(e) for e in run]
    assert costs == sorted(costs)
    assert all(cal.predicted_seconds(s) >= costs[-1] for s in skipped)


@pytest.mark.parametrize(("budget", "expected"), [(0, 0), (2.5, 1), (5, 2), (100, 3)])
def test_budget_table(budget: float, expected: int) -> None:
    entries = [cal.Entry("yolov8n", 320, 1, "fp16", "sparse"),
               cal.Entry("yolov8s", 320, 1, "fp16", "sparse"),
               cal.Entry("yolov8m", 320, 1, "fp16", "sparse")]
    run, _ = cal.select_within_budget(entries, budget, cost=lambda e: 2.5)
    assert len(run) == expected


def test_cost_grows_with_scale_imgsz_batch_and_fp32() -> None:
    base = cal.Entry("yolov8n", 320, 1, "fp16", "sparse")
    for bigger in (cal.Entry("yolov8x", 320, 1, "fp16", "sparse"),
                   cal.Entry("yolov8n", 1280, 1, "fp16", "sparse"),
                   cal.Entry("yolov8n", 320, 32, "fp16", "sparse"),
                   cal.Entry("yolov8n", 320, 1, "off", "sparse")):
        assert cal.predicted_seconds(bigger) > cal.predicted_seconds(base)


def test_rel_error_sign_matches_the_operator_metric() -> None:
    assert cal.rel_error(100, 110) == pytest.approx(0.10)  # estimate too low: positive
    assert cal.rel_error(100, 90) == pytest.approx(-0.10)
    assert cal.rel_error(0, 5) is None and cal.rel_error(5, None) is None


def _measured(reserved: int, alloc: int, used: int, status: str = "ok") -> dict:
    return {"status": status, "measured_reserved": reserved, "measured_allocated": alloc,
            "device_used": used, "device_total": 80_000 * MiB, "seconds": 1.5}


def _est(traced: int) -> dict:
    return {"traced_reserved_bytes": traced, "predicted_reserved_bytes": traced + 64 * MiB,
            "predicted_allocated_bytes": traced, "predicted_device_bytes": traced + 600 * MiB,
            "profile_id": "yolov8n|x|640|fp16|AdamW|nc80|ckpt0"}


E = cal.Entry("yolov8n", 640, 8, "fp16", "sparse")


def test_rows_feed_the_calibration_fit(tmp_path: Path) -> None:
    """Synthetic runs with context 500 MiB, workspace 40 MiB and 5 % fragmentation: the CSV
    the script writes is read by yolofit.estimator.calibration and the fit recovers them."""
    rows = []
    for traced in (1000, 2000, 4000, 8000):
        t = traced * MiB
        reserved = int(t * 1.05) + 40 * MiB
        rows.append(cal.calibration_row(E, "h200", _measured(reserved, reserved - MiB,
                                                             reserved + 500 * MiB), _est(t)))
    rows.append(cal.calibration_row(E, "h200", _measured(99 * MiB, 0, 0, "oom"), _est(MiB)))
    rows.append(cal.calibration_row(E, "h200", {"status": "skipped (budget)"}, {}))
    path = tmp_path / "h200.csv"
    cal.write_csv(path, rows)
    fit = cal.fit(path)["h200"]
    assert fit["rows"] == 4  # the OOM and the skipped entry are not averaged in
    assert fit["fragmentation"] == pytest.approx(0.05, abs=1e-3)
    assert fit["workspace_bytes"] == pytest.approx(40 * MiB, abs=2 * MiB)
    assert fit["cuda_context_bytes"] == 500 * MiB


def test_row_errors_and_oom_data_point() -> None:
    row = cal.calibration_row(E, "t4", _measured(110 * MiB, 100 * MiB, 700 * MiB),
                              _est(36 * MiB))
    assert row["err_reserved"] == pytest.approx(0.10)  # measured 110 vs predicted 100
    oom = cal.calibration_row(E, "t4", _measured(15_000 * MiB, 0, 0, "oom"), _est(MiB))
    assert oom["oom_reserved_bytes"] == 15_000 * MiB and "measured_reserved_bytes" not in oom


def test_refuses_without_cuda(capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert cal.main(["--budget", "1"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
