"""Run the real Ultralytics training step on CPU and record every tensor storage it makes.

`StorageTracker` is a TorchDispatchMode: every aten op's outputs are inspected, each new
storage (identified by its StorageImpl, `untyped_storage()._cdata`) becomes an *alloc* event
and a `weakref.finalize` on the storage object becomes its *free* event — exactly when the
CUDA caching allocator would get the block back, because CPython frees storages by
refcount at the same points in the program. Storages that exist before tracing (weights,
buffers, the EMA copy) are registered up front. Each storage carries a category (weights,
gradients, optimizer_state, ema, activations, loss, validation, temporaries), so the
breakdown at the peak is known.

`trace_training_step` reproduces what `ultralytics.engine.trainer.BaseTrainer` does per
iteration (8.4.x): batch to the device (uint8) and `/255` (float), forward and the real
`model.loss` under autocast, `GradScaler.scale(loss).backward()`, `unscale_`,
`clip_grad_norm_(max_norm=10)`, `scaler.step` with the optimizer `build_optimizer` makes,
`zero_grad()` (set_to_none), `ModelEMA.update`; three iterations (step, accumulate, step:
optimizer state exists and gradients live through a whole forward and backward, as with
Ultralytics' gradient accumulation); then one validation batch (2x the batch) of the EMA model under
`inference_mode` and fp16 autocast, with its loss, as `BaseValidator.__call__` does.

Where CPU and CUDA differ (what the trace can not see, or sees differently):
- kernel-internal buffers that never become tensors (cuDNN/cuBLAS workspaces, cub temp
  storage of sort/unique/nonzero) are per-GPU-class constants in `gpu_classes.json`;
- CPU autocast's op lists differ from CUDA's in the fp32 list: CUDA autocast runs softmax,
  log_softmax, cumsum and exp/log/pow/rsqrt/reciprocal in fp32, CPU autocast leaves them in
  the input dtype (checked: softmax and exp of fp16 stay fp16 on CPU;
  binary_cross_entropy_with_logits is fp32 on both). Both lists put conv, matmul,
  linear, bmm/addmm/baddbmm and SDPA in the low-precision dtype, which is where nearly all
  activation bytes are (conv outputs, and the BN/SiLU outputs that follow them keep that
  dtype on both). The ops that differ run in the loss (DFL softmax over b x anchors x 64)
  and in the attention blocks' softmax (yolo12 A2C2f, C2PSA):
  there the CPU trace can under-count by up to 2 bytes per element of those tensors (a few
  MB per sample at 640). Emulating the CUDA list below autograd breaks backward's dtype
  checks, so it is not done; calibration absorbs it.
- AdamW is built with fused=True (what Ultralytics does on CUDA) and SGD with foreach=True
  (PyTorch's CUDA default), so the optimizer's temporaries match the CUDA path;
  clip_grad_norm_ uses per-tensor norms on CPU and `_foreach_norm` on CUDA (scalars only).
- With `compute="shape"`, the forward, backward and validation forward are not computed:
  every op whose outputs alias no input is answered by its meta kernel with uninitialised
  tensors of the same shape, strides and dtype (no FLOPs, no page touched); ops with
  data-dependent shapes, in-place ops, the batch transfer, the loss and the optimizer run
  for real, with predictions and gradients zeroed first so values are deterministic.
  Storage events are the same (a test checks it); values differ, which could change only the
  loss's data-dependent sizes (foreground anchors the assigner picks: tensors of a few KiB).
- With `compute="hollow"` (the default), nothing whose value no decision reads is computed or
  even backed by touched pages: the weights, the EMA copy (`hollow_copy`: uninitialised
  storages of the same sizes), the batch image, activations, gradients and optimizer state
  are *hollow* (the tracker keeps their storage ids). A functional op that reads a hollow
  tensor is answered by its meta kernel (hollow result); an op that writes into its
  arguments and reads a hollow one (`_foreach_lerp_` of the EMA, fused AdamW, the
  GradScaler's unscale, gradient clipping's `_foreach_mul_`) is not run at all: it
  allocates nothing the trace could see, and its written arguments become hollow. Only the
  loss runs for real, from zeroed predictions as in shape compute - each zeroed when an op
  first reads its values (`zero_on_read`: the head's feature maps, whose shapes alone the
  loss reads, are never touched) - and the GradScaler's found_inf keeps 0 (what zero
  gradients give). An op that would take a
  size or a branch from a hollow value (`.item()`, nonzero, unique) raises HollowRead (and
  is recorded in `hollow_reads`); `build.build_profile` then traces in shape compute.
  Host memory is then the interpreter, the loss of one batch and the model's small tensors:
  it no longer grows with the model's parameter count.
- Time: most of a trace is per-op dispatch, and most meta kernels are Python (batch norm's
  is a decomposition); `_shape_only` remembers each answer per op and argument signature,
  so the next iteration, point or identical block costs a lookup. The training loss of the
  iterations after the first is replayed, not computed (`LossTape`, `StorageTracker.
  loss_tape`): same predictions, same batch, same answers.
"""

from __future__ import annotations

import contextlib
import copy
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map_only, tree_unflatten

from yolofit.estimator.allocator import CachingAllocatorModel

aten = torch.ops.aten

CATEGORIES: tuple[str, ...] = (
    "weights", "gradients", "optimizer_state", "ema", "activations", "loss", "validation",
    "temporaries",
)

# Phase -> category of what is allocated in it (unless relabelled by identity later).
PHASE_CATEGORY = {
    "setup": "weights", "step": "temporaries", "batch": "activations",
    "forward": "activations", "loss": "loss", "backward": "temporaries",
    "optimizer": "temporaries", "ema": "temporaries", "validation": "validation",
    "assign": "loss",
    "validation_loss": "validation", "validation_batch": "validation",
}

# compute="shape": in these phases every functional op (no output aliases an input) is
# answered by its meta kernel with uninitialised outputs of the same shape, strides and
# dtype; ops whose output shape depends on data raise on meta and run for real. The loss
# runs for real in every mode: its data-dependent sizes come from real (zeroed) predictions.
SHAPE_PHASES = frozenset({"forward", "backward", "validation"})
LOSS_PHASES = frozenset({"loss", "assign", "validation_loss"})


class HollowRead(RuntimeError):
    """A value that was never computed would have decided a size or a branch."""


class ReplayDiverged(HollowRead):
    """A replayed training loss did not do what the recorded one did."""


