"""Shuffle Attention (Zhang & Yang, SA-Net, ICASSP 2021)."""

from __future__ import annotations

import torch
from torch import nn

from attention.blocks._checks import check_divisible, check_int
from attention.blocks.registry import register
from attention.blocks.taps import Tapped


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's shuffle: channels viewed as (groups, C/groups), transposed, flattened."""
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


@register
class ShuffleAttention(Tapped):
    """G groups, each split in two halves: a channel gate (GAP) and a spatial gate (GroupNorm); then a channel shuffle.

    Per sub-feature of C/(2G) channels: x_k * sigmoid(w * GAP(x_k) + b) and x_s * sigmoid(w' * GN(x_s) + b'),
    the halves concatenated, the groups put back together and the channels shuffled with 2 groups.
    """

    TAPS = {"channel_gate": "gate", "spatial_gate": "gate"}  # per group, (N*G, C/2G, ...) (attention.blocks.taps)

    def __init__(self, c1: int, groups: int = 64) -> None:
        super().__init__()
        c1 = check_int("ShuffleAttention", "c1 (input channels)", c1)
        groups = check_int("ShuffleAttention", "groups", groups)
        check_divisible("ShuffleAttention", c1, 2 * groups, f"2*G = {2 * groups} (G={groups} groups)")
        self.groups = groups
        cg = c1 // (2 * groups)
        # The authors' initialisation: both gates start as the constant sigmoid(1).
        self.cweight = nn.Parameter(torch.zeros(1, cg, 1, 1))
        self.cbias = nn.Parameter(torch.ones(1, cg, 1, 1))
        self.sweight = nn.Parameter(torch.zeros(1, cg, 1, 1))
        self.sbias = nn.Parameter(torch.ones(1, cg, 1, 1))
        self.gn = nn.GroupNorm(cg, cg)  # one group per channel of the half: per-channel spatial statistics

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        x = x.reshape(n * self.groups, c // self.groups, h, w)
        x_c, x_s = x.chunk(2, dim=1)
        x_c = x_c * self.channel_gate(torch.sigmoid(self.cweight * x_c.mean(dim=(2, 3), keepdim=True) + self.cbias))
        x_s = x_s * self.spatial_gate(torch.sigmoid(self.sweight * self.gn(x_s) + self.sbias))
        out = torch.cat([x_c, x_s], dim=1).reshape(n, c, h, w)
        return channel_shuffle(out, 2)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"
