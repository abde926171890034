"""Identity start: a block wrapped so that the model it is inserted in starts as the base model."""

from __future__ import annotations

import torch
from torch import nn

from attention.blocks.registry import is_block

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


def unwrap(layer: nn.Module) -> nn.Module:
    """The block inside an IdentityGate, else the layer itself."""
    return layer.block if isinstance(layer, IdentityGate) else layer


def is_attention(layer: nn.Module) -> bool:
    """A registered attention block (plain or gated) sits at this layer."""
    return is_block(unwrap(layer))


def gate_blocks(layers: nn.Sequential, only: set[int] | None = None) -> list[int]:
    """Wrap every attention block (or those at the indices `only`) of a model's layer list in an IdentityGate,
    in place; returns the indices wrapped.

    The gate takes over the layer's place in the model's forward loop, so it carries the attributes
    the YOLO parser attached to the layer (its inputs f, index i, type name, parameter count np).
    """
    wrapped = []
    for i, layer in enumerate(layers):
        if is_attention(layer) and not isinstance(layer, IdentityGate) and (only is None or i in only):
            gate = IdentityGate(layer)
            for attr in ("f", "i", "type", "np"):
                if hasattr(layer, attr):
                    setattr(gate, attr, getattr(layer, attr))
            layers[i] = gate
            wrapped.append(i)
    return wrapped