@dataclass
class Event:
    alloc: bool
    sid: int
    nbytes: int
    phase: str


class StorageTracker(TorchDispatchMode):
    """Records storage allocations/frees of every op run under it (see module doc)."""

    def __init__(self, compute: str = "exact") -> None:
        super().__init__()
        if compute not in COMPUTE_MODES:
            raise ValueError(f"compute must be one of {', '.join(COMPUTE_MODES)}, not "
                             f"{compute!r}")
        self.shape_only = compute in ("shape", "hollow")
        self.hollow_mode = compute == "hollow"
        self.hollow: set[int] = set()  # sids whose values mean nothing (pages never touched)
        self.hollow_reads: list[str] = []  # ops that read a hollow value (must stay empty)
        self._force_real = False
        self._all_hollow = False
        self._hollow_empty = False
        # The loss reads zeroed predictions in shape and hollow compute (their values were
        # never computed); an exact trace can be asked to do the same, to compare with them.
        self.zero_predictions = self.shape_only
        self._unread: set[int] = set()  # sids to zero on their first read (zero_on_read)
        self.tape: LossTape | None = None  # the training loss's answers (`loss_tape`)
        self._functional: dict[Any, bool] = {}
        self._fresh: dict[Any, bool] = {}
        self.events: list[Event] = []
        self.category: dict[int, str] = {}
        self.live: dict[int, int] = {}  # StorageImpl address -> sid
        self.size: dict[int, int] = {}  # sid -> nbytes
        self.phase = "setup"
        self.recording = True
        self._next_sid = 0

    # -- registration -------------------------------------------------------------------------
    def track(self, tensor: torch.Tensor, category: str | None = None) -> int | None:
        """Register a tensor's storage (no-op if known); returns its sid."""
        if tensor.is_meta or tensor.is_sparse:
            return None
        storage = tensor.untyped_storage()
        key = storage._cdata
        sid = self.live.get(key)
        nbytes = storage.nbytes()
        if sid is not None:
            if self.size[sid] != nbytes:  # resize_: a new block on the GPU
                self._emit(False, sid)
                self.size[sid] = nbytes
                self._emit(True, sid)
            if category is not None:
                self.category[sid] = category
            return sid
        if nbytes == 0:
            return None
        sid = self._next_sid
        self._next_sid += 1
        self.live[key] = sid
        self.size[sid] = nbytes
        self.category[sid] = category or PHASE_CATEGORY.get(self.phase, "temporaries")
        weakref.finalize(storage, self._on_free, key, sid)
        self._emit(True, sid)
        return sid

    def relabel(self, tensors: Iterator[torch.Tensor] | list[torch.Tensor], category: str) -> int:
        """Set the category of the storages behind `tensors`; returns their total bytes."""
        total = 0
        for t in tensors:
            sid = self.live.get(t.untyped_storage()._cdata)
            if sid is not None:
                self.category[sid] = category
                total += self.size[sid]
        return total

    def _emit(self, alloc: bool, sid: int) -> None:
        if self.recording:
            self.events.append(Event(alloc, sid, self.size[sid], self.phase))

    def _on_free(self, key: int, sid: int) -> None:
        if self.live.get(key) == sid:
            del self.live[key]
            self.hollow.discard(sid)
            self._unread.discard(sid)
            self._emit(False, sid)

    def mark_hollow(self, tensors: Any) -> None:
        """Declare the values of these (tracked) tensors meaningless: ops that read them
        are answered from shapes only (see `__torch_dispatch__`)."""
        for t in tree_flatten(tensors)[0]:
            if isinstance(t, torch.Tensor) and not t.is_meta:
                sid = self.live.get(t.untyped_storage()._cdata)
                if sid is not None:
                    self.hollow.add(sid)

    def _is_hollow(self, t: torch.Tensor) -> bool:
        if t.is_meta:
            return False
        sid = self.live.get(t.untyped_storage()._cdata)
        return sid is not None and sid in self.hollow

    def make_real(self, tensors: Any) -> None:
        """Zero these tensors for real (their values are read next) and drop them from the
        hollow set: `_zero_` before the loss and the optimizer."""
        previous, self._force_real = self._force_real, True
        try:
            _zero_(tensors)
        finally:
            self._force_real = previous
        for t in tree_flatten(tensors)[0]:
            if isinstance(t, torch.Tensor) and not t.is_meta:
                sid = self.live.get(t.untyped_storage()._cdata)
                self.hollow.discard(sid if sid is not None else -1)

    def zero_on_read(self, tensors: Any) -> None:
        """`make_real` deferred to the first op that reads the values (hollow compute; any
        other mode zeroes now): the loss reads some of the predictions (boxes, scores,
        mask coefficients) and only the shape of others (the feature maps the head returns,
        hundreds of MiB at 1280), whose pages then are never touched. Zeroing in place
        allocates nothing, so the events are the same either way."""
        if not self.hollow_mode:
            self.make_real(tensors)
            return
        for t in tree_flatten(tensors)[0]:
            if isinstance(t, torch.Tensor) and not t.is_meta:
                sid = self.live.get(t.untyped_storage()._cdata)
                if sid is not None:  # (a sid: a reference would keep the storage alive)
                    self._unread.add(sid)
                    self.hollow.add(sid)

    def _zero_read(self, func: Any, args: Any, kwargs: Any) -> None:
        """Zero, whole, each deferred storage this op reads for real (a view, a `new_*` or
        `*_like` reads none: in the loss it is computed for real from its own arguments;
        an op answered from shapes reads none either)."""
        if self.phase in SHAPE_PHASES or (self._is_view(func) and func not in _MAY_COPY):
            return
        for t in _tensors(_values_read(func, args, kwargs)):
            if not t.is_meta:
                sid = self.live.get(t.untyped_storage()._cdata)
                if sid is not None and sid in self._unread:
                    self._unread.discard(sid)
                    with torch.no_grad():  # inside dispatch: not traced, allocates nothing
                        torch.empty(0, dtype=torch.uint8).set_(t.untyped_storage()).zero_()
                    self.hollow.discard(sid)

    @contextlib.contextmanager
    def loss_tape(self, tape: LossTape | None) -> Iterator[None]:
        """Run the training loss with `tape` (hollow compute): the first iteration records
        each op's answer; later iterations, whose loss reads the same zeroed predictions
        and batch, leave the predictions hollow and take the data-dependent answers (the
        assigner's foreground counts, `.item()` values) from the tape. Every op and every
        output's shape, strides and dtype must match the recording, else ReplayDiverged
        (`build.trace_point` then traces the point with the loss computed every time)."""
        if tape is None or not self.hollow_mode:
            yield
            return
        tape.start()
        previous, self.tape = self.tape, tape
        try:
            yield
        except HollowRead:
            raise
        except Exception as e:  # e.g. a size read from a hollow value outside dispatch
            if tape.replaying:
                raise ReplayDiverged(f"the loss replay failed: {e}") from e
            raise
        finally:
            self.tape = previous
        tape.stop()

    @contextlib.contextmanager
    def hollow_empty(self) -> Iterator[None]:
        """In this block, what `torch.empty` makes is hollow (uninitialised in any mode):
        writes into it are then not run, and ops that read it are answered from shapes."""
        previous, self._hollow_empty = self._hollow_empty, self.hollow_mode
        try:
            yield
        finally:
            self._hollow_empty = previous

    @contextlib.contextmanager
    def all_hollow(self) -> Iterator[None]:
        """In hollow compute, every functional op in this block is answered from shapes."""
        previous, self._all_hollow = self._all_hollow, self.hollow_mode
        try:
            yield
        finally:
            self._all_hollow = previous

    @contextlib.contextmanager
    def in_phase(self, phase: str) -> Iterator[None]:
        previous, self.phase = self.phase, phase
        try:
            yield
        finally:
            self.phase = previous

    # -- dispatch -----------------------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        tape = self.tape
        if tape is not None and not self._force_real:
            entry = tape.next(func) if tape.replaying else None
            out = self._dispatch(func, args, kwargs, entry)
            if tape.replaying:
                tape.check(entry, out, args)
            else:
                tape.record(func, out, args)
            return out
        return self._dispatch(func, args, kwargs, None)

    def _dispatch(self, func: Any, args: Any, kwargs: Any, entry: TapeEntry | None) -> Any:
        if self._unread:
            self._zero_read(func, args, kwargs)
        out = _NOT_DONE
        read = _values_read(func, args, kwargs) if self.phase in LOSS_PHASES else (args, kwargs)
        hollow_in = self.hollow_mode and not self._force_real and self._reads_hollow(read)
        meta = False
        if (self.shape_only and not self._force_real
                and (hollow_in or self._all_hollow or self.phase in SHAPE_PHASES)
                and self._is_functional(func)):
            out = _shape_only(func, args, kwargs, self.hollow_mode)
            meta = out is not _NOT_DONE
        if out is _NOT_DONE and hollow_in:
            out = self._hollow_mutation(func, args, kwargs)
            if out is _NOT_DONE and entry is not None and entry.fresh:
                out, meta = entry.answer()  # what the same op answered last iteration
            elif out is _NOT_DONE:  # computed from meaningless values: so is its result
                meta = not self._is_view(func) or func in _MAY_COPY
                if func in _ALWAYS_REAL:  # a size or a branch taken from garbage: stop
                    self.hollow_reads.append(str(func))
                    raise HollowRead(f"{func} read a value hollow compute never made (phase "
                                     f"{self.phase})")
                if func in _MAY_COPY and self.shape_only:  # (validation's autocast casts of
                    # the hollow EMA weights, the image's .half()): a copy from shapes; an
                    # alias (the meta kernel's does not copy either) is run, it is free
                    out = _shape_only(func, args, kwargs, self.hollow_mode)
        if out is _NOT_DONE:
            out = func(*args, **kwargs)
        aliasing = not self._returns_new(func)
        for t in _tensors(out):
            if aliasing and t.untyped_storage()._cdata not in self.live and not (
                    func in _MAY_COPY and _fresh([t], args)):  # it copied
                continue  # a view or in-place result of a storage older than the trace
            sid = self.track(t)
            if ((meta and self.hollow_mode) or (self._hollow_empty and func in _EMPTY)) \
                    and sid is not None:  # never computed
                self.hollow.add(sid)
        return out

    def _reads_hollow(self, read: Any) -> bool:
        if not self.hollow:
            return False
        return any(self._is_hollow(t) for t in _tensors(read))

    def _hollow_mutation(self, func: Any, args: Any, kwargs: Any) -> Any:
        """An op that writes into its arguments and reads a hollow value is not run (it
        allocates no storage the trace could see; kernels' internal scratch is not traced in
        any mode): the written arguments become hollow and their aliases are returned. Views
        (no write) run as they are: they read metadata only."""
        schema = func._schema
        written = [a for a in schema.arguments if a.alias_info is not None
                   and a.alias_info.is_write]
        if not written or func in _ALWAYS_REAL:
            return _NOT_DONE
        bound = _bind(schema, args, kwargs)
        for a in written:
            if func not in _KEEPS_FLAGS or str(a.type).startswith("Tensor[]"):
                self.mark_hollow(bound.get(a.name))
        outs = []
        for r in schema.returns:
            match = [a for a in written if r.alias_info is not None
                     and a.alias_info.before_set == r.alias_info.before_set]
            if not match:
                return _NOT_DONE  # a fresh output too: not a pure mutation
            outs.append(bound.get(match[0].name))
        if not outs:
            return None
        return outs[0] if len(outs) == 1 else tuple(outs)

    def _is_view(self, func: Any) -> bool:
        """Returns aliases of its inputs and writes none: reads metadata, not values."""
        schema = func._schema
        return (bool(schema.returns) and all(r.alias_info is not None for r in schema.returns)
                and not any(a.alias_info is not None and a.alias_info.is_write
                            for a in schema.arguments))

    def _returns_new(self, func: Any) -> bool:
        new = self._fresh.get(func)
        if new is None:
            new = all(r.alias_info is None for r in func._schema.returns)
            self._fresh[func] = new
        return new

    def _is_functional(self, func: Any) -> bool:
        ok = self._functional.get(func)
        if ok is None:
            schema = func._schema
            # (hollow compute: also the _foreach_ ops, whose lists of results are fresh)
            lists = ("List[Tensor]",) if self.hollow_mode and schema.name.startswith(
                "aten::_foreach_") else ()
            ok = (all(r.alias_info is None for r in schema.returns)
                  and bool(schema.returns)
                  and all(str(r.type) in ("Tensor", "Tensor[]", *lists)
                          for r in schema.returns)
                  and func not in _ALWAYS_REAL)
            self._functional[func] = ok
        return ok


