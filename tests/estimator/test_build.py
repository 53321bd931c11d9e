"""Fitting profile terms from trace points (pure arithmetic; one slow test traces)."""

from __future__ import annotations

import pytest

from yolofit.estimator.build import (
    CLASSIFY_BATCH_POINTS,
    POINTS,
    _fit_exact,
    classify_terms,
    dense_objects,
    fit_terms,
)
from yolofit.estimator.profile import Terms


def _peak(b: int, o: int) -> int:
    """A synthetic step: sparse peak L = 1000 + 100 b; assigner A = 950 + 90 b + 3 b o."""
    return max(1000 + 100 * b, 950 + 90 * b + 3 * b * o)


def test_four_point_fit_keeps_the_sparse_objects_in_per_sample() -> None:  # old profiles
    """Profiles traced before the mean point: the sparse line is taken as measured (with its
    4 objects per sample), so a truly linear truth comes back with per_sample + 4 *
    per_object: an over-estimate of 4 * per_object * batch bytes, never an under-estimate."""
    points = ((4, 4), (8, 4), (2, 128), (2, 256))
    truth = Terms(5000, 700, 11)
    values = [truth.at(b, o) for b, o in points]
    o_sparse = points[0][1]
    assert _fit_exact(values, points) == (5000, 700 + o_sparse * 11, 11)
    assert fit_terms(values, points) == Terms(5000, 700 + o_sparse * 11, 11)


def _value(terms: Terms, point: tuple[int, ...]) -> int:
    b, most, *mean = point
    return terms.at(b, most, mean[0] if mean else most)


def test_five_point_fit_recovers_linear_terms_exactly() -> None:
    """With the mean point a linear truth in the typical labels comes back exactly: the
    sparse line at zero labels, the labels' slope, nothing on the densest count."""
    truth = Terms(5000, 700, 0, 11)
    values = [_value(truth, p) for p in POINTS]
    assert _fit_exact(values, POINTS) == (5000, 700, 0, 11)
    assert fit_terms(values) == truth


def test_padding_seen_only_by_the_assigner_stays_on_the_densest_count() -> None:
    """Equal-density points cannot tell padding (b x max) from typical labels (b x mean);
    the assigner's own peaks can: the fit keeps it on the densest count (an upper bound
    for any mean up to the max)."""
    truth = Terms(5000, 700, 3, 0)
    values = [_value(truth, p) for p in POINTS]
    terms = fit_terms(values, POINTS, assign=values)
    assert terms.per_object == 3
    for b, most, mean in ((1, 0, 0), (16, 100, 1), (64, 1000, 16), (8, 40, 40)):
        assert terms.at(b, most, mean) >= truth.at(b, most, mean)


def _assigner(b: int, most: int) -> int:
    return 950 + 90 * b + 3 * b * most  # padded to the densest sample


def _step(b: int, most: int, mean: int) -> int:
    """A synthetic segment step: the sparse peak L = 1000 + 100 b + 20 b mean (mask maps of
    the real labels); a dense backward peak B = 900 + 60 b + 21 b mean (it sets the peak only
    with many labels); the assigner A = 950 + 90 b + 3 b max, hidden under B at the traced
    dense points."""
    return max(1000 + 100 * b + 20 * b * mean, 900 + 60 * b + 21 * b * mean,
               _assigner(b, most))


def test_five_point_fit_is_an_upper_bound_with_the_mean_below_the_max() -> None:
    values = [_step(p[0], p[1], p[-1]) for p in POINTS]
    assign = [_assigner(p[0], p[1]) for p in POINTS]
    assert all(a < v for a, v in zip(assign, values, strict=True))  # never the peak here
    assert POINTS == ((4, 4), (8, 4), (2, 128), (2, 256), (4, 16))
    blind = fit_terms(values)
    terms = fit_terms(values, POINTS, assign)
    assert terms.per_mean_object == 20 and terms.per_sample == 100 and terms.fixed == 1000
    assert terms.per_object == 3 > blind.per_object  # the assigner's slope, seen in its phase
    for b in (2, 4, 8, 16, 32, 64):
        for most in (0, 4, 30, 100, 300, 1000):
            for mean in {-(-most // b), most // 8, most // 2, most}:  # mean >= max / b
                if mean >= -(-most // b):
                    assert terms.at(b, most, mean) >= _step(b, most, mean), (b, most, mean)
    # without the assigner's own peaks the fit misses it where max >> mean
    assert blind.at(64, 1000, 16) < _step(64, 1000, 16)
    # the excess of the dense points is charged to the densest count, not to every sample
    assert terms.at(16, 4, 1) - _step(16, 4, 1) <= 16 * 4 * terms.per_object


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


def test_classify_fit_takes_the_large_batch_slope_and_covers_batch_1_with_fixed() -> None:
    """A classifier with many classes: its head's state sets the peak of small batches
    (H = 67 MB + 8.55 MB b), its activations that of large ones (L = 60 MB + 8.80 MB b).
    The slope of batches 32 and 64 is L's; fixed is raised to cover batch 1; by convexity
    the line is above the peak at every batch from 1 on (batches 4 and 8 gave H's slope:
    2.5 % under at batch 512)."""
    def peak(b: int) -> int:
        return max(67_000_000 + 8_550_000 * b, 60_000_000 + 8_800_000 * b)

    points = (*CLASSIFY_BATCH_POINTS, (1, 0), (1, 1))
    terms = classify_terms([peak(p[0]) for p in points], points)
    assert terms.per_sample == 8_800_000 and terms.per_object == 0
    assert terms.fixed == 67_000_000 + 8_550_000 - 8_800_000  # covers batch 1 exactly
    assert all(terms.at(b) >= peak(b) for b in range(1, 1025))
    small = fit_terms([peak(b) for b in (4, 8, 2, 2)], ((4, 0), (8, 0), (2, 0), (2, 1)))
    assert small.at(512) < peak(512)  # what the old points gave


@pytest.mark.slow
def test_a_traced_classifier_profile_covers_large_batches() -> None:
    """yolo11n-cls at 224 with 1000 classes (ImageNet), traced: the profile is not under a
    trace at batch 256 (points 4 and 8 made it 2.4 % under there)."""
    from yolofit.estimator.build import _build, build_profile, key_for, trace_point
    from yolofit.estimator.models import resolve

    key = key_for("yolo11n-cls", 224, nc=1000)
    profile = build_profile(key)
    traced = trace_point(_build(resolve("yolo11n-cls"), 1000, "hollow"), key, 256, 0)
    assert profile.allocated.at(256) >= traced.allocated
    assert profile.allocated.at(256) <= traced.allocated * 1.01
