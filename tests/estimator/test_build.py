"""Fitting profile terms from trace points (pure arithmetic, no tracing)."""

from __future__ import annotations

import pytest

from yolofit.estimator.build import POINTS, _fit_exact, dense_objects, fit_terms
from yolofit.estimator.profile import Terms


def _peak(b: int, o: int) -> int:
    """A synthetic step: sparse peak L = 1000 + 100 b; assigner A = 950 + 90 b + 3 b o."""
    return max(1000 + 100 * b, 950 + 90 * b + 3 * b * o)


def test_fit_of_linear_terms_keeps_the_sparse_objects_in_per_sample() -> None:
    """The sparse line is taken as measured (with its 4 objects per sample), so a truly
    linear truth comes back with per_sample + 4 * per_object: an over-estimate of
    4 * per_object * batch bytes, never an under-estimate (also at 0 objects)."""
    truth = Terms(5000, 700, 11)
    values = [truth.at(b, o) for b, o in POINTS]
    o_sparse = POINTS[0][1]
    assert _fit_exact(values, POINTS) == (5000, 700 + o_sparse * 11, 11)
    assert fit_terms(values) == Terms(5000, 700 + o_sparse * 11, 11)


def test_fit_is_an_upper_bound_of_the_max_of_two_lines() -> None:
    points = ((4, 4), (8, 4), (2, 128), (2, 256))
    terms = fit_terms([_peak(b, o) for b, o in points], points)
    assert terms == Terms(1000, 100, 3)
    for b in (1, 2, 4, 8, 16, 32, 64):
        for o in (0, 1, 4, 30, 100, 300, 1000):
            assert terms.at(b, o) >= _peak(b, o)
    # ... and tight where either line is the peak far from the crossover.
    assert terms.at(16, 0) == _peak(16, 0)
    assert terms.at(16, 1000) - _peak(16, 1000) == (1000 + 1600) - (950 + 1440)


def test_fit_rounds_up_and_never_under_predicts_a_point() -> None:
    points = ((4, 4), (8, 4), (2, 128), (2, 256))
    values = [1001, 1803, 707, 1411]
    terms = fit_terms(values, points)
    assert all(terms.at(b, o) >= v for v, (b, o) in zip(values, points, strict=True))


def test_points_must_pair_batches_and_objects() -> None:
    with pytest.raises(ValueError):
        _fit_exact([1, 2, 3, 4], ((8, 4), (16, 8), (2, 128), (2, 256)))


def test_dense_objects_scale_with_classes() -> None:
    assert dense_objects(80) == (160, 320)
    assert dense_objects(1) == (128, 256)
    assert dense_objects(1000) == (2000, 4000)