@dataclass
class TapeEntry:
    func: Any
    leaves: list[Any]  # _MetaTensor per tensor output, the value of any other
    spec: Any
    fresh: bool  # no output aliases an input (a view's answer is run, not replayed)
    values: list[torch.Tensor] | None = None  # the outputs themselves, when all are small

    def answer(self) -> tuple[Any, bool]:
        """The recorded outputs - copies of their values when they were small (counts and
        indices the loss reads on the host, e.g. `tolist()`, which no dispatch sees),
        else hollow tensors of their shapes - and whether they are hollow."""
        out = _make(self.leaves, self.spec)
        if self.values is None:
            return out, True
        for t, v in zip(_tensors(out), self.values, strict=True):
            t.copy_(v)
        return out, False


class LossTape:
    """The ops of one training loss and what they answered (see StorageTracker.loss_tape)."""

    def __init__(self) -> None:
        self.entries: list[TapeEntry] = []
        self.recorded = False
        self.replaying = False
        self._at = 0

    def start(self) -> None:
        self.replaying, self._at = self.recorded, 0

    def stop(self) -> None:
        if self.replaying and self._at != len(self.entries):
            raise ReplayDiverged(f"the loss replay ran {self._at} of {len(self.entries)} ops")
        self.recorded = True

    def record(self, func: Any, out: Any, args: Any) -> None:
        leaves, spec = tree_flatten(out)
        tensors = [t for t in leaves if isinstance(t, torch.Tensor)]
        fresh = _fresh(leaves, args)
        small = fresh and all(t.untyped_storage().nbytes() <= SMALL_ANSWER for t in tensors)
        values = [t.detach().clone() for t in tensors] if small else None
        self.entries.append(TapeEntry(func, _describe(leaves), spec, fresh, values))

    def next(self, func: Any) -> TapeEntry:
        entry = self.entries[self._at] if self._at < len(self.entries) else None
        if entry is None or entry.func != func:
            raise ReplayDiverged(f"the loss replay diverged at op {self._at}: {func}, "
                                 f"recorded {entry.func if entry else 'nothing'}")
        self._at += 1
        return entry

    @staticmethod
    def check(entry: TapeEntry | None, out: Any, args: Any) -> None:
        leaves, spec = tree_flatten(out)
        if entry is None or not entry.fresh or not _fresh(leaves, args):
            return
        got = [m if isinstance(m, _MetaTensor) else None for m in _describe(leaves)]
        if got != [m if isinstance(m, _MetaTensor) else None for m in entry.leaves]:
            raise ReplayDiverged(f"the loss replay's {entry.func} made other tensors than "
                             "recorded")


