"""SimAM, a parameter-free attention module (Yang et al., ICML 2021)."""

from __future__ import annotations

import torch
from torch import nn

from attention.blocks._checks import check_int, check_real
from attention.blocks._precision import fp32, to_dtype
from attention.blocks.registry import register
from attention.blocks.taps import Tapped


@register
class SimAM(Tapped):
    """out = x * sigmoid(1 / e*), e* the closed-form minimal energy of each neuron against its channel.

    1 / e*_t = (t - mu)^2 / (4 (sigma^2 + lambda)) + 1/2, with mu and sigma^2 = sum (x - mu)^2 / (H*W - 1)
    over the channel's H*W neurons. No parameters.
    """

    TAPS = {"gate": "gate"}  # (N, C, H, W) (attention.blocks.taps)

    def __init__(self, c1: int, e_lambda: float = 1e-4) -> None:
        super().__init__()
        check_int("SimAM", "c1 (input channels)", c1)
        self.e_lambda = check_real("SimAM", "e_lambda", e_lambda)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[2] * x.shape[3] - 1
        # The energy in float32 for fp16/bf16 input: (x - mu)^2 overflows fp16 from |x - mu| = 256, and its
        # sum over the map far sooner. The gate, in [0, 1], goes back to x's dtype.
        xf = fp32(x)
        d = (xf - xf.mean(dim=(2, 3), keepdim=True)).pow(2)
        v = d.sum(dim=(2, 3), keepdim=True) / max(n, 1)  # a 1x1 map has no "other" neurons: variance 0
        gate = self.gate(torch.sigmoid(d / (4 * (v + self.e_lambda)) + 0.5))
        return x * to_dtype(gate, x.dtype)

    def extra_repr(self) -> str:
        return f"e_lambda={self.e_lambda}"
