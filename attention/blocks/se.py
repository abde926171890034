"""Squeeze-and-Excitation (Hu et al., 2017)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attention.blocks._checks import check_hidden, check_int
from attention.blocks.registry import register
from attention.blocks.taps import Tapped


@register
class SE(Tapped):
    """out = x * sigmoid(fc2(relu(fc1(GAP(x))))), fc1: C -> C//ratio, fc2: C//ratio -> C, both without bias."""

    TAPS = {"gate": "gate"}  # the channel weights (attention.blocks.taps)

    def __init__(self, c1: int, ratio: int = 16) -> None:
        super().__init__()
        c1 = check_int("SE", "c1 (input channels)", c1)
        ratio = check_int("SE", "ratio", ratio)
        hidden = check_hidden("SE", c1, ratio)
        self.fc1 = nn.Linear(c1, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, c1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3))))))  # squeeze, then excite: (N, C)
        return x * self.gate(s[:, :, None, None])