SMALL_ANSWER = 64 * 1024  # bytes: outputs up to this size are kept with their values


def _describe(leaves: list[Any]) -> list[Any]:
    return [_MetaTensor(t.size(), t.stride(), t.dtype) if isinstance(t, torch.Tensor) else t
            for t in leaves]


def _fresh(leaves: list[Any], args: Any) -> bool:
    """No tensor among `leaves` shares a storage with a tensor of `args`."""
    inputs = {t.untyped_storage()._cdata for t in _tensors(args)}
    return not any(isinstance(t, torch.Tensor) and t.untyped_storage()._cdata in inputs
                   for t in leaves)


_NOT_DONE = object()
_EMPTY = frozenset({aten.empty.memory_format, aten.empty_strided.default})
# Ops that read their tensor argument's dtype, device and shape only.
_READS_METADATA = frozenset({
    aten.new_empty.default, aten.new_empty_strided.default, aten.new_zeros.default,
    aten.new_ones.default, aten.new_full.default, aten.empty_like.default,
    aten.zeros_like.default, aten.ones_like.default, aten.full_like.default})
# Ops whose schema says they alias their input but which copy when they must (in inference
# mode they reach the dispatcher whole, and their copy is an allocation to record): they
# read values.
_MAY_COPY = frozenset({
    aten.contiguous.default, aten.reshape.default, aten.reshape_as.default,
    aten.flatten.using_ints, aten.to.dtype, aten.to.device, aten.to.dtype_layout,
    aten.to.other, aten.type_as.default})
# Ops that read the values of their first argument and the metadata of the others.
_READS_FIRST_ONLY = frozenset({aten.type_as.default})


def _tensors(tree: Any) -> list[torch.Tensor]:
    """The tensors in an op's arguments or results (tuples, lists, dicts of them): what
    `tree_flatten` finds, without its generality (it runs several times per op)."""
    if isinstance(tree, torch.Tensor):
        return [tree]
    found: list[torch.Tensor] = []
    stack = [tree]
    while stack:
        x = stack.pop()
        if isinstance(x, torch.Tensor):
            found.append(x)
        elif isinstance(x, (list, tuple)):
            if type(x) is list and x and type(x[0]) in _NUMBERS:  # an int[] or float[]
                continue  # argument (sizes, strides; an op's own arguments are a tuple)
            stack.extend(reversed(x))
        elif isinstance(x, dict):
            stack.extend(reversed(list(x.values())))
    return found


_NUMBERS = frozenset({int, float, bool})


def _values_read(func: Any, args: Any, kwargs: Any) -> Any:
    """The arguments whose values `func` reads (the loss phases: what it computes from
    for real, and which deferred predictions it zeroes)."""
    if func in _READS_METADATA:
        return ()
    if func in _READS_FIRST_ONLY:
        return args[:1]
    return (args, kwargs)
COMPUTE_MODES = ("exact", "shape", "hollow")
# Skipped with hollow gradients, these leave their flag argument as it was: the GradScaler's
# found_inf stays 0, which is what zero (finite) gradients give.
_KEEPS_FLAGS = frozenset({aten._amp_foreach_non_finite_check_and_unscale_.default})


def _bind(schema: Any, args: Any, kwargs: Any) -> dict[str, Any]:
    bound = dict(zip((a.name for a in schema.arguments), args, strict=False))
    bound.update(kwargs)
    return bound
# Ops whose result the host reads or whose meta kernel would not tell the truth.
_ALWAYS_REAL = frozenset({aten._local_scalar_dense.default, aten.nonzero.default,
                          aten.unique_consecutive.default, aten._unique2.default,
                          aten.masked_select.default})


