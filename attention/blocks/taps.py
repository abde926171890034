"""Taps: the points where a block's gate or attention weights pass, so that a picture of them is the block's own.

A block passes each gate it computes through a tap, an ``nn.Identity`` (it changes nothing: not a value, not a
state_dict key, not an exported graph), and names its taps in ``TAPS``, name -> kind. A forward hook on a
tap sees exactly the tensor the forward used (attention.inference.maps draws it), so the picture cannot drift
from the block's maths. The kinds, and how each becomes a picture:

- ``"gate"``: multiplies the features, broadcast: (N', C', h, w) with h in {1, H}, w in {1, W} and N' = N or N
  times a group count (ShuffleAttention). Gates that vary over space are multiplied together (CA's row and column
  gates) and averaged over channels into a spatial map; gates that do not are channel weights;
- ``"attention"``: softmax weights (N, heads, HW, HW), row = query position; the map is the attention each
  position receives, averaged over heads and queries;
- ``"cross"``: criss-cross weights (N, H, W, H + W), a query's column (first H) then its row; the map is the
  attention each position receives from its row and column, summed over the block's passes;
- ``"choice"``: softmax weights over M branches, (N, M, C) after flattening: per-channel branch weights.

A tap is a plain torch class, so restricted loading accepts it; a block pickled before it had taps gets them
back when it is loaded (Tapped.__setstate__).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

KINDS = ("gate", "attention", "cross", "choice")


class Tapped(nn.Module):
    """A block whose gates pass through taps named in TAPS (name -> kind); see the module docstring."""

    TAPS: ClassVar[dict[str, str]] = {}

    def __init__(self) -> None:
        super().__init__()
        self._add_taps()

    def _add_taps(self) -> None:
        for name, kind in self.TAPS.items():
            assert kind in KINDS, (type(self).__name__, name, kind)
            if name not in self._modules:
                self.add_module(name, nn.Identity())

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._add_taps()  # a checkpoint pickled before the block had taps


def taps(block: nn.Module) -> dict[str, tuple[str, nn.Module]]:
    """name -> (kind, tap module) of a block's taps ({} for a block without any)."""
    return {name: (kind, getattr(block, name)) for name, kind in getattr(type(block), "TAPS", {}).items()}


def spatial_map(seen: dict[str, tuple[str, list[torch.Tensor]]], n: int, h: int, w: int) -> torch.Tensor | None:
    """(N, H, W) picture of where the block acts, from what its taps saw (name -> (kind, outputs)); None if none."""
    gates, maps = [], []
    for kind, outputs in seen.values():
        for t in outputs:
            t = t.detach().float()
            if kind == "gate" and t.shape[-2:] != (1, 1):
                gates.append(t.reshape(n, -1, *t.shape[-2:]))
            elif kind == "attention":
                maps.append(t.mean(dim=(1, 2)).reshape(n, h, w))
            elif kind == "cross":
                hh = t.shape[1]
                from_column = t[..., :hh].sum(dim=1).transpose(1, 2)  # (N, W, H') -> (N, H', W)
                from_row = t[..., hh:].sum(dim=2)  # (N, H, W')
                maps.append(from_column + from_row)
    if gates:
        product = gates[0]
        for g in gates[1:]:
            product = product * g
        maps.append(product.expand(n, -1, h, w).mean(dim=1))
    if not maps:
        return None
    total = maps[0]
    for m in maps[1:]:
        total = total + m
    return total


def channel_weights(seen: dict[str, tuple[str, list[torch.Tensor]]], n: int) -> torch.Tensor | None:
    """(N, S, C) weights per channel (S series: 1 for a channel gate, M for branch weights), or None if none."""
    for kind, outputs in seen.values():
        for t in outputs:
            t = t.detach().float()
            if kind == "gate" and t.shape[-2:] == (1, 1):
                return t.reshape(n, 1, -1)
            if kind == "choice":
                return t.reshape(n, t.shape[1], -1)
    return None
