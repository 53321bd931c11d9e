"""Which missing profile is traced next: round robin over the namespaces that asked.

Traces are few at a time (one by default) and each takes a CPU for tens of seconds, so
the order of the queue is a shared resource. First come, first served would let one tenant
that applies many jobs with distinct profile keys (another `nc`, `imgsz` or model each)
hold every other namespace's first estimate behind all of them. Here each namespace has
its own first-in, first-out line, and the next trace is the oldest key of the namespace
served least recently (one never served first, in the order they asked): a namespace waits
behind at most one trace of each other namespace with keys queued, however many those
queued. A namespace remembers when it was last served after its line empties, so asking
again right after being served does not put it first.

A key is queued once, under the namespace that asked first (its profile serves every
namespace when stored). Pure: no asyncio, no Kubernetes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable, Mapping
from typing import Generic, TypeVar

Item = TypeVar("Item", bound=Hashable)


class TraceQueue(Generic[Item]):
    """Per-namespace FIFO lines, the least recently served first."""

    def __init__(self) -> None:
        self._lines: dict[str, deque[Item]] = {}  # non-empty lines, in the order they came
        self._queued: set[Item] = set()
        self._served: dict[str, int] = {}  # namespace -> when it was last served (a count)
        self._pops = 0

    def push(self, namespace: str, item: Item) -> bool:
        """Queue `item` at the end of `namespace`'s line; False if it is queued already."""
        if item in self._queued:
            return False
        self._queued.add(item)
        self._lines.setdefault(namespace, deque()).append(item)
        return True

    def pop(self) -> Item | None:
        """The oldest item of the namespace served least recently (None when empty)."""
        if not self._lines:
            return None
        namespace = _least_recently_served(self._lines, self._served)
        line = self._lines[namespace]
        item = line.popleft()
        if not line:
            del self._lines[namespace]
        self._served[namespace] = self._pops
        self._pops += 1
        self._queued.discard(item)
        return item

    def ahead_of(self, item: Item, at_most: int | None = None) -> int | None:
        """How many queued items `pop` returns before `item` if nothing else is pushed
        (None when it is not queued): the pops replayed on cursors into the lines. With
        `at_most`, at most that many are counted: `at_most + 1` means "more" (the replay
        stops there, so a long queue costs each caller a few steps, not its length)."""
        if item not in self._queued:
            return None
        cursor = dict.fromkeys(self._lines, 0)  # namespace -> next index in its line
        served = dict(self._served)
        limit = len(self._queued) if at_most is None else min(at_most + 1, len(self._queued))
        for count in range(limit):
            namespace = _least_recently_served(cursor, served)
            line, i = self._lines[namespace], cursor[namespace]
            if line[i] == item:
                return count
            if i + 1 == len(line):
                del cursor[namespace]
            else:
                cursor[namespace] = i + 1
            served[namespace] = self._pops + count
        return limit  # at_most + 1: further back than at_most

    def lengths(self) -> dict[str, int]:
        """Queued items per namespace (namespaces with none queued are left out)."""
        return {ns: len(line) for ns, line in self._lines.items()}

    def clear(self) -> None:
        self._lines.clear()
        self._queued.clear()
        self._served.clear()

    def __contains__(self, item: object) -> bool:
        return item in self._queued

    def __len__(self) -> int:
        return len(self._queued)


def _least_recently_served(namespaces: Iterable[str], served: Mapping[str, int]) -> str:
    """The namespace served longest ago; never served first, the first listed wins ties."""
    return min(namespaces, key=lambda ns: served.get(ns, -1))


__all__ = ["TraceQueue"]
