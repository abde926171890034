"""Global Attention Mechanism (Liu, Shao & Hoffmann, 2021)."""

from __future__ import annotations

import torch
from torch import nn

from attention.blocks._checks import check_hidden, check_int
from attention.blocks.registry import register
from attention.blocks.taps import Tapped


@register
class GAM(Tapped):
    """Channel then spatial attention that keeps the spatial layout: x1 = x * Mc(x), out = x1 * Ms(x1).

    Mc = sigmoid(MLP(x) per position), MLP C -> C/rate -> C on the channel vector (no pooling);
    Ms = sigmoid(BN(conv7x7(ReLU(BN(conv7x7(x1))))), C -> C/rate -> C (no pooling either).
    """

    TAPS = {"channel_gate": "gate", "spatial_gate": "gate"}  # Mc and Ms, both (N, C, H, W) (attention.blocks.taps)

    def __init__(self, c1: int, rate: int = 4) -> None:
        super().__init__()
        c1 = check_int("GAM", "c1 (input channels)", c1)
        rate = check_int("GAM", "rate", rate)
        hidden = check_hidden("GAM", c1, rate)
        self.channel = nn.Sequential(nn.Linear(c1, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, c1))
        self.spatial = nn.Sequential(
            nn.Conv2d(c1, hidden, 7, padding=3),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, c1, 7, padding=3),
            nn.BatchNorm2d(c1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mc = self.channel_gate(torch.sigmoid(self.channel(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)))
        x = x * mc
        return x * self.spatial_gate(torch.sigmoid(self.spatial(x)))
