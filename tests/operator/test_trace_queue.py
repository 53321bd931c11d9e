"""The trace queue serves namespaces in rotation, each in its own first-in, first-out line."""

from __future__ import annotations

from yolofit.operator.trace_queue import TraceQueue


def _drain(queue: TraceQueue[str]) -> list[str]:
    out = []
    while (item := queue.pop()) is not None:
        out.append(item)
    return out


def test_a_burst_from_one_namespace_waits_its_turn() -> None:
    queue: TraceQueue[str] = TraceQueue()
    for i in range(5):
        queue.push("flood", f"flood-{i}")
    queue.push("quiet", "quiet-0")
    queue.push("other", "other-0")
    queue.push("quiet", "quiet-1")
    assert len(queue) == 8
    assert _drain(queue) == ["flood-0", "quiet-0", "other-0", "flood-1", "quiet-1",
                             "flood-2", "flood-3", "flood-4"]
    assert len(queue) == 0 and queue.pop() is None


def test_a_namespace_that_was_just_served_goes_to_the_back() -> None:
    queue: TraceQueue[str] = TraceQueue()
    queue.push("a", "a-0")
    queue.push("a", "a-1")
    assert queue.pop() == "a-0"
    queue.push("b", "b-0")  # b arrives after a was served: a-1 is behind it
    assert _drain(queue) == ["b-0", "a-1"]


def test_a_key_is_queued_once_whoever_asks() -> None:
    queue: TraceQueue[str] = TraceQueue()
    assert queue.push("a", "yolo11x@1280") is True
    assert queue.push("b", "yolo11x@1280") is False
    assert "yolo11x@1280" in queue and len(queue) == 1
    assert _drain(queue) == ["yolo11x@1280"]
    assert "yolo11x@1280" not in queue
    assert queue.push("b", "yolo11x@1280") is True  # traced (or failed): may be asked again
    queue.clear()
    assert len(queue) == 0 and queue.pop() is None


def test_asking_again_right_after_being_served_does_not_jump_the_line() -> None:
    queue: TraceQueue[str] = TraceQueue()
    queue.push("flood", "flood-0")
    queue.push("quiet", "quiet-0")
    assert queue.pop() == "flood-0"  # flood's line is empty now
    queue.push("flood", "flood-1")  # ...and it asks again at once
    assert _drain(queue) == ["quiet-0", "flood-1"]


def test_ahead_of_is_the_order_pop_serves() -> None:
    queue: TraceQueue[str] = TraceQueue()
    for item in ("flood-0", "flood-1", "flood-2"):
        queue.push("flood", item)
    queue.push("quiet", "quiet-0")
    assert queue.pop() == "flood-0"
    queue.push("other", "other-0")
    expected = ["quiet-0", "other-0", "flood-1", "flood-2"]
    assert [queue.ahead_of(i) for i in expected] == [0, 1, 2, 3]
    assert queue.ahead_of("flood-0") is None  # served: not queued
    assert [queue.ahead_of(i, at_most=1) for i in expected] == [0, 1, 2, 2]  # 2: "more"
    assert _drain(queue) == expected  # what ahead_of said, without pushes in between
