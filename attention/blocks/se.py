"""Squeeze-and-Excitation (Hu et al., 2017)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attention import fused
from attention.blocks._precision import fp32, full_precision, sum32, to_dtype
from attention.blocks._checks import check_hidden, check_int
from attention.blocks.registry import register


@register
class SE(nn.Module):
    """out = x * sigmoid(fc2(relu(fc1(GAP(x))))), fc1: C -> C//ratio, fc2: C//ratio -> C, no bias."""

    def __init__(self, c1: int, ratio: int = 16) -> None:
        super().__init__()
        c1 = check_int("SE", "c1 (input channels)", c1)
        ratio = check_int("SE", "ratio", ratio)
        hidden = check_hidden("SE", c1, ratio)
        # The paper's excitation is two bias-free linear maps around a ReLU.
        self.fc1 = nn.Linear(c1, hidden, bias=False)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, c1, bias=False)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The submodules' weights are applied functionally: on a 20x20 map one pass over x costs
        # about as much as four nested module calls, so the calls themselves are worth saving.
        # Sum instead of mean (a quarter cheaper): relu(W1 s / HW) = relu(W1 s) / HW, so the one
        # division lands on the C-vector after fc2.
        lib = fused.usable(x)
        if lib is not None and fused.weights_ok(self.fc1.weight, self.fc2.weight) and fused.plain_passes_ok(x):
            return fused.se(lib, x, self.fc1.weight, self.fc2.weight)  # inference on a CPU: one C call
        n, c, h, w = x.shape
        with full_precision(x):  # fp16: a map-wide sum overflows (1600 values of 41), so (N, C) work is float32
            s = torch.mm(torch.mm(sum32(x), fp32(self.fc1.weight).t()).relu_(), fp32(self.fc2.weight).t())
        return x * to_dtype(s.mul_(1.0 / (h * w)).sigmoid_(), x.dtype).view(n, c, 1, 1)  # in place on fresh tensors