def _shape_only(func: Any, args: Any, kwargs: Any, hollow: bool = False) -> Any:
    """Outputs from the meta kernel, materialised uninitialised: `empty` never touches the
    pages, so a GiB of activations costs neither memset time nor resident memory. The
    values that matter downstream are made deterministic by `_zero_` (predictions before
    the loss, gradients before the optimizer). `hollow`: an explicit `device=` (a copy
    to the CPU) is asked of the meta device too. The meta kernel's answer is remembered
    per (op, every argument's shape, strides, dtype and value: `_signature`): a meta kernel
    reads nothing else, and most of it is Python (batch norm's is a decomposition), so the
    same layer shapes in the next iteration, point or block cost a dictionary lookup."""
    key = (func, hollow, _signature(args), _signature(kwargs))
    answer = _META_ANSWERS.get(key)
    if answer is None:
        answer = _META_ANSWERS[key] = _meta_answer(func, args, kwargs, hollow)
        if len(_META_ANSWERS) > _META_ANSWERS_MAX:  # bounded in a long-lived process
            _META_ANSWERS.clear()
    if answer is _NOT_DONE:
        return _NOT_DONE
    return _make(*answer)


def _meta_answer(func: Any, args: Any, kwargs: Any, hollow: bool) -> Any:
    """(leaves, spec) of the meta kernel's output, each tensor as (size, stride, dtype=);
    _NOT_DONE where the op must be computed."""
    margs, mkwargs = tree_map_only(torch.Tensor, lambda t: t.to("meta"), (args, kwargs))
    if hollow and "device" in mkwargs:
        mkwargs["device"] = torch.device("meta")
    try:
        out = func(*margs, **mkwargs)
    except Exception:  # data-dependent output shape or no meta kernel: compute it
        return _NOT_DONE
    leaves, spec = tree_flatten(out)
    if hollow and not _fresh(leaves, (margs, mkwargs)):  # a view its schema does not
        return _NOT_DONE  # declare (_unsafe_view): run it, it is free
    return _describe(leaves), spec


def _make(leaves: list[Any], spec: Any) -> Any:
    """Outputs from `_describe`d leaves: uninitialised tensors of the recorded shapes."""
    return tree_unflatten([m.make() if isinstance(m, _MetaTensor) else m for m in leaves],
                          spec)


class _MetaTensor(tuple):  # type: ignore[type-arg]
    """(size, stride, dtype): the arguments `torch.empty_strided` makes the output from."""

    def __new__(cls, size: Any, stride: Any, dtype: torch.dtype) -> _MetaTensor:
        return super().__new__(cls, (tuple(size), tuple(stride), dtype))

    def make(self) -> torch.Tensor:
        return torch.empty_strided(self[0], self[1], dtype=self[2])


def _signature(x: Any) -> Any:
    """What a meta kernel can read of an argument: a tensor's shape, strides, storage
    offset and dtype; a scalar's type and value (1 and 1.0 promote differently); lists and
    dicts element by element."""
    if isinstance(x, torch.Tensor):
        return (_TENSOR, tuple(x.shape), x.stride(), x.storage_offset(), x.dtype, x.is_meta)
    if isinstance(x, (list, tuple)):
        return (type(x), *(_signature(v) for v in x))
    if isinstance(x, dict):
        return tuple((k, _signature(v)) for k, v in sorted(x.items()))
    return (type(x), x)


_TENSOR = object()
_META_ANSWERS: dict[Any, Any] = {}
_META_ANSWERS_MAX = 200_000


# --- replay through the allocator model ---------------------------------------------------------

@dataclass
class Replay:
    """What the allocator model says about a recorded event stream."""

    peak_allocated: int
    peak_reserved: int
    peak_requested: int  # raw bytes, no rounding: what a byte counter on CPU sees
    breakdown: dict[str, int]  # allocated (block) bytes per category at the allocated peak
    phase_peaks: dict[str, int]  # highest allocated while in each phase
    peak_phase: str


def replay(tracker: StorageTracker, expandable_segments: bool = True) -> Replay:
    model = CachingAllocatorModel(expandable_segments)
    handles: dict[int, int] = {}
    per_cat = dict.fromkeys(CATEGORIES, 0)
    blocks: dict[int, int] = {}
    best = dict(per_cat)
    phase_peaks: dict[str, int] = {}
    peak, peak_phase = -1, ""
    cat = tracker.category
    for ev in tracker.events:
        c = cat.get(ev.sid, "temporaries")
        if ev.alloc:
            h = model.malloc(ev.nbytes)
            handles[ev.sid] = h
            blocks[ev.sid] = model.block_size(h)
            per_cat[c] += blocks[ev.sid]
            if model.allocated > peak:
                peak, peak_phase, best = model.allocated, ev.phase, dict(per_cat)
            if model.allocated > phase_peaks.get(ev.phase, -1):
                phase_peaks[ev.phase] = model.allocated
        else:
            h = handles.pop(ev.sid, 0)
            if h:
                per_cat[c] -= blocks.pop(ev.sid)
                model.free(h)
    return Replay(model.peak_allocated, model.peak_reserved, model.peak_requested, best,
                  phase_peaks, peak_phase)


def raw_peak(tracker: StorageTracker) -> int:
    """Running maximum of raw live bytes (no allocator rounding)."""
    live = peak = 0
    for ev in tracker.events:
        live += ev.nbytes if ev.alloc else -ev.nbytes
        peak = max(peak, live)
    return peak


# --- the Ultralytics training step -----------------------------------------------------------

@dataclass(frozen=True)
class StepConfig:
    batch: int
    imgsz: int
    objects: int = 8  # labels per training sample (after mosaic)
    densest: int | None = None  # labels of the first sample, if not `objects` (the densest)
    amp: str = "fp16"  # off | fp16 | bf16
    optimizer: str = "AdamW"  # SGD | AdamW | MuSGD
    checkpointing: bool = False
    # Iterations traced: the first steps the optimizer (its state appears), the middle ones
    # only accumulate gradients (Ultralytics steps every `accumulate` = round(nbs / batch)
    # iterations, so gradients stay alive through the next forward and backward), the last
    # steps again. The peak of an accumulating iteration is the conservative one.
    iterations: int = 3
    validate: bool = True
    compute: str = "hollow"  # hollow | shape | exact (see the module doc)
    replay_loss: bool = True  # hollow: iterations after the first replay the loss's answers
    seed: int = 0


@dataclass
class TraceResult:
    config: StepConfig
    params: int
    trainable_params: int
    tracker: StorageTracker
    seconds: float
    analytic: dict[str, int] = field(default_factory=dict)  # bytes by identity, end of step

    def replay(self, expandable_segments: bool = True) -> Replay:
        return replay(self.tracker, expandable_segments)


