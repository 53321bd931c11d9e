"""A profile for a class count between two traced ones, without a trace.

Most jobs train on their own classes (nc 3, 12, 40), and every other nc was a key of its own:
a trace of 15-40 s on the operator's CPU before the first plan. But nc enters a training
step only through sizes: the head's class branch (weights, gradients, optimizer state, EMA:
c x nc each), its outputs (b x nc x h x w per level), and the loss's b x anchors x nc
tensors. No op, no branch and no data-dependent count of the step depends on it (the
assigner reads the predicted score at each label's class, one value per label whatever nc
is). So every tensor's size is affine in nc, the bytes alive at any moment of the step are
a sum of affine functions, and the peak - the largest of those sums over the step - is a
maximum of affine functions: convex in nc. A convex function lies under its chord, so the
profile a traced pair (nc_lo, nc_hi) gives by linear interpolation is an upper bound at
every nc between them, and exact where the peak stays at the same moment of the step (the
usual case: the sparse-label peak at the end of the loss).

What convexity does not cover, and how it is bounded here:
- Allocator rounding (512-byte blocks, 2 MiB pages): each size is affine up to the round-up,
  so the chord can miss by a rounding step per live tensor. Allocated terms are interpolated
  and rounded up term by term.
- Reserved bytes come from the allocator model's replay, which maps memory in pages and
  segments (2 MiB small, 20 MiB large): the reserved peak follows the allocated one in steps
  of up to a page per pool, so it is convex in nc only up to those steps. The reserved terms
  here are the chord of the two ends' reserved terms plus one small and one large page
  (PAGE_SLACK, 22 MiB). Measured against exact traces at counts between (the benchmark
  benchmarks/nc_interpolation.py and the shipped ladders): the bare
  chord was under by at most 0.9 MiB; taking the larger of the two ends' reserve overheads
  term by term instead added 22-951 MiB (benchmarks/nc_interpolation.py, RESULTS.md).
- The ends' own fits: a profile's terms are exact at its trace points and linear between
  them, and the two ends trace dense labels at different counts (128/256 below nc 65,
  2 nc/4 nc above), so at one end's points the other end's fit error comes along, scaled by
  the chord: measured at most 0.01 % under a trace (tests/estimator/test_nc_interpolation.py).

  That error grows with how far apart the ends' points are: the dense points sit at
  max(128, 2 nc) and twice that, so ends at nc 80 and 365 trace 320 and 1,460 labels, and an
  interpolated nc 200 came out 1.3 % under its trace. So a pair is used only when its
  densest traced label counts are within DENSE_RATIO of each other (nc 1 and 80: 256 and
  320), or when neither traced labels (classify: its points never depend on nc; nc 80 to
  1000 measured never under).

Only stored (traced) profiles are endpoints, they must agree on everything but nc, task
included, and nothing is extrapolated: an nc outside the traced range is traced as before.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

from yolofit.estimator.allocator import LARGE_BUFFER, SMALL_BUFFER
from yolofit.estimator.profile import Profile, Terms

SOURCE_PREFIX = "interpolated in nc"
PAGE_SLACK = Terms(SMALL_BUFFER + LARGE_BUFFER, 0)  # one page of each pool (module text)


DENSE_RATIO = Fraction(5, 4)  # the largest spread of the ends' densest labels (see above)


def comparable(lo: Profile, hi: Profile) -> bool:
    """Whether two stored profiles of one configuration may be interpolated between: the
    same task, and trace points close enough (the module docstring: each end's fit error
    at the other's points)."""
    if lo.task != hi.task:
        return False
    a, b = sorted(max((int(t.get("objects", 0)) for t in p.traced_at), default=0)
                  for p in (lo, hi))
    return b <= 1 or b <= a * DENSE_RATIO


def bracket(nc: int, traced: Sequence[int]) -> tuple[int, int] | None:
    """The nearest traced class counts below and above `nc` (None without both)."""
    below = [n for n in traced if n < nc]
    above = [n for n in traced if n > nc]
    if not below or not above:
        return None
    return max(below), min(above)


def _chord(lo: Terms, hi: Terms, t: Fraction) -> Terms:
    """lo + t (hi - lo), term by term, rounded up (b and objects are never negative, so a
    term rounded up never lowers the total)."""
    def f(a: int, b: int) -> int:
        return math.ceil(a + t * (b - a))

    return Terms(f(lo.fixed, hi.fixed), f(lo.per_sample, hi.per_sample),
                 f(lo.per_object, hi.per_object), f(lo.per_mean_object, hi.per_mean_object))


def _reserved(lo: Profile, hi: Profile, t: Fraction, expandable_segments: bool) -> Terms:
    return _chord(lo.reserved_terms(expandable_segments), hi.reserved_terms(expandable_segments),
                  t) + PAGE_SLACK


def between(lo: Profile, hi: Profile, nc: int) -> Profile:
    """The profile of `nc` from traced profiles at lo.key.nc < nc < hi.key.nc (the module
    docstring says why it is an upper bound)."""
    if lo.key.replace(nc=0) != hi.key.replace(nc=0) or lo.task != hi.task:
        raise ValueError(f"profiles {lo.key.id} and {hi.key.id} differ in more than nc")
    if not lo.key.nc < nc < hi.key.nc:
        raise ValueError(f"nc {nc} is not between {lo.key.nc} and {hi.key.nc}")
    t = Fraction(nc - lo.key.nc, hi.key.nc - lo.key.nc)
    allocated = _chord(lo.allocated, hi.allocated, t)
    zero = Terms(0, 0)
    breakdown = {name: _chord(lo.breakdown.get(name, zero), hi.breakdown.get(name, zero), t)
                 for name in {*lo.breakdown, *hi.breakdown}}
    return Profile(
        key=lo.key.replace(nc=nc), params=math.ceil(lo.params + t * (hi.params - lo.params)),
        allocated=allocated, reserved=_reserved(lo, hi, t, True),
        reserved_default=_reserved(lo, hi, t, False), breakdown=breakdown,
        traced_at=[], task=lo.task,
        source=(f"{SOURCE_PREFIX} between the traced profiles at nc={lo.key.nc} and "
                f"nc={hi.key.nc} (an upper bound: peak memory is convex in nc)"))
