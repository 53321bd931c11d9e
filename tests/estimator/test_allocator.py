"""The caching-allocator model against hand-computed expectations.

Each case is a list of operations: ("m", name, bytes) mallocs and names the handle,
("f", name) frees it, ("e",) is empty_cache. Expectations are worked out by hand from the
rules in allocator.py's docstring; the comment on each case shows the arithmetic.
"""

from __future__ import annotations

import pytest

from yolofit.estimator.allocator import (
    LARGE_BUFFER,
    MIB,
    SMALL_BUFFER,
    CachingAllocatorModel,
    replay,
    round_size,
    segment_size,
)


@pytest.mark.parametrize(("nbytes", "rounded"), [
    (1, 512), (511, 512), (512, 512), (513, 1024), (1000, 1024), (MIB, MIB),
    (MIB + 1, MIB + 512),
])
def test_round_size(nbytes: int, rounded: int) -> None:
    assert round_size(nbytes) == rounded


@pytest.mark.parametrize(("rounded", "segment"), [
    (512, SMALL_BUFFER), (MIB, SMALL_BUFFER),  # small pool: 2 MiB segments
    (MIB + 512, LARGE_BUFFER), (10 * MIB - 512, LARGE_BUFFER),  # 1-10 MiB: 20 MiB
    (10 * MIB, 10 * MIB), (12 * MIB + 512, 14 * MIB),  # >= 10 MiB: rounded up to 2 MiB
])
def test_segment_size(rounded: int, segment: int) -> None:
    assert segment_size(rounded) == segment


Op = tuple  # ("m", name, nbytes) | ("f", name) | ("e",)