def default_train_args() -> SimpleNamespace:
    """Ultralytics' default train cfg (the loss reads box/cls/dfl gains from it)."""
    from ultralytics.cfg import get_cfg

    return get_cfg()  # type: ignore[no-any-return]


def head_nc(model: Any) -> int:
    """Classes of the model's head (what the loss and the synthetic labels use)."""
    head = model.model[-1] if hasattr(model, "model") else None
    nc: Any = getattr(head, "nc", None) or getattr(model, "nc", None)
    if nc is None and head is not None and hasattr(head, "linear"):  # Classify
        nc = head.linear.out_features
    return int(nc or 80)


def model_task(model: Any) -> str:
    """detect | segment | pose | obb | classify, by the Ultralytics model class."""
    import ultralytics.nn.tasks as tasks

    for cls, task in ((tasks.SegmentationModel, "segment"), (tasks.PoseModel, "pose"),
                      (tasks.OBBModel, "obb"), (tasks.ClassificationModel, "classify")):
        if isinstance(model, cls):
            return task
    return "detect"


def prepare_model(model: Any, nc: int) -> Any:
    """What the trainer does before training: args, nc, names, freeze the DFL conv."""
    model.args = default_train_args()
    model.nc = nc
    model.names = {i: str(i) for i in range(nc)}
    for name, p in model.named_parameters():
        if ".dfl" in name:  # BaseTrainer always freezes '.dfl'
            p.requires_grad = False
        elif p.dtype.is_floating_point:
            p.requires_grad = True
    model.train()
    return model


def build_optimizer(model: torch.nn.Module, name: str, iterations: int = 1000
                    ) -> torch.optim.Optimizer:
    """Ultralytics' own `BaseTrainer.build_optimizer`, then CUDA's flavour of the step:
    fused AdamW/Adam (what Ultralytics asks for on CUDA) and foreach SGD (PyTorch's CUDA
    default; on CPU it would pick the for-loop implementation with other temporaries)."""
    from ultralytics.engine.trainer import BaseTrainer

    fake = SimpleNamespace(args=SimpleNamespace(lr0=0.01, warmup_bias_lr=0.1, optimizer=name),
                           data={"nc": head_nc(model)})
    from ultralytics.utils import LOGGER

    build = BaseTrainer.build_optimizer  # called unbound: it reads only .args and .data
    level = LOGGER.level
    LOGGER.setLevel("WARNING")  # its one-line summary is not for our users
    try:
        opt = build(fake, model, name=name, lr=0.002,  # type: ignore[arg-type]
                    momentum=0.9, decay=5e-4, iterations=iterations)
    finally:
        LOGGER.setLevel(level)
    if isinstance(opt, torch.optim.Adam | torch.optim.AdamW):
        groups = [{**g, "fused": True, "foreach": None} for g in opt.param_groups]
        opt = type(opt)(groups, fused=True)
    elif type(opt) is torch.optim.SGD:
        for g in opt.param_groups:
            g["foreach"] = True
    return opt


@dataclass(frozen=True)
class TaskShape:
    """What a task's batch holds besides boxes: the segment mask ratio and overlap setting
    (Ultralytics' default cfg: mask_ratio 4, overlap_mask True), the pose keypoint shape,
    and whether a YOLO26 segment head also wants semantic masks."""

    task: str = "detect"
    mask_ratio: int = 4
    overlap_mask: bool = True
    kpt_shape: tuple[int, int] = (17, 3)
    semantic: bool = False


def task_shape(model: Any) -> TaskShape:
    task = model_task(model)
    head = model.model[-1]
    kpt = tuple(getattr(head, "kpt_shape", (17, 3)))
    args = default_train_args()
    # YOLO26's Proto26 adds semantic logits in training (its `semseg` branch), and its loss
    # then reads batch["sem_masks"].
    semantic = task == "segment" and getattr(getattr(head, "proto", None), "semseg",
                                             None) is not None
    return TaskShape(task, int(args.mask_ratio), bool(args.overlap_mask),
                     (int(kpt[0]), int(kpt[1])), semantic)


def synthetic_batch(batch: int, imgsz: int, objects: int, seed: int = 0, nc: int = 2,
                    shape: TaskShape | None = None, densest: int | None = None,
                    hollow_image: bool = False) -> dict[str, torch.Tensor]:
    """A collated Ultralytics batch of the task's shape with exactly `objects` labels per
    image (host side) - or, with `densest`, `densest` labels in the first image and `objects`
    in the others (a batch whose densest sample pads the assigner's targets while the rest
    are typical) - as the task's dataset and `collate_fn` make it:
    detect: img uint8, batch_idx, cls, bboxes (xywh, normalised);
    segment: + masks, (b, h/r, w/r) uint8 object indices when overlap_mask (int32 above 255
    objects), else (n, h/r, w/r) uint8 per object; YOLO26 seg also sem_masks (b, h/r, w/r);
    pose: + keypoints (n, k, d) normalised; obb: bboxes (n, 5) xywhr;
    classify: img float32 (normalised by the transforms on the host), cls (b,) int64.
    The image is drawn after the labels; `hollow_image`: not drawn (uninitialised, pages
    never touched: hollow compute reads only its shape)."""
    shape = shape or TaskShape()
    g = torch.Generator().manual_seed(seed)
    size = (batch, 3, imgsz, imgsz)
    if shape.task == "classify":
        cls = torch.randint(0, nc, (batch,), generator=g)
        img = torch.empty(size) if hollow_image else torch.randn(size, generator=g)
        return {"img": img, "cls": cls}
    counts = [objects] * batch
    if densest is not None and batch:
        counts[0] = densest
    n = sum(counts)
    wh = 0.05 + 0.25 * torch.rand(n, 2, generator=g)
    xy = wh / 2 + (1 - wh) * torch.rand(n, 2, generator=g)
    out = {
        "img": torch.empty(0, dtype=torch.uint8),  # drawn last (collated order: first)
        "batch_idx": torch.arange(batch).repeat_interleave(torch.tensor(counts)).float(),
        "cls": torch.randint(0, nc, (n, 1), generator=g).float(),
        "bboxes": torch.cat([xy, wh], 1),
    }
    if shape.task == "obb":
        angle = (torch.rand(n, 1, generator=g) - 0.5) * torch.pi / 2
        out["bboxes"] = torch.cat([xy, wh, angle], 1)
    elif shape.task == "pose":
        k, d = shape.kpt_shape
        kpts = xy[:, None, :] + (torch.rand(n, k, 2, generator=g) - 0.5) * wh[:, None, :]
        if d == 3:
            kpts = torch.cat([kpts, torch.ones(n, k, 1)], 2)
        out["keypoints"] = kpts
    elif shape.task == "segment":
        h = w = imgsz // shape.mask_ratio
        masks = _box_masks(xy, wh, counts, h, w, shape.overlap_mask)
        out["masks"] = masks
        if shape.semantic:
            out["sem_masks"] = torch.zeros(batch, h, w)
    out["img"] = (torch.empty(size, dtype=torch.uint8) if hollow_image else
                  torch.randint(0, 255, size, dtype=torch.uint8, generator=g))
    return out


