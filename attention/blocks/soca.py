"""Second-order channel attention (Dai et al., SAN, CVPR 2019)."""

from __future__ import annotations

import torch
from torch import nn

from attention.blocks._checks import check_hidden, check_int
from attention.blocks._precision import fp32, full_precision, to_dtype
from attention.blocks.registry import register
from attention.blocks.taps import Tapped


def covariance(x: torch.Tensor) -> torch.Tensor:
    """Sigma = X Ibar X^T with Ibar = (I - 11^T/M) / M: the (N, C, C) covariance of the channels over M = H*W positions."""
    n, c, h, w = x.shape
    xf = x.reshape(n, c, h * w)
    xf = xf - xf.mean(dim=2, keepdim=True)
    return xf @ xf.transpose(1, 2) / (h * w)


def sqrtm_newton_schulz(a: torch.Tensor, iterations: int, eps: float = 1e-5) -> torch.Tensor:
    """Square root of a batch of SPD matrices by coupled Newton-Schulz iterations on a / trace(a) (MPN-COV).

    Y_0 = A / tr(A), Z_0 = I; T = (3I - Z_k Y_k) / 2; Y_{k+1} = Y_k T, Z_{k+1} = T Z_k; sqrt(A) ~ Y_K sqrt(tr(A)).
    Only matrix products: it runs on any device and exports, unlike an eigendecomposition.
    """
    c = a.shape[-1]
    eye = torch.eye(c, dtype=a.dtype, device=a.device).expand_as(a)
    tr = a.diagonal(dim1=-2, dim2=-1).sum(-1).view(-1, 1, 1) + eps  # eps: a constant map has trace 0
    y, z = a / tr, eye
    for _ in range(iterations):
        t = 0.5 * (3.0 * eye - z @ y)
        y, z = y @ t, t @ z
    return y * tr.sqrt()


@register
class SOCA(Tapped):
    """out = x * sigmoid(W_U ReLU(W_D z)), z_c = mean over rows of sqrt(Sigma): channel weights from covariance.

    Sigma is the channel covariance over all positions, normalised by its matrix square root
    (``iterations`` Newton-Schulz steps, in float32); W_D: C -> C/reduction, W_U back, 1x1 convs with bias.
    """

    TAPS = {"gate": "gate"}  # the channel weights (attention.blocks.taps)

    def __init__(self, c1: int, reduction: int = 16, iterations: int = 5) -> None:
        super().__init__()
        c1 = check_int("SOCA", "c1 (input channels)", c1)
        reduction = check_int("SOCA", "reduction", reduction)
        self.iterations = check_int("SOCA", "iterations", iterations)
        hidden = check_hidden("SOCA", c1, reduction)
        self.conv_du = nn.Sequential(nn.Conv2d(c1, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, c1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        # Second-order statistics in float32 for fp16 input, autocast off: a covariance of values near 1e3
        # already leaves fp16's range, and half is too coarse for the iterations.
        with full_precision(x):
            root = sqrtm_newton_schulz(covariance(fp32(x)), self.iterations)
            z = root.mean(dim=1).view(n, c, 1, 1)  # (1/C) sum_i sqrt(Sigma)_{i, c}
        s = self.gate(torch.sigmoid(self.conv_du(to_dtype(z, x.dtype))))
        return x * s

    def extra_repr(self) -> str:
        return f"iterations={self.iterations}"
