"""Multi-head self-attention over spatial positions, in the manner of the Bottleneck Transformer (Srinivas et al., CVPR 2021)."""

from __future__ import annotations

import torch
from torch import nn

from attention.blocks._checks import check_divisible, check_int, check_real
from attention.blocks._precision import fp32, full_precision, to_dtype
from attention.blocks.registry import AttentionConfigError, register
from attention.blocks.taps import Tapped

GiB = 1024**3


@register
class MHSA(Tapped):
    """out = x + W_o(concat_heads(softmax(q k^T / sqrt(d) + q r^T) v)), all positions against all positions.

    q, k, v are bias-free 1x1 projections (C -> C, split into ``heads`` heads of d = C/heads channels).
    Position encoding (``pos_enc``): BoTNet's 2-D relative logits q . (R_h[i' - i] + R_w[j' - j]) with
    learned embeddings per relative row and column offset, shared by the heads; offsets beyond
    ``max_dist`` are clipped (Shaw et al.). The output projection W_o and the residual make it a block
    that can follow any layer (in BoTNet the bottleneck around MHSA provides both).

    The attention matrix holds N * heads * (H*W)^2 numbers: a placement whose matrix would exceed
    ``max_gib`` GiB is refused with a message instead of running out of memory.
    """

    TAPS = {"attn": "attention"}  # the softmax weights, (N, heads, HW, HW) (attention.blocks.taps)

    def __init__(self, c1: int, heads: int = 4, pos_enc: bool = True, max_gib: float = 2.0, max_dist: int = 128) -> None:
        super().__init__()
        c1 = check_int("MHSA", "c1 (input channels)", c1)
        self.heads = check_int("MHSA", "heads", heads)
        check_divisible("MHSA", c1, self.heads, f"heads = {self.heads}")
        if not isinstance(pos_enc, bool):
            raise AttentionConfigError(f"MHSA: pos_enc must be True or False, got {pos_enc!r}")
        self.max_gib = check_real("MHSA", "max_gib", max_gib)
        self.max_dist = check_int("MHSA", "max_dist", max_dist)
        self.pos_enc = pos_enc
        d = c1 // self.heads
        self.scale = d**-0.5
        self.qkv = nn.Conv2d(c1, 3 * c1, 1, bias=False)
        self.proj = nn.Conv2d(c1, c1, 1)
        if pos_enc:
            span = 2 * self.max_dist - 1  # offsets -(max_dist - 1) .. max_dist - 1
            self.rel_h = nn.Parameter(torch.randn(span, d) * d**-0.5)  # BoTNet's init: normal, std d^-1/2
            self.rel_w = nn.Parameter(torch.randn(span, d) * d**-0.5)

    def attention_bytes(self, n: int, h: int, w: int, element_size: int = 4) -> int:
        """Bytes of the (N, heads, H*W, H*W) attention matrix."""
        return n * self.heads * (h * w) ** 2 * element_size

    def _check_memory(self, x: torch.Tensor) -> None:
        n, _, h, w = x.shape
        need = self.attention_bytes(n, h, w, max(x.element_size(), 4))  # logits are float32 even for fp16 input
        if need > self.max_gib * GiB:
            raise RuntimeError(
                f"MHSA: attention over a {h}x{w} feature map (batch {n}, {self.heads} heads) needs "
                f"{need / GiB:.1f} GiB for its {h * w}x{h * w} attention matrix, over the {self.max_gib:g} GiB limit "
                f"(max_gib); place MHSA on P4/P5 or use a smaller imgsz or batch"
            )

    def _rel_logits(self, q: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """q (N, heads, H, W, d) -> (N, heads, H*W, H*W) logits q_(i,j) . (R_h[i'-i] + R_w[j'-j])."""
        dev = q.device
        ih = torch.arange(h, device=dev)
        iw = torch.arange(w, device=dev)
        lim = self.max_dist - 1
        eh = fp32(self.rel_h)[(ih.view(1, -1) - ih.view(-1, 1)).clamp(-lim, lim) + lim]  # (H, H', d), q's dtype
        ew = fp32(self.rel_w)[(iw.view(1, -1) - iw.view(-1, 1)).clamp(-lim, lim) + lim]  # (W, W', d)
        n, m, _, _, d = q.shape
        # Batched over the query's row (column): plain matmuls, no einsum path planning per shape.
        lh = (q.permute(2, 0, 1, 3, 4).reshape(h, n * m * w, d) @ eh.transpose(1, 2))  # (H, N*heads*W, H')
        lh = lh.reshape(h, n, m, w, h).permute(1, 2, 0, 3, 4)  # (N, heads, H, W, H')
        lw = (q.permute(3, 0, 1, 2, 4).reshape(w, n * m * h, d) @ ew.transpose(1, 2))  # (W, N*heads*H, W')
        lw = lw.reshape(w, n, m, h, w).permute(1, 2, 3, 0, 4)  # (N, heads, H, W, W')
        return (lh.unsqueeze(-1) + lw.unsqueeze(-2)).reshape(n, m, h * w, h * w)

    def _attend(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(softmax weights (N, heads, HW, HW), values (N, heads, d, HW))."""
        if not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()):
            self._check_memory(x)  # a shape check, not a value check
        n, c, h, w = x.shape
        m = self.heads
        q, k, v = self.qkv(x).reshape(n, 3, m, c // m, h * w).unbind(1)  # (N, heads, d, HW) each
        # Logits and softmax in float32 (autocast off): q.k sums d products and leaves fp16's range once
        # q and k reach ~64; the weights (in [0, 1]) then meet v in v's dtype. No-ops for float32 input.
        with full_precision(x):
            q = fp32(q) * self.scale
            logits = q.transpose(2, 3) @ fp32(k)  # (N, heads, HW, HW)
            if self.pos_enc:
                # As in BoTNet, the scaled q meets both the keys and the relative embeddings.
                logits = logits + self._rel_logits(q.transpose(2, 3).reshape(n, m, h, w, c // m), h, w)
            a = self.attn(logits.softmax(dim=-1))
        return a, v

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The (N, heads, H*W, H*W) attention weights on x (float32 for fp16 input): row i is where position i looks."""
        return self._attend(x)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, v = self._attend(x)
        out = (v @ to_dtype(a, v.dtype).transpose(2, 3)).reshape(x.shape)  # out_i = sum_j a_ij v_j
        return x + self.proj(out)

    def extra_repr(self) -> str:
        return f"heads={self.heads}, pos_enc={self.pos_enc}, max_gib={self.max_gib:g}"