def _box_masks(xy: torch.Tensor, wh: torch.Tensor, counts: list[int], h: int, w: int,
               overlap: bool) -> torch.Tensor:
    """Masks that fill each label's box: overlap_mask puts object i+1's index into one
    (h, w) map per image (uint8, int32 above 255 objects in an image, as
    polygons2masks_overlap); else one (h, w) uint8 map per object."""
    ys = (torch.arange(h).float() + 0.5) / h
    xs = (torch.arange(w).float() + 0.5) / w
    x1, y1 = (xy - wh / 2).unbind(1)
    x2, y2 = (xy + wh / 2).unbind(1)
    inside = ((ys[None, :, None] >= y1[:, None, None]) & (ys[None, :, None] < y2[:, None, None])
              & (xs[None, None, :] >= x1[:, None, None]) & (xs[None, None, :] < x2[:, None, None]))
    if not overlap:
        return inside.to(torch.uint8)
    dtype = torch.int32 if max(counts, default=0) > 255 else torch.uint8
    out = torch.zeros(len(counts), h, w, dtype=dtype)
    i = 0
    for image, count in enumerate(counts):  # later objects paint over earlier ones
        for j in range(count):
            out[image][inside[i]] = j + 1
            i += 1
    return out


def _to_device(host: dict[str, torch.Tensor], half: bool,
               tracker: StorageTracker | None = None) -> dict[str, torch.Tensor]:
    """`preprocess_batch`: H2D copies (new device storages), then img.float()/255 (classify:
    the host image is already a normalised float tensor, only copied). In hollow compute
    the image's copies are made from shapes only: only the forward reads them."""
    hollow = tracker.all_hollow if tracker is not None else contextlib.nullcontext
    batch = {}
    for k, v in host.items():  # the device copies, in the collated order
        with hollow() if k == "img" else contextlib.nullcontext():
            batch[k] = v.clone()
    img = batch["img"]
    with hollow():
        if img.dtype == torch.uint8:
            batch["img"] = (img.half() if half else img.float()) / 255
        elif half:
            batch["img"] = img.half()
    return batch


def _autocast(amp: str) -> contextlib.AbstractContextManager[Any]:
    if amp == "off":
        return contextlib.nullcontext()
    dtype = torch.float16 if amp == "fp16" else torch.bfloat16
    return torch.autocast("cpu", dtype=dtype)


@dataclass
class TrainState:
    """Everything the trainer holds before its first iteration (built outside the trace)."""

    model: Any
    ema: Any
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    host: dict[str, torch.Tensor]
    val_host: dict[str, torch.Tensor]
    cfg: StepConfig


def prepare_training(model: torch.nn.Module, cfg: StepConfig) -> TrainState:
    """Prepare `model` like `BaseTrainer._setup_train`: args and freeze, optional activation
    checkpointing, the EMA copy, the optimizer and the GradScaler (fp16 only)."""
    from ultralytics.utils.torch_utils import ModelEMA

    torch.manual_seed(cfg.seed)
    nc = head_nc(model)
    prepare_model(model, nc)
    if cfg.checkpointing:
        from yolofit.estimator.checkpointing import apply_checkpointing

        apply_checkpointing(model)
    if cfg.compute == "hollow":  # the EMA's values are never read: no copy of the weights
        ema = ModelEMA(torch.nn.Module())
        ema.ema = hollow_copy(model).eval()
        for p in ema.ema.parameters():
            p.requires_grad_(False)
    else:
        ema = ModelEMA(model)
    optimizer = build_optimizer(model, cfg.optimizer)
    # The scale's value does not change memory; 1.0 keeps fp16 grads finite so every
    # optimizer (also non-fused SGD, which GradScaler skips on inf) builds its state.
    scaler = torch.amp.GradScaler("cpu", enabled=cfg.amp == "fp16", init_scale=1.0)
    shape = task_shape(model)
    hollow = cfg.compute == "hollow"  # the image's values are never read (`_to_device`)
    return TrainState(model, ema, optimizer, scaler,
                      synthetic_batch(cfg.batch, cfg.imgsz, cfg.objects, cfg.seed, min(nc, 2),
                                      shape, cfg.densest, hollow),
                      synthetic_batch(2 * cfg.batch, cfg.imgsz, cfg.objects, cfg.seed + 1,
                                      min(nc, 2), shape, cfg.densest, hollow),
                      cfg)


@contextlib.contextmanager
def _assigner_phase(tracker: StorageTracker) -> Iterator[None]:
    """While a training loss runs its TaskAlignedAssigner (any task's subclass), the tracker
    is in phase "assign": the phase's peak is the assigner's own, whose tensors are padded
    to the batch's densest sample (b x max labels x anchors); build.py fits per_object on
    it. Restored on exit."""
    from ultralytics.utils.tal import TaskAlignedAssigner

    call = TaskAlignedAssigner.__call__

    def traced_call(module: Any, *args: Any, **kwargs: Any) -> Any:
        if tracker.phase != "loss":
            return call(module, *args, **kwargs)
        with tracker.in_phase("assign"):
            return call(module, *args, **kwargs)

    TaskAlignedAssigner.__call__ = traced_call  # type: ignore[method-assign]
    try:
        yield
    finally:
        TaskAlignedAssigner.__call__ = call  # type: ignore[method-assign]


