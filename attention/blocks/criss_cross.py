"""Criss-Cross Attention (Huang et al., CCNet, ICCV 2019), recurrent as in the paper's RCCA."""

from __future__ import annotations

import torch
from torch import nn

from attention.blocks._checks import check_hidden, check_int
from attention.blocks._precision import fp32, full_precision, to_dtype
from attention.blocks.registry import register
from attention.blocks.taps import Tapped


@register
class CrissCrossAttention(Tapped):
    """Each position attends to its own row and column (itself once); applied ``recurrence`` times with shared weights.

    One pass: out = gamma * sum_{u in row(p) and column(p)} softmax_u(q_p . k_u) v_u + x, q and k 1x1 projections
    to C/reduction channels, v a 1x1 projection to C, gamma a learned scalar that starts at 0. Two passes
    (the paper's R = 2) let every position reach every other.
    """

    TAPS = {"attn": "cross"}  # the weights of each pass, (N, H, W, H + W) (attention.blocks.taps)

    def __init__(self, c1: int, reduction: int = 8, recurrence: int = 2) -> None:
        super().__init__()
        c1 = check_int("CrissCrossAttention", "c1 (input channels)", c1)
        reduction = check_int("CrissCrossAttention", "reduction", reduction)
        self.recurrence = check_int("CrissCrossAttention", "recurrence", recurrence)
        hidden = check_hidden("CrissCrossAttention", c1, reduction)
        self.query = nn.Conv2d(c1, hidden, 1)
        self.key = nn.Conv2d(c1, hidden, 1)
        self.value = nn.Conv2d(c1, c1, 1)
        self.gamma = nn.Parameter(torch.zeros(1))  # the authors' start: the block begins as the identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.recurrence):  # a fixed count, not data-dependent
            x = self._once(x)
        return x

    def _once(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.query(x), self.key(x), self.value(x)
        # Energies and softmax in float32 (autocast off): q.k overflows fp16 once q and k reach ~100.
        # The weights (in [0, 1]) then meet v in v's dtype. No-ops for float32 input.
        with full_precision(x):
            q, k = fp32(q), fp32(k)
            # Batched matrix products per column and per row (plain matmuls: no einsum path planning per shape).
            # e_col: (N, H, W, H'), (h, w) vs (h', w); e_row: (N, H, W, W'), (h, w) vs (h, w').
            e_col = (q.permute(0, 3, 2, 1) @ k.permute(0, 3, 1, 2)).permute(0, 2, 1, 3)
            e_row = q.permute(0, 2, 3, 1) @ k.permute(0, 2, 1, 3)
            # The position itself is in both its row and its column: keep it once (in the row).
            ones = torch.ones_like(e_col[0, :, 0, :])  # (H, H'), from the shape alone: traces and exports
            self_in_col = (ones.triu(1) + ones.tril(-1)) == 0
            e_col = e_col.masked_fill(self_in_col.unsqueeze(1), float("-inf"))
            h = e_col.shape[-1]
            a = self.attn(torch.softmax(torch.cat([e_col, e_row], dim=3), dim=3))  # one softmax over the whole cross
        a = to_dtype(a, v.dtype)
        out_col = a[..., :h].permute(0, 2, 1, 3) @ v.permute(0, 3, 2, 1)  # (N, W, H, C)
        out_row = a[..., h:] @ v.permute(0, 2, 3, 1)  # (N, H, W, C)
        out = out_col.permute(0, 3, 2, 1) + out_row.permute(0, 3, 1, 2)
        return self.gamma * out + x

    def extra_repr(self) -> str:
        return f"recurrence={self.recurrence}"
