"""Efficient Channel Attention (Wang et al., CVPR 2020)."""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn

from attention import fused
from attention.blocks._precision import fp32, full_precision, sum32, to_dtype
from attention.blocks._checks import check_int
from attention.blocks.registry import AttentionConfigError, register


def eca_kernel_size(channels: int, b: float = 1, gamma: float = 2) -> int:
    """The paper's adaptive kernel: int(|(log2(C) + b) / gamma|), bumped to the next odd number."""
    k = int(abs((math.log2(channels) + b) / gamma))
    return k if k % 2 else k + 1  # odd, so zero padding (k-1)//2 keeps the length C


def _check_real(arg: str, value: object, positive: bool) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (positive and value <= 0):
        kind = "a positive number" if positive else "a finite number"
        raise AttentionConfigError(f"ECA: {arg} must be {kind}, got {value!r}")
    return value


@register
class ECA(nn.Module):
    """out = x * sigmoid(conv1d_k(GAP(x) as a length-C sequence)), k chosen from C; no bias."""

    def __init__(self, c1: int, b: float = 1, gamma: float = 2) -> None:
        super().__init__()
        c1 = check_int("ECA", "c1 (input channels)", c1)
        b = _check_real("b", b, positive=False)
        gamma = _check_real("gamma", gamma, positive=True)
        self.kernel_size = eca_kernel_size(c1, b, gamma)
        # One 1-D conv shared by all channels: local cross-channel interaction, k weights in total.
        self.conv = nn.Conv1d(1, 1, self.kernel_size, padding=(self.kernel_size - 1) // 2, bias=False)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Sum, not mean: the convolution is linear, so the division by H*W follows it on the
        # C-vector (cheaper than the mean's). Functional: no module-call overhead.
        lib = fused.usable(x)
        if lib is not None and fused.weights_ok(self.conv.weight) and fused.plain_passes_ok(x):
            return fused.eca(lib, x, self.conv.weight)  # inference on a CPU: one C call
        n, c, h, w = x.shape
        with full_precision(x):  # fp16: a map-wide sum overflows, so the (N, C) work is float32
            s = F.conv1d(sum32(x).view(n, 1, c), fp32(self.conv.weight), padding=self.conv.padding)  # (N, 1, C)
        return x * to_dtype(s.mul_(1.0 / (h * w)).sigmoid_(), x.dtype).view(n, c, 1, 1)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}"
