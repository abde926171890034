"""Count a module's forward FLOPs, elementwise work included.

``torch.utils.flop_counter`` counts matrix products and convolutions only, which for an attention
block is a small part of the work. Here every other non-view op adds one FLOP per element of its
largest tensor (input or output): a multiply adds numel(out), a reduction numel(in).
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

_FREE = {"detach", "alias", "lift_fresh", "empty", "empty_like", "zeros", "ones", "full", "new_empty",
         "_to_copy", "copy_", "clone", "contiguous", "t", "expand", "view", "_unsafe_view", "cat", "split",
         "split_with_sizes", "slice", "select", "unsqueeze", "squeeze", "permute", "transpose", "as_strided",
         "sym_size", "sym_stride", "sym_numel", "sym_storage_offset", "is_same_size", "resize_"}


class _Elementwise(TorchDispatchMode):
    def __init__(self, matmul_ops: set) -> None:
        super().__init__()
        self.matmul_ops = matmul_ops
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if func.overloadpacket not in self.matmul_ops and not func.is_view and name not in _FREE:
            tensors = [t for t in tree_flatten((args, kwargs, out))[0] if isinstance(t, torch.Tensor)]
            self.flops += max((t.numel() for t in tensors), default=0)
        return out


def count_flops(module: torch.nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """(matmul/conv FLOPs, elementwise FLOPs) of one forward on x."""
    counter = FlopCounterMode(display=False)
    matmul_ops = set(counter.flop_registry)
    with torch.no_grad(), counter:
        module(x)
    with torch.no_grad(), _Elementwise(matmul_ops) as ew:
        module(x)
    return counter.get_total_flops(), ew.flops
