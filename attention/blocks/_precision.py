"""Half precision: the few overflow-prone steps of a block (sums of squares, q.k products, softmax) run in float32.

fp16 tops out at 65504: a squared deviation of 256, or a query-key product of 16 channels of 64, already
overflows it. A block wraps such a step in ``full_precision(x)`` and feeds it ``fp32(t)``; the rest of the
block (its convolutions, the gating multiply) stays in the input's dtype. For float32 and float64 inputs
both are no-ops: nothing is cast and no autocast state changes, so the fp32 path and its graph are unchanged.
"""

from __future__ import annotations

import contextlib

import torch

LOW_PRECISION = (torch.float16, torch.bfloat16)


def fp32(t: torch.Tensor) -> torch.Tensor:
    """t as float32 if it is fp16/bf16; otherwise t itself (a Python-level check: no Cast node when tracing)."""
    return t.float() if t.dtype in LOW_PRECISION else t


def sum32(x: torch.Tensor) -> torch.Tensor:
    """Sum over H, W: accumulated and returned in float32 for fp16/bf16 maps (whose sum can pass 65504)."""
    return x.sum(dim=(2, 3), dtype=torch.float32) if x.dtype in LOW_PRECISION else x.sum(dim=(2, 3))


def to_dtype(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """t cast back to dtype (a float32 result returning to an fp16 block); t itself when it already is."""
    return t if t.dtype == dtype else t.to(dtype)


def full_precision(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """Autocast off for x's device while it is on (it would send matmuls back to fp16); else a no-op context."""
    device = x.device.type
    if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):  # 'meta' has no autocast
        return torch.autocast(device, enabled=False)
    return contextlib.nullcontext()
