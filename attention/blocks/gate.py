"""Identity start: a block wrapped so that the model it is inserted in starts as the base model."""

from __future__ import annotations

import torch
from torch import nn

INITS = ("paper", "identity")


class IdentityGate(nn.Module):
    """out = x + gamma * (block(x) - x); gamma starts at 0, so the block starts as an exact identity.

    The block itself computes what its paper defines; training moves gamma (one learnable scalar,
    as in ReZero) and the block's weights together.
    """

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gamma * (self.block(x) - x)
