"""S2-MLPv2's spatial-shift attention block (Yu et al., 2021), as S2Attention."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attention.blocks._checks import check_divisible, check_int
from attention.blocks.registry import register
from attention.blocks.taps import Tapped


def _shift(t: torch.Tensor, dim: int, step: int) -> torch.Tensor:
    """Move t by one along dim (+1: towards higher indices); the vacated edge keeps its own values, as in the paper."""
    if step > 0:
        return torch.cat([t.narrow(dim, 0, 1), t.narrow(dim, 0, t.shape[dim] - 1)], dim)
    return torch.cat([t.narrow(dim, 1, t.shape[dim] - 1), t.narrow(dim, t.shape[dim] - 1, 1)], dim)


def spatial_shift(t: torch.Tensor, order: int) -> torch.Tensor:
    """t as (N, H, W, C), its channel quarters shifted +W, -W, +H, -H (order 1) or +H, -H, +W, -W (order 2)."""
    parts = t.chunk(4, dim=3)
    dims = (2, 2, 1, 1) if order == 1 else (1, 1, 2, 2)
    return torch.cat([_shift(p, d, s) for p, d, s in zip(parts, dims, (1, -1, 1, -1))], dim=3)


@register
class S2Attention(Tapped):
    """S2-MLPv2 block: x + fc2(SplitAttention(shift1(a), shift2(b), c)), [a, b, c] = fc1(LayerNorm(x)), C -> 3C.

    Split attention (as in ResNeSt): the three branches are summed, averaged over space, passed through
    C -> C -> 3C bias-free linear maps with a GELU, softmaxed across the three branches, and used to weigh them.
    """

    TAPS = {"choice": "choice"}  # the branch weights, (N, 3, 1, 1, C) (attention.blocks.taps)

    def __init__(self, c1: int) -> None:
        super().__init__()
        c1 = check_int("S2Attention", "c1 (input channels)", c1)
        check_divisible("S2Attention", c1, 4, "4 (one quarter per shift direction)")
        self.norm = nn.LayerNorm(c1)
        self.fc1 = nn.Linear(c1, 3 * c1)
        self.split1 = nn.Linear(c1, c1, bias=False)
        self.split2 = nn.Linear(c1, 3 * c1, bias=False)
        self.fc2 = nn.Linear(c1, c1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        t = self.fc1(self.norm(x.permute(0, 2, 3, 1)))  # (N, H, W, 3C)
        a, b, z = t.chunk(3, dim=3)
        branches = torch.stack([spatial_shift(a, 1), spatial_shift(b, 2), z], dim=1)  # (N, 3, H, W, C)
        s = branches.sum(dim=1).mean(dim=(1, 2))  # (N, C)
        weights = self.choice(torch.softmax(self.split2(F.gelu(self.split1(s))).view(n, 3, 1, 1, c), dim=1))
        out = self.fc2((branches * weights).sum(dim=1))  # (N, H, W, C)
        return x + out.permute(0, 3, 1, 2)
