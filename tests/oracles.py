"""Oracles: SE, ECA, CA and CBAM written literally from their definitions (see the README, "The blocks").

Each function computes a block's output from the block's own submodules, in the order the paper
describes and with the operations the authors' code uses (adaptive pooling, concatenation, a
separate module call per branch, explicit expand). The blocks' forwards must equal these
(tests/test_blocks_vs_oracles.py); benchmarks/blocks.py times them side by side.

BatchNorm runs as the block's mode says: in training mode it uses batch statistics and updates
the running ones, as the block's forward does.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


def se(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """SE: x * sigmoid(W2 relu(W1 GAP(x)))."""
    n, c = x.shape[:2]
    s = F.adaptive_avg_pool2d(x, 1).view(n, c)
    s = torch.sigmoid(block.fc2(F.relu(block.fc1(s))))
    return x * s.view(n, c, 1, 1).expand_as(x)


def eca(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """ECA: x * sigmoid(conv1d_k(GAP(x) as a length-C sequence))."""
    s = F.adaptive_avg_pool2d(x, 1)  # (N, C, 1, 1)
    s = block.conv(s.squeeze(-1).transpose(-1, -2))  # (N, 1, C)
    s = torch.sigmoid(s.transpose(-1, -2).unsqueeze(-1))  # (N, C, 1, 1)
    return x * s.expand_as(x)


def h_swish(z: torch.Tensor) -> torch.Tensor:
    return z * F.relu6(z + 3) / 6


def ca(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """CA: x * a_w * a_h from direction-wise pooled features through one shared conv + BN."""
    n, c, h, w = x.shape
    x_h = F.adaptive_avg_pool2d(x, (h, 1))  # (N, C, H, 1)
    x_w = F.adaptive_avg_pool2d(x, (1, w)).permute(0, 1, 3, 2)  # (N, C, W, 1)
    y = torch.cat([x_h, x_w], dim=2)  # (N, C, H+W, 1)
    y = h_swish(block.bn1(block.conv1(y)))
    y_h, y_w = torch.split(y, [h, w], dim=2)
    y_w = y_w.permute(0, 1, 3, 2)  # (N, mip, 1, W)
    a_h = torch.sigmoid(block.conv_h(y_h))
    a_w = torch.sigmoid(block.conv_w(y_w))
    return x * a_w.expand_as(x) * a_h.expand_as(x)


def cbam(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """CBAM: x1 = x * Mc(x), out = x1 * Ms(x1), one MLP shared by the avg- and max-pooled branches."""
    mc = torch.sigmoid(block.mlp(F.adaptive_avg_pool2d(x, 1)) + block.mlp(F.adaptive_max_pool2d(x, 1)))
    x1 = x * mc.expand_as(x)
    desc = torch.cat([torch.mean(x1, dim=1, keepdim=True), torch.max(x1, dim=1, keepdim=True)[0]], dim=1)
    ms = torch.sigmoid(block.spatial(desc))
    return x1 * ms.expand_as(x1)


ORACLES: dict[str, Callable[[nn.Module, torch.Tensor], torch.Tensor]] = {"SE": se, "ECA": eca, "CA": ca, "CBAM": cbam}


class Oracle(nn.Module):
    """A block run through its oracle (shares the block's parameters), e.g. to time it beside the block."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block
        self.fn = ORACLES[type(block).__name__]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.block, x)
