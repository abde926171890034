"""Coordinate Attention (Hou et al., CVPR 2021)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attention import fused
from attention.blocks._precision import fp32, full_precision, to_dtype
from attention.blocks._checks import check_int
from attention.blocks.registry import register


@register
class CA(nn.Module):
    """out = x * a_h * a_w, per-row and per-column gates from direction-wise pooled features."""

    def __init__(self, c1: int, reduction: int = 32) -> None:
        super().__init__()
        c1 = check_int("CA", "c1 (input channels)", c1)
        reduction = check_int("CA", "reduction", reduction)
        mip = max(8, c1 // reduction)  # the paper's floor of 8 keeps narrow layers expressive
        self.conv1 = nn.Conv2d(c1, mip, 1)
        self.bn1 = nn.BatchNorm2d(mip)
        self.act = nn.Hardswish()  # z * relu6(z + 3) / 6, as in the paper
        self.conv_h = nn.Conv2d(mip, c1, 1)
        self.conv_w = nn.Conv2d(mip, c1, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The paper's graph (attention.reference.ca) with its copies and broadcasts taken out:
        # reductions instead of adaptive pooling, the 1x1 convs as batched matrix products with the
        # bias fused in, and the two gates multiplied into x in one pass over a rank-1 gate.
        lib = fused.usable(x)
        if lib is not None and not self.training and fused.weights_ok(self.conv1.weight):
            return self._fused(lib, x)
        n, c, h, w = x.shape
        mip = self.conv1.out_channels
        y = torch.cat([x.mean(dim=3), x.mean(dim=2)], dim=2)  # (N, C, H+W): rows, then columns
        bn = self.bn1
        # The small descriptor path in float32 under fp16/AMP: with a flat map BN's batch variance is 0 and
        # its backward scales by 1/sqrt(eps), which overflows fp16 gradients. No-ops in float32.
        with full_precision(x):
            w1 = fp32(self.conv1.weight).view(1, mip, c).expand(n, mip, c)
            y = torch.baddbmm(fp32(self.conv1.bias).view(1, mip, 1), w1, fp32(y))
            if self.training:  # batch statistics over rows and columns together, running stats updated
                y = fp32(bn(y.to(bn.weight.dtype).unsqueeze(3)).squeeze(3))
            else:
                y = F.batch_norm(y, fp32(bn.running_mean), fp32(bn.running_var), fp32(bn.weight), fp32(bn.bias),
                                 False, 0.0, bn.eps)
            y = F.hardswish(y)  # (N, mip, H+W)
            wh = fp32(self.conv_h.weight).view(1, c, mip).expand(n, c, mip)
            ww = fp32(self.conv_w.weight).view(1, c, mip).expand(n, c, mip)
            a_h = torch.baddbmm(fp32(self.conv_h.bias).view(1, c, 1), wh, y[:, :, :h]).sigmoid_()  # (N, C, H)
            a_w = torch.baddbmm(fp32(self.conv_w.bias).view(1, c, 1), ww, y[:, :, h:]).sigmoid_()  # (N, C, W)
        a_h, a_w = to_dtype(a_h, x.dtype), to_dtype(a_w, x.dtype)
        gate = a_h.view(n, c, h, 1) * a_w.view(n, c, 1, w)  # a_h * a_w, (N, C, H, W)
        # Without autograd the gate's own buffer takes the product (x is never written).
        return gate.mul_(x) if not torch.is_grad_enabled() else x * gate

    def _fused(self, lib, x: torch.Tensor) -> torch.Tensor:
        """Inference on a CPU (attention/fused.c): one pass pools, one call computes the gates (BN
        folded into conv1), one pass multiplies; the sigmoid is PyTorch's vectorized one."""
        w1, b1, wh, bh, ww, bw = self._folded()
        gates = fused.ca_gates(lib, fused.ca_pool(lib, x), x.shape[2], w1, b1, wh, bh, ww, bw)
        return fused.ca_apply(lib, x, gates.sigmoid_())

    def _folded(self) -> tuple[torch.Tensor, ...]:
        """(conv1 weight and bias with BN folded in, conv_h and conv_w weights and biases) as contiguous
        matrices, kept until any source tensor changes (in-place updates such as an EMA bump its version;
        .to() and load_state_dict drop the fold). A parameter object swapped in by hand is not seen."""
        src = getattr(self, "_fold_src", None)
        if src is None:
            src = self._fold_src = (self.conv1.weight, self.conv1.bias, self.bn1.weight, self.bn1.bias,
                                    self.bn1.running_mean, self.bn1.running_var, self.conv_h.weight,
                                    self.conv_h.bias, self.conv_w.weight, self.conv_w.bias)
        versions = [t._version for t in src]
        if versions != getattr(self, "_fold_versions", None):
            bn, c, mip = self.bn1, self.conv_h.out_channels, self.conv1.out_channels
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            w1 = (self.conv1.weight.view(mip, c) * scale[:, None]).contiguous()
            b1 = (self.conv1.bias - bn.running_mean) * scale + bn.bias
            self._fold = (w1, b1, self.conv_h.weight.reshape(c, mip).contiguous(), self.conv_h.bias.contiguous(),
                          self.conv_w.weight.reshape(c, mip).contiguous(), self.conv_w.bias.contiguous())
            self._fold_versions = versions
        return self._fold

    def _apply(self, fn, recurse=True):  # .to(), .half(), ...: tensors are replaced, the fold is stale
        self._fold_src = self._fold_versions = None
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args, **kwargs):  # load_state_dict(assign=True) swaps the tensors too
        self._fold_src = self._fold_versions = None
        super()._load_from_state_dict(*args, **kwargs)

    def __getstate__(self) -> dict:  # the fold is derived data: never pickled into checkpoints
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        return {k: v for k, v in state.items() if k not in ("_fold", "_fold_src", "_fold_versions")}
