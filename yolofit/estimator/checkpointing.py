"""Activation checkpointing for Ultralytics YOLO models (Ultralytics has none).

`apply_checkpointing(model)` makes the forward of the model's layers run under
`torch.utils.checkpoint.checkpoint(use_reentrant=False)`: a wrapped layer keeps only its
inputs for backward and recomputes its internals during backward (about one extra forward
of the wrapped layers in compute, most of the saved activations in memory).

What is wrapped: every layer of `model.model` that has parameters, except the last (the
Detect/v10Detect/YOLO26 head, whose outputs feed the loss). That covers the heavy blocks
(C2f, C3k2, C3, C3k, A2C2f, C2PSA, C2fCIB, SPPF, RepNCSPELAN4, ...) and the stride-2 Conv
layers between them; parameter-free layers (Concat, Upsample) save nothing worth it.

How: the layer object keeps its class, attributes (`.f`, `.i`, `.type`, `.np`) and
parameters; only an instance attribute `forward` is added (a `functools.partial` of a
module-level function, so `deepcopy` for the EMA and pickling for checkpoints work). The
`state_dict` keys are untouched, so weights, EMA and saved checkpoints are unchanged.

BatchNorm: recomputation would update running statistics a second time; the recompute
context sets momentum to 0 and restores `num_batches_tracked`, so buffers after a step are
exactly those of the unwrapped model.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

_MARK = "_yolofit_checkpointed"


@contextlib.contextmanager
def _frozen_bn_stats(module: nn.Module) -> Iterator[None]:
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, None if m.num_batches_tracked is None
              else m.num_batches_tracked.clone()) for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(bns, saved, strict=True):
            m.momentum = momentum
            if tracked is not None and m.num_batches_tracked is not None:
                m.num_batches_tracked.copy_(tracked)


def _checkpointed_forward(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
    forward = type(module).forward
    if not (module.training and torch.is_grad_enabled()):
        return forward(module, *args, **kwargs)

    def contexts() -> tuple[contextlib.AbstractContextManager[None],
                            contextlib.AbstractContextManager[None]]:
        return contextlib.nullcontext(), _frozen_bn_stats(module)

    return checkpoint(functools.partial(forward, module), *args, use_reentrant=False,
                      context_fn=contexts, **kwargs)


def checkpointable_layers(model: nn.Module) -> list[nn.Module]:
    """The layers `apply_checkpointing` wraps (see the module docstring)."""
    layers = list(getattr(model, "model", []))
    return [m for m in layers[:-1] if any(True for _ in m.parameters())]


def apply_checkpointing(model: nn.Module) -> int:
    """Wrap the model's layers for activation checkpointing; returns how many were wrapped.
    Idempotent: an already wrapped layer is not wrapped twice (and not counted)."""
    count = 0
    for layer in checkpointable_layers(model):
        if getattr(layer, _MARK, False):
            continue
        layer.forward = functools.partial(_checkpointed_forward, layer)
        setattr(layer, _MARK, True)
        count += 1
    return count


def remove_checkpointing(model: nn.Module) -> int:
    """Undo `apply_checkpointing`; returns how many layers were unwrapped."""
    count = 0
    for layer in getattr(model, "model", []):
        if getattr(layer, _MARK, False):
            del layer.forward
            delattr(layer, _MARK)
            count += 1
    return count
