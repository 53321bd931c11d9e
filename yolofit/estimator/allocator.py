"""A pure model of PyTorch's CUDA caching allocator (one device, one stream).

The tracer replays the storage allocations and frees of a CPU training step through this
model to learn what `torch.cuda.max_memory_allocated()` and `max_memory_reserved()` would
report on a GPU. The rules follow `c10/cuda/CUDACachingAllocator.cpp` and
`docs/source/notes/cuda.rst` (PyTorch 2.x), default configuration:

- every request is rounded up to a multiple of 512 B (minimum 512 B); size 0 is no request;
- rounded requests <= 1 MiB use the *small* pool, larger ones the *large* pool;
- a request with no fitting cached block makes a new segment (cudaMalloc): 2 MiB for the
  small pool, 20 MiB for large requests < 10 MiB, else the request rounded up to 2 MiB;
- a cached free block is chosen best-fit (smallest size that fits, lowest address on ties);
- a block is split when the remainder is >= 512 B (small pool) or > 1 MiB (large pool);
  otherwise the whole block is handed out, and counts as allocated in full;
- a freed block merges with free neighbours of the same segment;
- segments are never returned to the device unless `empty_cache()` is called (not by the
  training loop we model; Ultralytics calls it only when a card is > 50 % full).

`expandable_segments=True` (``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True``, which the
yolofit trainer sets) keeps one segment per pool that grows by mapping pages (2 MiB pages for
the small pool, 20 MiB for the large); every split leaving >= 512 B is allowed, and a request
that no free block fits extends the free tail of the segment by whole pages.

Not modelled: allocation failure and the allocator's retry after freeing cached blocks (so
the model's reserved is what an unconstrained card would reserve, an upper bound near a
card's capacity), `max_split_size_mb`, `roundup_power2_divisions`, multiple streams, CUDA
graphs, and the physical placement of segments (addresses here are virtual and increasing).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

KIB = 1024
MIB = 1024 * KIB

MIN_BLOCK = 512  # kMinBlockSize: every size is rounded up to a multiple of this
SMALL_SIZE = 1 * MIB  # kSmallSize: largest request served from the small pool
SMALL_BUFFER = 2 * MIB  # kSmallBuffer: small-pool segment size (and expandable small page)
LARGE_BUFFER = 20 * MIB  # kLargeBuffer: segment for 1-10 MiB requests (and expandable page)
MIN_LARGE_ALLOC = 10 * MIB  # kMinLargeAlloc: from here on, segments are the request's size
ROUND_LARGE = 2 * MIB  # kRoundLarge: large segments are multiples of 2 MiB


def round_size(nbytes: int) -> int:
    """The caching allocator's `round_size`: at least 512 B, a multiple of 512 B."""
    if nbytes < MIN_BLOCK:
        return MIN_BLOCK
    return MIN_BLOCK * ((nbytes + MIN_BLOCK - 1) // MIN_BLOCK)


def segment_size(rounded: int) -> int:
    """`get_allocation_size`: the cudaMalloc size for a request no cached block fits."""
    if rounded <= SMALL_SIZE:
        return SMALL_BUFFER
    if rounded < MIN_LARGE_ALLOC:
        return LARGE_BUFFER
    return ROUND_LARGE * ((rounded + ROUND_LARGE - 1) // ROUND_LARGE)


@dataclass(eq=False)
class _Block:
    segment: int
    addr: int
    size: int
    small: bool
    allocated: bool = False
    prev: _Block | None = None
    next: _Block | None = None

    def key(self) -> tuple[int, int]:
        return (self.size, self.addr)


@dataclass
class _Pool:
    small: bool
    free: list[tuple[int, int]] = field(default_factory=list)  # sorted (size, addr)
    by_key: dict[tuple[int, int], _Block] = field(default_factory=dict)
    tail: _Block | None = None  # expandable mode: last block of the pool's one segment
    mapped: int = 0  # expandable mode: bytes mapped in the pool's one segment

    def insert(self, block: _Block) -> None:
        k = block.key()
        bisect.insort(self.free, k)
        self.by_key[k] = block

    def remove(self, block: _Block) -> None:
        k = block.key()
        i = bisect.bisect_left(self.free, k)
        del self.free[i]
        del self.by_key[k]

    def best_fit(self, size: int) -> _Block | None:
        i = bisect.bisect_left(self.free, (size, -1))
        if i == len(self.free):
            return None
        return self.by_key[self.free[i]]


@dataclass(frozen=True)
class AllocatorStats:
    allocated: int
    reserved: int
    peak_allocated: int
    peak_reserved: int
    requested: int
    peak_requested: int
    segments: int


class CachingAllocatorModel:
    """Replays malloc/free with the caching allocator's rules; `malloc` returns a handle.

    `allocated` is the sum of handed-out block sizes (what `memory_allocated()` reports,
    rounding and unsplit remainders included); `reserved` is the sum of segment sizes
    (`memory_reserved()`); `requested` is the sum of raw request sizes.
    """

    def __init__(self, expandable_segments: bool = False) -> None:
        self.expandable = expandable_segments
        self._pools = {True: _Pool(small=True), False: _Pool(small=False)}
        self._live: dict[int, tuple[_Block, int]] = {}
        self._next_handle = 1
        self._next_addr = 0
        self._segments = 0
        self.allocated = 0
        self.reserved = 0
        self.requested = 0
        self.peak_allocated = 0
        self.peak_reserved = 0
        self.peak_requested = 0

    # -- public -------------------------------------------------------------------------------
    def malloc(self, nbytes: int) -> int:
        """Allocate `nbytes`; returns a handle for `free` (0 for a zero-byte request)."""
        if nbytes <= 0:
            return 0
        size = round_size(nbytes)
        pool = self._pools[size <= SMALL_SIZE]
        block = pool.best_fit(size)
        if block is not None:
            pool.remove(block)
        elif self.expandable:
            block = self._expand(pool, size)
        else:
            block = self._new_segment(pool, segment_size(size))
        block = self._split(pool, block, size)
        block.allocated = True
        handle = self._next_handle
        self._next_handle += 1
        self._live[handle] = (block, nbytes)
        self.allocated += block.size
        self.requested += nbytes
        self.peak_allocated = max(self.peak_allocated, self.allocated)
        self.peak_requested = max(self.peak_requested, self.requested)
        return handle

    def free(self, handle: int) -> None:
        if handle == 0:
            return
        block, nbytes = self._live.pop(handle)
        self.allocated -= block.size
        self.requested -= nbytes
        block.allocated = False
        pool = self._pools[block.small]
        for neighbour in (block.prev, block.next):
            if neighbour is not None and not neighbour.allocated:
                pool.remove(neighbour)
                self._merge(pool, block, neighbour)
        pool.insert(block)

    def block_size(self, handle: int) -> int:
        """Size of the block behind a live handle (rounded, unsplit remainder included)."""
        return self._live[handle][0].size if handle else 0

    def empty_cache(self) -> None:
        """Release every segment that is wholly free (default mode only, like cudaFree)."""
        if self.expandable:
            return
        for pool in self._pools.values():
            for block in [b for b in pool.by_key.values() if b.prev is None and b.next is None]:
                pool.remove(block)
                self.reserved -= block.size
                self._segments -= 1

    def stats(self) -> AllocatorStats:
        return AllocatorStats(self.allocated, self.reserved, self.peak_allocated,
                              self.peak_reserved, self.requested, self.peak_requested,
                              self._segments)

    # -- internals ----------------------------------------------------------------------------
    def _grow_reserved(self, nbytes: int) -> None:
        self.reserved += nbytes
        self.peak_reserved = max(self.peak_reserved, self.reserved)

    def _new_segment(self, pool: _Pool, nbytes: int) -> _Block:
        self._segments += 1
        block = _Block(self._segments, self._next_addr, nbytes, pool.small)
        self._next_addr += nbytes
        self._grow_reserved(nbytes)
        return block

    def _expand(self, pool: _Pool, size: int) -> _Block:
        """Expandable mode: map whole pages at the end of the pool's segment."""
        page = SMALL_BUFFER if pool.small else LARGE_BUFFER
        tail = pool.tail
        have = tail.size if tail is not None and not tail.allocated else 0
        grow = page * ((size - have + page - 1) // page)
        self._grow_reserved(grow)
        pool.mapped += grow
        if have:
            assert tail is not None
            pool.remove(tail)
            tail.size += grow
            return tail
        if tail is None:
            self._segments += 1
            base = self._next_addr
            self._next_addr += 1 << 50  # a huge virtual reservation, like cuMemAddressReserve
            block = _Block(self._segments, base, grow, pool.small)
        else:
            block = _Block(tail.segment, tail.addr + tail.size, grow, pool.small, prev=tail)
            tail.next = block
        pool.tail = block
        return block

    def _should_split(self, block: _Block, size: int) -> bool:
        remaining = block.size - size
        if block.small or self.expandable:
            return remaining >= MIN_BLOCK
        return remaining > SMALL_SIZE

    def _split(self, pool: _Pool, block: _Block, size: int) -> _Block:
        if not self._should_split(block, size):
            return block
        rest = _Block(block.segment, block.addr + size, block.size - size, block.small,
                      prev=block, next=block.next)
        if block.next is not None:
            block.next.prev = rest
        block.next = rest
        block.size = size
        if pool.tail is block:
            pool.tail = rest
        pool.insert(rest)
        return block

    def _merge(self, pool: _Pool, block: _Block, other: _Block) -> None:
        """Absorb free neighbour `other` into `block` (which is not in the free set)."""
        if other is block.prev:
            block.addr = other.addr
            block.prev = other.prev
            if other.prev is not None:
                other.prev.next = block
        else:
            block.next = other.next
            if other.next is not None:
                other.next.prev = block
        block.size += other.size
        if pool.tail is other:
            pool.tail = block


def replay(sizes_and_frees: list[tuple[int, int]], expandable_segments: bool = False
           ) -> CachingAllocatorModel:
    """Replay events (+1, nbytes) for malloc / (-1, index of the malloc event) for free."""
    model = CachingAllocatorModel(expandable_segments)
    handles: list[int] = []
    for op, value in sizes_and_frees:
        if op > 0:
            handles.append(model.malloc(value))
        else:
            model.free(handles[value])
            handles.append(0)
    return model
