"""Half precision: the overflow-prone steps of a block run in float32 (tests/test_half.py shows which need it).

fp16 tops out at 65504: a squared deviation of 256, or a query-key product of 16 channels of 64, already
overflows it. A block wraps such a step in ``full_precision(x)`` and feeds it ``fp32(t)``; the rest of the
block (its convolutions, the gating multiply) stays in the input's dtype. For float32 and float64 inputs
all three are no-ops: nothing is cast and no autocast state changes, so the fp32 graph is the plain one.
"""

from __future__ import annotations

import contextlib

import torch


def fp32(t: torch.Tensor) -> torch.Tensor:
    """t as float32 if it is fp16/bf16; otherwise t itself (a Python-level check: no Cast node when tracing)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def to_dtype(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """t cast to dtype (a float32 result returning to an fp16 block); t itself when it already is."""
    return t if t.dtype == dtype else t.to(dtype)


def full_precision(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """Autocast off for x's device while it is on (it would send matmuls back to fp16); else a no-op context."""
    device = x.device.type
    if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):  # 'meta' has no autocast
        return torch.autocast(device, enabled=False)
    return contextlib.nullcontext()
