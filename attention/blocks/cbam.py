"""Convolutional Block Attention Module (Woo et al., ECCV 2018).

Not ``ultralytics.nn.modules.CBAM``: that one has no max-pool branch and no MLP reduction.
"""

from __future__ import annotations

import numbers

import torch
from torch import nn

from attention.blocks._checks import check_hidden, check_int
from attention.blocks.registry import AttentionConfigError, register
from attention.blocks.taps import Tapped


@register
class CBAM(Tapped):
    """Channel then spatial attention: x1 = x * Mc(x), out = x1 * Ms(x1)."""

    TAPS = {"channel_gate": "gate", "spatial_gate": "gate"}  # Mc and Ms (attention.blocks.taps)

    def __init__(self, c1: int, ratio: int = 8, kernel: int = 7) -> None:
        super().__init__()
        c1 = check_int("CBAM", "c1 (input channels)", c1)
        ratio = check_int("CBAM", "ratio", ratio)
        hidden = check_hidden("CBAM", c1, ratio)
        if isinstance(kernel, bool) or not isinstance(kernel, numbers.Integral) or kernel not in (3, 7):
            raise AttentionConfigError(f"CBAM: kernel must be 3 or 7, got {kernel!r}")
        kernel = int(kernel)
        # One MLP, shared by the average- and max-pooled descriptors (the paper's weight sharing).
        self.mlp = nn.Sequential(
            nn.Conv2d(c1, hidden, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, c1, 1, bias=False),
        )
        self.spatial = nn.Conv2d(2, 1, kernel, padding=kernel // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Mc = sigmoid(MLP(GAP(x)) + MLP(GMP(x))), (N, C, 1, 1)
        mc = torch.sigmoid(self.mlp(x.mean((2, 3), keepdim=True)) + self.mlp(x.amax((2, 3), keepdim=True)))
        x = x * self.channel_gate(mc)
        # Ms = sigmoid(conv([mean over C, max over C] of x * Mc)), (N, 1, H, W)
        ms = torch.sigmoid(self.spatial(torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)))
        return x * self.spatial_gate(ms)
