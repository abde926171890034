"""Efficient Channel Attention (Wang et al., CVPR 2020)."""

from __future__ import annotations

import math

import torch
from torch import nn

from attention.blocks._checks import check_int, check_real
from attention.blocks.registry import register
from attention.blocks.taps import Tapped


def eca_kernel_size(channels: int, b: float = 1, gamma: float = 2) -> int:
    """The paper's adaptive kernel: int(|(log2(C) + b) / gamma|), bumped to the next odd number."""
    k = int(abs((math.log2(channels) + b) / gamma))
    return k if k % 2 else k + 1  # odd, so zero padding (k-1)//2 keeps the length C


@register
class ECA(Tapped):
    """out = x * sigmoid(conv1d_k(GAP(x) as a length-C sequence)), k chosen from C; no bias."""

    TAPS = {"gate": "gate"}  # the channel weights (attention.blocks.taps)

    def __init__(self, c1: int, b: float = 1, gamma: float = 2) -> None:
        super().__init__()
        c1 = check_int("ECA", "c1 (input channels)", c1)
        b = check_real("ECA", "b", b, positive=False)
        gamma = check_real("ECA", "gamma", gamma)
        self.kernel_size = eca_kernel_size(c1, b, gamma)
        # One 1-D conv shared by all channels: local cross-channel interaction, k weights in total.
        self.conv = nn.Conv1d(1, 1, self.kernel_size, padding=(self.kernel_size - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.mean((2, 3)).unsqueeze(1)  # (N, 1, C): the channel descriptors as one sequence
        s = torch.sigmoid(self.conv(y))
        return x * self.gate(s.transpose(1, 2).unsqueeze(3))  # (N, C, 1, 1)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}"