def run_traced(state: TrainState, tracker: StorageTracker,
               progress: Callable[[str], None] | None = None) -> dict[str, int]:
    """Register what exists, then run the iterations and validation under `tracker`."""
    cfg = state.cfg
    for t in list(state.model.parameters()) + list(state.model.buffers()):
        tracker.track(t, "weights")
    for t in list(state.ema.ema.parameters()) + list(state.ema.ema.buffers()):
        tracker.track(t, "ema")
    if tracker.hollow_mode:  # their values feed only ops answered from shapes (module doc)
        tracker.mark_hollow(list(state.model.parameters()) + list(state.model.buffers())
                            + list(state.ema.ema.parameters()) + list(state.ema.ema.buffers()))
    tracker.phase = "step"
    analytic: dict[str, int] = {}
    tape = LossTape() if cfg.replay_loss else None  # the same loss: recorded, then replayed
    with tracker, _assigner_phase(tracker):
        for i in range(cfg.iterations):
            if progress:
                progress(f"iteration {i + 1}/{cfg.iterations}")
            step = i == 0 or i == cfg.iterations - 1
            found = _train_iteration(state.model, state.ema, state.optimizer, state.scaler,
                                     state.host, cfg, tracker, step, tape)
            analytic.update(found)
        if cfg.validate:
            if progress:
                progress("validation")
            _validation_batch(state.ema, state.val_host, cfg, tracker)
    tracker.recording = False
    return analytic


def trace_training_step(model: torch.nn.Module, cfg: StepConfig,
                        progress: Callable[[str], None] | None = None) -> TraceResult:
    """Trace `cfg.iterations` Ultralytics training iterations (+ validation) on CPU.

    `model` is a fresh DetectionModel; it is prepared (args, freeze), wrapped for
    activation checkpointing if asked, given an EMA copy and an optimizer, then traced.
    """
    state = prepare_training(model, cfg)
    tracker = StorageTracker(cfg.compute)
    params, trainable = count_params(model)
    t0 = time.perf_counter()
    analytic = run_traced(state, tracker, progress)
    return TraceResult(cfg, params, trainable, tracker, time.perf_counter() - t0, analytic)


def _train_iteration(model: Any, ema: Any, optimizer: torch.optim.Optimizer,
                     scaler: torch.amp.GradScaler, host: dict[str, torch.Tensor],
                     cfg: StepConfig, tracker: StorageTracker, step: bool = True,
                     tape: LossTape | None = None) -> dict[str, int]:
    with _autocast(cfg.amp):
        with tracker.in_phase("batch"):
            batch = _to_device(host, half=False, tracker=tracker)
        with tracker.in_phase("forward"):
            preds = model(batch["img"])
        with tracker.in_phase("loss"):
            if getattr(model, "criterion", None) is None:  # as model.loss does, first call
                model.criterion = model.init_criterion()
            with tracker.loss_tape(tape):
                if tracker.zero_predictions and not (tape and tape.recorded):  # replayed: hollow
                    tracker.zero_on_read(preds)
                loss, items = model.loss(batch, preds)
                del preds
                total = loss.sum()
    with tracker.in_phase("backward"):
        scaler.scale(total).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    analytic = {"gradients": tracker.relabel(grads, "gradients")}
    del grads
    if not step:  # accumulate: no unscale/clip/step/zero_grad/EMA this iteration
        del batch, loss, items, total
        return analytic
    with tracker.in_phase("optimizer"):
        if tracker.shape_only and not tracker.hollow_mode:  # hollow: the step is not run
            _zero_([p.grad for p in model.parameters() if p.grad is not None])
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=10.0)
        scaler.step(optimizer)
        scaler.update()
        state = [v for s in optimizer.state.values() for v in s.values()
                 if isinstance(v, torch.Tensor)]
        analytic["optimizer_state"] = tracker.relabel(state, "optimizer_state")
        del state
        optimizer.zero_grad()
    with tracker.in_phase("ema"):
        ema.update(model)
    del batch, loss, items, total  # the next iteration's batch replaces them
    return analytic


def _validation_batch(ema: Any, host: dict[str, torch.Tensor], cfg: StepConfig,
                      tracker: StorageTracker) -> None:
    model = ema.ema
    model.args = default_train_args()
    half = cfg.amp != "off"
    with tracker.in_phase("validation"), torch.inference_mode():
        with tracker.in_phase("validation_batch"):
            batch = _to_device(host, half=half, tracker=tracker)
        with _autocast("fp16" if half else "off"):
            preds = model(batch["img"])
            with tracker.in_phase("validation_loss"):
                if tracker.zero_predictions:
                    tracker.zero_on_read(preds)
                model.loss(batch, preds)
        del preds, batch


def _zero_(tree: Any) -> None:
    """Zero uninitialised values in place (no allocation) where the step reads them."""
    with torch.no_grad():
        for t in tree_flatten(tree)[0]:
            if isinstance(t, torch.Tensor) and t.dtype.is_floating_point:
                t.data.zero_()  # .data: no version bump for autograd


def build_hollow(ref: Any, nc: int = 80) -> Any:
    """`models.build_model` with hollow parameters and buffers (see `hollow_copy`): their
    initialisation, and the shape-finding forward the model runs in its constructor, are
    not computed (seconds and hundreds of MiB for an x model); the strides, and every
    value the constructor decides with, are computed as before."""
    from yolofit.estimator.models import build_model

    tracker = StorageTracker("hollow")
    tracker.recording = False
    with tracker, tracker.hollow_empty():  # raises HollowRead (e.g. yolo12's trunc_normal_
        model = build_model(ref, nc=nc)   # init redraws until a drawn value is in range)
    return model


def hollow_copy(model: torch.nn.Module) -> Any:
    """`copy.deepcopy(model)` whose parameters and buffers are uninitialised tensors of the
    same shapes, strides and storage sizes: the pages are never written, so a copy of a
    large model costs no resident memory (hollow compute reads only their shapes)."""
    memo: dict[int, Any] = {}
    for t in list(model.parameters()) + list(model.buffers()):
        storage = t.untyped_storage()
        empty = torch.empty(0, dtype=t.dtype).set_(
            torch.UntypedStorage(storage.nbytes()), t.storage_offset(), t.size(), t.stride())
        if isinstance(t, torch.nn.Parameter):
            empty = torch.nn.Parameter(empty, requires_grad=t.requires_grad)
        memo[id(t)] = empty
    return copy.deepcopy(model, memo)


def count_params(model: torch.nn.Module) -> tuple[int, int]:
    return (sum(p.numel() for p in model.parameters()),
            sum(p.numel() for p in model.parameters() if p.requires_grad))


__all__ = [
    "CATEGORIES", "Event", "Replay", "StepConfig", "StorageTracker", "TraceResult",
    "build_optimizer", "default_train_args", "prepare_model", "raw_peak", "replay",
    "synthetic_batch", "trace_training_step", "prepare_training", "run_traced", "TrainState",
]

