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
    """Wrap every attention block of a model's layer list in an IdentityGate, in place (only the layers at the
    indices `only`, if given); returns the indices of the layers that now hold a new gate.

    A block that is a layer of its own takes over the layer's place in the model's forward loop, so the gate
    carries the attributes the YOLO parser attached to it (inputs f, index i, type name, parameter count np);
    a block inside another layer (C3Attn's) is gated where it is.
    """
    wrapped = []
    for i, layer in enumerate(layers):
        if only is not None and i not in only:
            continue
        if is_attention(layer):
            if isinstance(layer, IdentityGate):
                continue
            gate = IdentityGate(layer)
            for attr in ("f", "i", "type", "np"):
                if hasattr(layer, attr):
                    setattr(gate, attr, getattr(layer, attr))
            layers[i] = gate
            wrapped.append(i)
        elif _gate_inside(layer):
            wrapped.append(i)
    return wrapped


def _gate_inside(module: nn.Module) -> bool:
    found = False
    for name, child in module.named_children():
        if isinstance(child, IdentityGate):
            continue
        if is_block(child):
            setattr(module, name, IdentityGate(child))
            found = True
        else:
            found |= _gate_inside(child)
    return found


def has_gate(layer: nn.Module) -> bool:
    """The layer is, or holds, an IdentityGate."""
    return any(isinstance(m, IdentityGate) for m in layer.modules())