# (id, expandable, ops, allocated, reserved, peak_allocated, peak_reserved)
CASES: list[tuple[str, bool, list[Op], int, int, int, int]] = [
    # 1000 B -> 1024 B block from a new 2 MiB small segment.
    ("small-one", False, [("m", "a", 1000)], 1024, 2 * MIB, 1024, 2 * MIB),
    # Two small requests share the 2 MiB segment (remainder >= 512 B is split off).
    ("small-share", False, [("m", "a", 1000), ("m", "b", 1000)],
     2048, 2 * MIB, 2048, 2 * MIB),
    # 1 MiB + 1 MiB fill a small segment exactly; the next 512 B needs a second segment.
    ("small-full", False, [("m", "a", MIB), ("m", "b", MIB), ("m", "c", 1)],
     2 * MIB + 512, 4 * MIB, 2 * MIB + 512, 4 * MIB),
    # 0 bytes is no request at all.
    ("zero", False, [("m", "a", 0)], 0, 0, 0, 0),
    # 1.5 MiB: large pool, 20 MiB segment, split (18.5 MiB > 1 MiB remains free).
    ("large-20", False, [("m", "a", 3 * MIB // 2)], 3 * MIB // 2, 20 * MIB,
     3 * MIB // 2, 20 * MIB),
    # 12 MiB: >= 10 MiB, own segment of exactly 12 MiB.
    ("large-own", False, [("m", "a", 12 * MIB)], 12 * MIB, 12 * MIB, 12 * MIB, 12 * MIB),
    # 19.5 MiB: segment rounded to 20 MiB; 0.5 MiB remainder <= 1 MiB is not split, so the
    # whole 20 MiB block counts as allocated.
    ("large-unsplit", False, [("m", "a", 39 * MIB // 2)], 20 * MIB, 20 * MIB,
     20 * MIB, 20 * MIB),
    # Cached 12 MiB block reused for 11 MiB: remainder 1 MiB is not > 1 MiB, no split.
    ("reuse-nosplit", False, [("m", "a", 12 * MIB), ("f", "a"), ("m", "b", 11 * MIB)],
     12 * MIB, 12 * MIB, 12 * MIB, 12 * MIB),
    # Cached 12 MiB block split for 5 MiB (7 MiB free), then 6 MiB takes the 7 MiB block
    # whole (remainder 1 MiB): 5 + 7 = 12 MiB allocated, no new segment.
    ("reuse-split", False, [("m", "a", 12 * MIB), ("f", "a"), ("m", "b", 5 * MIB),
                            ("m", "c", 6 * MIB)], 12 * MIB, 12 * MIB, 12 * MIB, 12 * MIB),
    # Peak survives frees: 12 MiB, free, 2 MiB from the cached block (10 MiB split off).
    ("peak", False, [("m", "a", 12 * MIB), ("f", "a"), ("m", "b", 2 * MIB)],
     2 * MIB, 12 * MIB, 12 * MIB, 12 * MIB),
    # Coalescing: three 4 MiB blocks in one 20 MiB segment (8 MiB left); freeing the first
    # two merges them into one 8 MiB block, so both 8 MiB requests (the merged block and
    # the tail) fit without a second segment.
    ("coalesce", False, [("m", "a", 4 * MIB), ("m", "b", 4 * MIB), ("m", "c", 4 * MIB),
                         ("f", "b"), ("f", "a"), ("m", "d", 8 * MIB), ("m", "e", 8 * MIB)],
     20 * MIB, 20 * MIB, 20 * MIB, 20 * MIB),
    # Without coalescing-able neighbours: two separate 4 MiB holes cannot hold 8 MiB.
    ("no-coalesce", False, [("m", "a", 4 * MIB), ("m", "b", 4 * MIB), ("m", "c", 4 * MIB),
                            ("m", "d", 8 * MIB), ("f", "a"), ("f", "c"), ("m", "e", 8 * MIB)],
     20 * MIB, 40 * MIB, 20 * MIB, 40 * MIB),
    # Best fit: 14 and 10 MiB segments, both freed. 9 MiB takes the 10 MiB block (the
    # smallest that fits; 1 MiB remainder not split -> 10 MiB allocated), so 13 MiB still
    # fits the 14 MiB block (14 allocated). Largest-first would need a third segment.
    ("best-fit", False, [("m", "x", 14 * MIB), ("m", "y", 10 * MIB), ("f", "x"),
                         ("f", "y"), ("m", "r", 9 * MIB), ("m", "s", 13 * MIB)],
     24 * MIB, 24 * MIB, 24 * MIB, 24 * MIB),
    # empty_cache returns wholly free segments only.
    ("empty-cache", False, [("m", "a", 12 * MIB), ("m", "b", 1000), ("f", "a"), ("e",)],
     1024, 2 * MIB, 12 * MIB + 1024, 14 * MIB),
    # Expandable: 1.5 MiB maps one 20 MiB large page; 19 MiB needs 0.5 MiB more than the
    # 18.5 MiB free tail -> one more page. Every split >= 512 B is allowed.
    ("exp-grow", True, [("m", "a", 3 * MIB // 2), ("m", "b", 19 * MIB)],
     41 * MIB // 2, 40 * MIB, 41 * MIB // 2, 40 * MIB),
    # Expandable: 12 + 12 MiB -> 40 MiB mapped (default mode would reserve 24 MiB).
    ("exp-pages", True, [("m", "a", 12 * MIB), ("m", "b", 12 * MIB)],
     24 * MIB, 40 * MIB, 24 * MIB, 40 * MIB),
    # Expandable: a 19.5 MiB request splits exactly (0.5 MiB tail stays free).
    ("exp-exact", True, [("m", "a", 39 * MIB // 2)], 39 * MIB // 2, 20 * MIB,
     39 * MIB // 2, 20 * MIB),
    # Expandable small pool, 2 MiB pages: 1 KiB + 1 MiB fit the first page; the second
    # 1 MiB finds only 1 MiB - 1 KiB free at the tail and maps one more page.
    ("exp-small", True, [("m", "a", 1000), ("m", "b", MIB), ("m", "c", MIB)],
     1024 + 2 * MIB, 4 * MIB, 1024 + 2 * MIB, 4 * MIB),
    # Expandable: a freed block in the middle is reused best-fit, no growth.
    ("exp-reuse", True, [("m", "a", 8 * MIB), ("m", "b", 8 * MIB), ("f", "a"),
                         ("m", "c", 6 * MIB)], 14 * MIB, 20 * MIB, 16 * MIB, 20 * MIB),
]


@pytest.mark.parametrize(("name", "expandable", "ops", "allocated", "reserved",
                          "peak_allocated", "peak_reserved"), CASES, ids=[c[0] for c in CASES])
def test_allocator_cases(name: str, expandable: bool, ops: list[Op], allocated: int,
                         reserved: int, peak_allocated: int, peak_reserved: int) -> None:
    model = CachingAllocatorModel(expandable_segments=expandable)
    handles: dict[str, int] = {}
    for op in ops:
        if op[0] == "m":
            handles[op[1]] = model.malloc(op[2])
        elif op[0] == "f":
            model.free(handles.pop(op[1]))
        else:
            model.empty_cache()
    s = model.stats()
    assert (s.allocated, s.reserved, s.peak_allocated, s.peak_reserved) == (
        allocated, reserved, peak_allocated, peak_reserved)


def test_free_everything_returns_to_zero_allocated() -> None:
    model = CachingAllocatorModel()
    sizes = [700, 3 * MIB, 25 * MIB, 1, 9 * MIB, 2 * MIB + 3]
    handles = [model.malloc(n) for n in sizes]
    for h in reversed(handles):
        model.free(h)
    assert model.allocated == 0 and model.requested == 0
    # Everything coalesced back: reusing the same sizes needs no new segment.
    reserved = model.reserved
    for n in sizes:
        model.malloc(n)
    assert model.reserved == reserved


def test_replay_helper_matches_direct_calls() -> None:
    events = [(1, 12 * MIB), (1, 1000), (-1, 0), (1, 5 * MIB)]
    model = replay(events)
    assert (model.allocated, model.reserved, model.peak_allocated) == (
        1024 + 5 * MIB, 14 * MIB, 12 * MIB + 1024)
