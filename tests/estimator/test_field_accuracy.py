"""Accuracy guard: every field row estimated with the shipped profiles and constants.

The rows are the published runs in yolofit/estimator/data/field (read as rows.json says);
the estimate is what `estimate()` gives with the default allocator (stock Ultralytics) and
the constants in gpu_classes.json. Bands (stated in benchmarks/RESULTS.md, field section):
- sparse detection rows: each within [-10 %, +17 %]; median |error| <= 5 %, p90 <= 12 %;
- segment rows (never fitted): within +-10 % (the issue's band), with the epoch-end cache
  rule (field.epoch_emptied: the yolo26m-seg run on a T4 reserves 78 % of the card, above
  the 0.5 at which its Ultralytics 8.4.19 empties the cache);
- every non-segment row: the estimate never exceeds the measurement by more than 17 %, and
  no row with a known-enough density (sparse or moderate) is under by more than 10 %.
Dense rows (VisDrone, WIDER FACE, sewer) are not banded from below: their densest image is
not published, and the stated mean under-predicts them (the table reports the density at
which the estimate meets the measurement). Pure arithmetic: no tracing, milliseconds.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from yolofit.estimator import field
from yolofit.estimator.calibration import CUDNN_RANGE_MIB, OVERHEAD_RANGE
from yolofit.estimator.gpu import DATA, MiB
from yolofit.estimator.profile import ProfileStore

ROWS = field.load_rows()


@pytest.fixture(scope="module")
def errors() -> dict[str, float]:
    profiles = field.profiles_for(ROWS, ProfileStore(cache_dir="/nonexistent"))
    return {r.source: field.predict(r, profiles[r.source], field.gpu_for(r)) / r.measured_bytes
            - 1 for r in ROWS}


def test_every_row_is_read_and_has_a_shipped_profile(errors: dict[str, float]) -> None:
    assert len(ROWS) == 24 and len(errors) == 24
    assert {r.task for r in ROWS} == {"detect", "segment", "pose"}
    # Units follow each row's notes: GB rows are decimal, GiB rows binary.
    gb = next(r for r in ROWS if r.source == "field_gpu_mem.csv:1")
    assert gb.measured_bytes == pytest.approx(2.16e9)
    gib = next(r for r in ROWS if r.source == "field_gpu_mem_2.csv:1")
    assert gib.measured_bytes == pytest.approx(1.3 * 2**30)


@pytest.mark.parametrize("row", [r for r in ROWS if r.density == "sparse" and r.task == "detect"],
                         ids=lambda r: r.source)
def test_sparse_detection_row_within_band(row: field.FieldRow, errors: dict[str, float]) -> None:
    assert -0.10 <= errors[row.source] <= 0.17, \
        f"{row.model} b{row.batch}: {errors[row.source]:+.1%}"


def test_sparse_detection_summary(errors: dict[str, float]) -> None:
    acc = field.accuracy([errors[r.source] for r in ROWS
                          if r.density == "sparse" and r.task == "detect"])
    assert acc.n == 16
    assert acc.median_abs <= 0.05, acc
    assert acc.p90_abs <= 0.12, acc


@pytest.mark.parametrize("row", [r for r in ROWS if r.task == "segment"], ids=lambda r: r.source)
def test_segment_row_within_its_band(row: field.FieldRow, errors: dict[str, float]) -> None:
    assert -0.10 <= errors[row.source] <= 0.10, f"{row.model}: {errors[row.source]:+.1%}"


def test_cache_regime_follows_the_predicted_share_of_the_card() -> None:
    """Past 8.3.86 the cache is emptied at epoch end when the predicted reserved bytes
    exceed half the card (0.9 for 8.3.87-8.3.108); up to 8.3.86 always."""
    seg = next(r for r in ROWS if r.source == "field_gpu_mem_2.csv:15")
    profile = field.profiles_for([seg], ProfileStore(cache_dir="/nonexistent"))[seg.source]
    gpu = field.gpu_for(seg)
    assert seg.version == "8.4.19" and seg.measured_bytes / seg.gpu_total_bytes > 0.5
    assert field.epoch_emptied(seg, profile, gpu)
    assert field.cache_regime(seg, profile, gpu) == "emptied (>50 %)"
    twice = replace(seg, gpu_total_bytes=2 * seg.gpu_total_bytes)
    assert not field.epoch_emptied(twice, profile, gpu)
    assert field.cache_regime(twice, profile, gpu) == "kept"
    assert field.predict(twice, profile, gpu) > field.predict(seg, profile, gpu)
    for version in ("8.3.85", "8.3.86", "8.0.6"):
        old = replace(twice, version=version)
        assert field.epoch_emptied(old, profile, gpu)
        assert field.cache_regime(old, profile, gpu) == "emptied (<=8.3.86)"
    assert not field.epoch_emptied(replace(seg, version="8.3.100"), profile, gpu)  # 78 % < 0.9
    assert [field.empty_threshold(v) for v in ("8.3.86", "8.3.87", "8.3.108", "8.3.109",
                                               "8.4.19")] == [None, 0.9, 0.9, 0.5, 0.5]


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.source)
def test_no_row_far_over_and_known_density_not_far_under(row: field.FieldRow,
                                                        errors: dict[str, float]) -> None:
    if row.task != "segment":
        assert errors[row.source] <= 0.17
    if row.density != "dense":
        assert errors[row.source] >= -0.10


def test_constants_are_physical_and_say_where_they_come_from() -> None:
    defaults = json.loads(DATA.read_text())["defaults"]
    assert CUDNN_RANGE_MIB[0] <= defaults["cudnn_workspace_mib"] <= CUDNN_RANGE_MIB[1]
    for k in ("fragmentation_default_allocator",
              "fragmentation_default_allocator_epoch_emptied"):
        assert OVERHEAD_RANGE[0] <= defaults[k] <= OVERHEAD_RANGE[1]
    fit = defaults["field_fit"]
    assert "data/field" in fit["source"] and fit["rows"] == 16
    assert fit["holdout"]["leave-one-out (sparse detection rows)"]["median_abs"] <= 0.05
    assert defaults["cudnn_workspace_mib"] * MiB > 0  # the allowance is a real term


def test_the_fits_closed_form_agrees_with_the_estimate_row_by_row() -> None:
    """The constants are fitted with calibration.field_prediction (a closed form the grid
    search can afford) and applied by profile.estimate (through field.predict): on every
    row, with the shipped constants, both give the same cache regime and the same
    prediction (to one 2 MiB block; the yolo26m-seg row is in the emptied regime by the
    predicted share of its card). A change to one side alone fails here."""
    from yolofit.estimator.calibration import FieldPoint, epoch_emptied, field_prediction

    defaults = json.loads(DATA.read_text())["defaults"]
    profiles = field.profiles_for(ROWS, ProfileStore(cache_dir="/nonexistent"))
    seg = next(r for r in ROWS if r.source == "field_gpu_mem_2.csv:15")
    # on a card 5/3 as large its emptied prediction is below half the card, its kept one above
    band = replace(seg, gpu_total_bytes=seg.gpu_total_bytes * 5 // 3)
    checked = 0
    for row in [*ROWS, band]:
        gpu = field.gpu_for(row)
        profile = profiles[row.source]
        point = FieldPoint(field.traced_allocated(row, profile), row.measured_bytes,
                           row.empty_above_bytes)
        args = (gpu.cublas_workspace_bytes, defaults["cudnn_workspace_mib"])
        closed = field_prediction(point, *args, defaults["fragmentation_default_allocator"],
                                  defaults["fragmentation_default_allocator_epoch_emptied"])
        assert epoch_emptied(point, *args, defaults[
            "fragmentation_default_allocator_epoch_emptied"]) == field.epoch_emptied(
                row, profile, gpu), row.source
        assert abs(closed - field.predict(row, profile, gpu)) <= 2 * MiB, row.source
        checked += 1
    assert checked == 25
    assert not field.epoch_emptied(band, profiles[seg.source], field.gpu_for(seg))
