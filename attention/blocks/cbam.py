"""Convolutional Block Attention Module (Woo et al., ECCV 2018).

Not ``ultralytics.nn.modules.CBAM``: that one has no max-pool branch and no MLP reduction.
"""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F
from torch import nn

from attention import fused
from attention.blocks._precision import fp32, full_precision, to_dtype
from attention.blocks._checks import check_hidden, check_int
from attention.blocks.registry import AttentionConfigError, register


@register
class CBAM(nn.Module):
    """Channel then spatial attention: x1 = x * Mc(x), out = x1 * Ms(x1)."""

    def __init__(self, c1: int, ratio: int = 8, kernel: int = 7) -> None:
        super().__init__()
        c1 = check_int("CBAM", "c1 (input channels)", c1)
        ratio = check_int("CBAM", "ratio", ratio)
        hidden = check_hidden("CBAM", c1, ratio)
        if isinstance(kernel, bool) or not isinstance(kernel, numbers.Integral) or kernel not in (3, 7):
            raise AttentionConfigError(f"CBAM: kernel must be 3 or 7, got {kernel!r}")
        kernel = int(kernel)
        # One MLP, shared by the average- and max-pooled descriptors (the paper's weight sharing).
        self.mlp = nn.Sequential(
            nn.Conv2d(c1, hidden, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, c1, 1, bias=False),
        )
        self.spatial = nn.Conv2d(2, 1, kernel, padding=kernel // 2, bias=False)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        hidden = self.mlp[0].out_channels
        lib = fused.usable(x)
        # Inference on a CPU: three passes over x in attention/fused.c.
        if lib is not None and fused.weights_ok(self.mlp[0].weight, self.spatial.weight):
            z = F.linear(fused.mean_max(lib, x), self.mlp[0].weight.view(hidden, c)).relu_()
            z = z.sum(0, keepdim=True) if n == 1 else z[:n] + z[n:]  # one op where it can be
            mc = F.linear(z, self.mlp[2].weight.view(c, hidden)).sigmoid_()
            return fused.cbam_spatial(lib, x, mc, self.spatial.weight)
        # Channel attention. The second MLP layer is linear, so MLP(avg) + MLP(max) =
        # W2 (relu(W1 avg) + relu(W1 max)): one product for both descriptors, one for the sum.
        # With autograd on, maxima come with their indices: their backward scatters into the one
        # winning element, where amax's re-scans the whole map (5-10x the cost of the forward).
        grad = torch.is_grad_enabled()
        gmax = F.adaptive_max_pool2d(x, 1).view(n, c) if grad else x.amax(dim=(2, 3))
        with full_precision(x):  # fp16: relu(W1 avg) + relu(W1 max) can overflow, so the (2N, C) path is float32
            z = F.relu(F.linear(fp32(torch.cat([x.mean(dim=(2, 3)), gmax])), fp32(self.mlp[0].weight).view(hidden, c)))
            mc = torch.sigmoid(F.linear(z[:n] + z[n:], fp32(self.mlp[2].weight).view(c, hidden)))
        x = x * to_dtype(mc, x.dtype).view(n, c, 1, 1)
        # Spatial attention on [mean over C, max over C] of x * Mc.
        cmax = x.max(dim=1, keepdim=True)[0] if grad else x.amax(dim=1, keepdim=True)
        desc = torch.cat([x.mean(dim=1, keepdim=True), cmax], dim=1)  # (N, 2, H, W)
        ms = torch.sigmoid(self._spatial(desc, w))
        return x * ms if grad else x.mul_(ms)  # x is our own product here, never the input

    def _spatial(self, desc: torch.Tensor, w: int) -> torch.Tensor:
        """The k x k, 2 -> 1 convolution of desc, as a (k, 1) convolution into k outputs then a diagonal sum.

        A convolution with one output channel runs 2-3 times slower than its arithmetic needs on a CPU.
        Splitting it by kernel column j gives a (k, 1) convolution with k outputs, z_j, followed by
        out[y, x] = sum_j z_j[y, x + j]: a sum over a diagonal view, with no copy. Exporters get the
        single convolution, which every runtime implements well.
        """
        weight = self.spatial.weight  # (1, 2, k, k)
        k = weight.shape[-1]
        p = k // 2
        if torch.onnx.is_in_onnx_export():
            return F.conv2d(desc, weight, padding=p)
        z = F.conv2d(desc, weight[0].permute(2, 0, 1).unsqueeze(3), padding=(p, p))  # (N, k, H, W + 2p)
        return torch.diagonal(z.unfold(3, w, 1), 0, 1, 3).sum(dim=3).unsqueeze(1)  # (N, 1, H, W)
