"""The rest of the zoo: ShuffleAttention, CrissCrossAttention, S2Attention, SimAM, SKAttention, NAMAttention,
SOCA, GAM and MHSA. Shapes, gradients, one defining property per block checked against an independent
computation (numpy or plain functional torch, never the block's forward), argument errors, variant configs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from ultralytics import YOLO

import attention
from attention.blocks import (
    GAM, MHSA, SOCA, CrissCrossAttention, NAMAttention, S2Attention, ShuffleAttention, SimAM, SKAttention,
)
from attention.blocks.s2mlp import spatial_shift
from attention.blocks.soca import covariance, sqrtm_newton_schulz
from attention.blocks.registry import AttentionConfigError, get

from conftest import MODELS

ZOO = ["ShuffleAttention", "CrissCrossAttention", "S2Attention", "SimAM", "SKAttention", "NAMAttention", "SOCA",
       "GAM", "MHSA"]
SHAPES = [(2, 64, 8, 8), (1, 64, 7, 11), (2, 64, 1, 9), (3, 64, 5, 3)]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def make(name: str, c: int = 64) -> nn.Module:
    """The block with the paper's defaults, except where 64 channels need fewer groups."""
    return ShuffleAttention(c, 8) if name == "ShuffleAttention" else get(name)(c)


def _wake(block: nn.Module) -> nn.Module:
    """Move the authors' zero initialisations (gates that start closed) so every parameter sees a gradient."""
    with torch.no_grad():
        for name, p in block.named_parameters():
            if name in {"gamma", "cweight", "sweight"}:
                p.uniform_(0.5, 1.5)
    return block


def _randomize_bn(block: nn.Module) -> None:
    with torch.no_grad():
        for m in block.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1.0, 1.0)
                m.running_var.uniform_(0.3, 3.0)
                m.weight.uniform_(-1.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)


# --- every block -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ZOO)
def test_registered_under_class_name(name: str) -> None:
    cls = get(name)
    assert cls.__name__ == name and name in attention.available()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", ZOO)
def test_output_shape_equals_input_shape(name: str, shape) -> None:
    block = _wake(make(name, shape[1]))
    x = torch.randn(shape)
    for mode in (block.train, block.eval):
        mode()
        with torch.no_grad():
            out = block(x)
        assert out.shape == x.shape and out.dtype == x.dtype
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ZOO)
def test_gradients_reach_every_parameter(name: str) -> None:
    block = _wake(make(name)).train()
    x = torch.randn(2, 64, 7, 9, requires_grad=True)
    (block(x) * torch.randn(2, 64, 7, 9)).sum().backward()
    for pname, p in block.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.filterwarnings("ignore:`torch.jit.trace:FutureWarning")
@pytest.mark.parametrize("name", ZOO)
def test_traces_and_generalises_across_shapes(name: str) -> None:
    block = _wake(make(name)).eval()
    with torch.no_grad():
        traced = torch.jit.trace(block, torch.randn(2, 64, 8, 12))
        for shape in [(1, 64, 5, 7), (3, 64, 11, 4)]:
            z = torch.randn(shape)
            torch.testing.assert_close(traced(z), block(z), rtol=1e-5, atol=1e-5)


# --- SimAM: the closed-form minimal energy ---------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES[:2] + [(2, 8, 13, 6)])
def test_simam_is_the_closed_form_energy(shape) -> None:
    lam = 1e-4
    x = torch.randn(shape) * 3 + 1
    with torch.no_grad():
        out = SimAM(shape[1])(x)
    xn = _np(x)
    m = shape[2] * shape[3] - 1  # the M - 1 "other" neurons of the channel
    mu = xn.mean(axis=(2, 3), keepdims=True)
    var = ((xn - mu) ** 2).sum(axis=(2, 3), keepdims=True) / m
    e_min = 4 * (var + lam) / ((xn - mu) ** 2 + 2 * var + 2 * lam)  # the paper's e_t*, eq. (4)
    np.testing.assert_allclose(_np(out), xn * _sigmoid(1 / e_min), rtol=0, atol=1e-5)
    assert sum(p.numel() for p in SimAM(64).parameters()) == 0


def test_simam_energy_is_the_minimum_of_the_linear_separation_energy() -> None:
    # e_t(w, b) = 1/M sum_i (-1 - (w x_i + b))^2 + (1 - (w t + b))^2 + lam w^2, with the other neurons' mean
    # and variance standing for all of them (the paper's simplification): its minimum over (w, b),
    # found by least squares, equals the closed form SimAM uses.
    rng = np.random.default_rng(0)
    lam, others = 1e-4, rng.normal(0.3, 1.7, size=200)
    mu, var = others.mean(), others.var()
    for t in (-2.0, 0.1, 3.5):
        # Minimise over (w, b) with x_i replaced by the two-point distribution mu +- sigma: same first two moments.
        xs = np.array([mu - np.sqrt(var), mu + np.sqrt(var)])
        a = np.vstack([np.c_[xs, np.ones(2)] / np.sqrt(2), [t, 1.0], [np.sqrt(lam), 0.0]])
        y = np.r_[-np.ones(2) / np.sqrt(2), 1.0, 0.0]
        sol, *_ = np.linalg.lstsq(a, y, rcond=None)
        energy = ((a @ sol - y) ** 2).sum()
        closed = 4 * (var + lam) / ((t - mu) ** 2 + 2 * var + 2 * lam)
        np.testing.assert_allclose(energy, closed, rtol=1e-9)


# --- ShuffleAttention: group split and channel shuffle ---------------------------------------


def shuffle_ref(block: ShuffleAttention, x: torch.Tensor) -> np.ndarray:
    xn = _np(x)
    n, c, h, w = xn.shape
    g, cg = block.groups, c // (2 * block.groups)
    cw, cb, sw, sb = (_np(p).reshape(-1) for p in (block.cweight, block.cbias, block.sweight, block.sbias))
    gw, gb, eps = _np(block.gn.weight), _np(block.gn.bias), block.gn.eps
    gated = np.empty_like(xn)
    for grp in range(g):
        for i in range(cg):
            ch = grp * (c // g) + i  # first half of the group: channel attention
            s = cw[i] * xn[:, ch].mean(axis=(1, 2)) + cb[i]
            gated[:, ch] = xn[:, ch] * _sigmoid(s)[:, None, None]
            ch = grp * (c // g) + cg + i  # second half: spatial attention on per-channel normalised values
            v = xn[:, ch]
            z = (v - v.mean(axis=(1, 2), keepdims=True)) / np.sqrt(v.var(axis=(1, 2), keepdims=True) + eps)
            gated[:, ch] = v * _sigmoid(sw[i] * (z * gw[i] + gb[i]) + sb[i])
    # Channel shuffle with 2 groups: output channel j comes from channel (j % 2) * C/2 + j // 2.
    return gated[:, [(j % 2) * (c // 2) + j // 2 for j in range(c)]]


@pytest.mark.parametrize(("c", "groups"), [(64, 8), (32, 4), (48, 2), (128, 64)])
def test_shuffle_attention_splits_groups_and_shuffles(c: int, groups: int) -> None:
    block = ShuffleAttention(c, groups)
    with torch.no_grad():
        for p in block.parameters():
            p.uniform_(-1.5, 1.5)
    x = torch.randn(2, c, 6, 5)
    with torch.no_grad():
        out = block(x)
    np.testing.assert_allclose(_np(out), shuffle_ref(block, x), rtol=0, atol=1e-5)


def test_shuffle_attention_at_init_is_a_scaled_channel_shuffle() -> None:
    # The authors' init: both gates are sigmoid(1) everywhere, so the block is sigmoid(1) times the shuffle.
    x = torch.randn(2, 32, 5, 5)
    with torch.no_grad():
        out = ShuffleAttention(32, 4)(x)
    perm = torch.arange(32).view(2, 16).t().reshape(-1)  # [0, 16, 1, 17, ...]
    torch.testing.assert_close(out, torch.sigmoid(torch.tensor(1.0)) * x[:, perm])
    assert sum(p.numel() for p in ShuffleAttention(512).parameters()) == 6 * 512 // (2 * 64)


# --- CrissCrossAttention: one pass reaches the row and column, two reach everything ----------


def _reach(block: nn.Module, shape, i: int, j: int) -> torch.Tensor:
    x = torch.randn(shape, requires_grad=True)
    block(x)[:, :, i, j].sum().backward()
    return x.grad.abs().sum(dim=(0, 1)) > 0  # (H, W): input positions the output at (i, j) depends on


@pytest.mark.parametrize(("i", "j"), [(0, 0), (3, 5), (6, 2)])
def test_criss_cross_one_pass_reaches_exactly_its_row_and_column(i: int, j: int) -> None:
    shape = (1, 16, 7, 9)
    one = _wake(CrissCrossAttention(16, recurrence=1))
    expected = torch.zeros(7, 9, dtype=torch.bool)
    expected[i, :] = True
    expected[:, j] = True
    assert torch.equal(_reach(one, shape, i, j), expected)
    two = _wake(CrissCrossAttention(16))  # the paper's R = 2
    assert _reach(two, shape, i, j).all()


def test_criss_cross_one_pass_is_a_softmax_over_the_cross() -> None:
    block = _wake(CrissCrossAttention(16, 4, 1))
    x = torch.randn(2, 16, 5, 6)
    with torch.no_grad():
        out = block(x)
    xn = _np(x)
    wq, wk, wv = (_np(m.weight)[:, :, 0, 0] for m in (block.query, block.key, block.value))
    bq, bk, bv = (_np(m.bias) for m in (block.query, block.key, block.value))
    q = np.einsum("oc,nchw->nohw", wq, xn) + bq[None, :, None, None]
    k = np.einsum("oc,nchw->nohw", wk, xn) + bk[None, :, None, None]
    v = np.einsum("oc,nchw->nohw", wv, xn) + bv[None, :, None, None]
    ref = np.empty_like(xn)
    for a in range(5):
        for b in range(6):
            cross = [(a, u) for u in range(6)] + [(u, b) for u in range(5) if u != a]  # itself once
            e = np.array([(q[:, :, a, b] * k[:, :, r, s]).sum(1) for r, s in cross])  # (|cross|, N)
            p = np.exp(e - e.max(0)) / np.exp(e - e.max(0)).sum(0)
            ref[:, :, a, b] = sum(p[t][:, None] * v[:, :, r, s] for t, (r, s) in enumerate(cross))
    ref = float(block.gamma.detach()) * ref + xn
    np.testing.assert_allclose(_np(out), ref, rtol=0, atol=1e-5)


def test_criss_cross_starts_as_identity() -> None:
    x = torch.randn(1, 32, 6, 6)
    with torch.no_grad():
        assert torch.equal(CrissCrossAttention(32)(x), x)  # gamma = 0, as the authors initialise it


# --- S2Attention: the spatial shifts, and the split attention's convex weights ---------------


@pytest.mark.parametrize("order", [1, 2])
def test_s2_spatial_shift(order: int) -> None:
    t = torch.randn(2, 5, 6, 8)  # (N, H, W, C): quarters of 2 channels
    out = _np(spatial_shift(t, order))
    tn = _np(t)
    ref = tn.copy()
    # (axis, step) per quarter; +1 moves content to higher indices and the first row/column keeps its own.
    moves = [(2, 1), (2, -1), (1, 1), (1, -1)] if order == 1 else [(1, 1), (1, -1), (2, 1), (2, -1)]
    for qtr, (axis, step) in enumerate(moves):
        sl = slice(2 * qtr, 2 * qtr + 2)
        src = tn[..., sl]
        dst = src.copy()
        size = src.shape[axis]
        for idx in range(size):
            from_idx = idx - step if 0 <= idx - step < size else idx
            np.put_along_axis(dst, np.full([1 if a == axis else s for a, s in enumerate(src.shape)], idx),
                              np.take(src, [from_idx], axis=axis), axis=axis)
        ref[..., sl] = dst
    np.testing.assert_array_equal(out, ref)


def test_s2_attention_block_equals_its_formula() -> None:
    block = S2Attention(16)
    x = torch.randn(2, 16, 5, 4)
    with torch.no_grad():
        out = block(x)
        t = block.fc1(F.layer_norm(x.permute(0, 2, 3, 1), (16,), block.norm.weight, block.norm.bias))
        a, b, z = t[..., :16], t[..., 16:32], t[..., 32:]
        br = [spatial_shift(a, 1), spatial_shift(b, 2), z]
        s = (br[0] + br[1] + br[2]).mean(dim=(1, 2))
        hat = F.linear(F.gelu(F.linear(s, block.split1.weight)), block.split2.weight).view(2, 3, 16)
        wts = hat.softmax(dim=1)
        assert torch.allclose(wts.sum(1), torch.ones(2, 16))
        mix = sum(wts[:, k, None, None, :] * br[k] for k in range(3))
        ref = x + block.fc2(mix).permute(0, 3, 1, 2)
    torch.testing.assert_close(out, ref)


# --- SKAttention: a per-channel convex selection between kernels -----------------------------


def test_sk_attention_selects_between_dilated_branches() -> None:
    block = SKAttention(64)
    _randomize_bn(block)
    block.eval()
    x = torch.randn(2, 64, 9, 8)

    def bn(m, t):
        return (t - m.running_mean[None, :, None, None]) / torch.sqrt(m.running_var[None, :, None, None] + m.eps) \
            * m.weight[None, :, None, None] + m.bias[None, :, None, None]

    with torch.no_grad():
        out = block(x)
        u = [F.relu(bn(br[1], F.conv2d(x, br[0].weight, padding=d, dilation=d, groups=32)))
             for br, d in zip(block.branches, (1, 2))]  # 3x3 and the "5x5" as 3x3 dilated 2
        s = (u[0] + u[1]).mean(dim=(2, 3), keepdim=True)
        z = F.relu(bn(block.fc[1], F.conv2d(s, block.fc[0].weight)))
        logits = F.conv2d(z, block.fcs.weight, block.fcs.bias).view(2, 2, 64, 1, 1)
        a = torch.exp(logits) / torch.exp(logits).sum(1, keepdim=True)
        ref = a[:, 0] * u[0] + a[:, 1] * u[1]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert block.fc[0].out_channels == 32  # d = max(C/r, L) = max(4, 32)
    assert SKAttention(1024).fc[0].out_channels == 64


# --- NAMAttention: BN's scale factors weigh the channels -------------------------------------


def test_nam_attention_weighs_channels_by_bn_scale() -> None:
    block = NAMAttention(32)
    _randomize_bn(block)
    block.eval()
    x = torch.randn(2, 32, 6, 7)
    with torch.no_grad():
        out = block(x)
    bn = block.bn
    xn = _np(x)
    y = (xn - _np(bn.running_mean)[None, :, None, None]) / np.sqrt(_np(bn.running_var)[None, :, None, None] + bn.eps)
    y = y * _np(bn.weight)[None, :, None, None] + _np(bn.bias)[None, :, None, None]
    gamma = np.abs(_np(bn.weight))
    np.testing.assert_allclose(_np(out), xn * _sigmoid(y * (gamma / gamma.sum())[None, :, None, None]), atol=1e-6)


# --- SOCA: covariance pooling and its matrix square root -------------------------------------


def test_soca_covariance_and_square_root() -> None:
    x = torch.randn(3, 16, 7, 5) * torch.linspace(0.5, 2, 16).view(1, 16, 1, 1)
    cov = covariance(x)
    for b in range(3):
        np.testing.assert_allclose(_np(cov[b]), np.cov(_np(x[b]).reshape(16, -1), bias=True), atol=1e-5)
    evals, evecs = np.linalg.eigh(_np(cov))
    root = np.einsum("bij,bj,bkj->bik", evecs, np.sqrt(np.clip(evals, 0, None)), evecs)
    # Enough iterations converge to the true square root; the paper's 5 are an approximation.
    np.testing.assert_allclose(_np(sqrtm_newton_schulz(cov.double(), 40, eps=0)), root, atol=1e-6)
    approx = _np(sqrtm_newton_schulz(cov, 5))
    assert np.abs(approx - root).max() / np.abs(root).max() < 0.2


def test_soca_gate_from_the_covariance_square_root() -> None:
    block = SOCA(32, 4, 30)
    x = torch.randn(2, 32, 6, 6)
    with torch.no_grad():
        out = block(x)
    xn = _np(x).reshape(2, 32, -1)
    ref = np.empty(_np(x).shape)
    w1, b1 = _np(block.conv_du[0].weight)[:, :, 0, 0], _np(block.conv_du[0].bias)
    w2, b2 = _np(block.conv_du[2].weight)[:, :, 0, 0], _np(block.conv_du[2].bias)
    for b in range(2):
        evals, evecs = np.linalg.eigh(np.cov(xn[b], bias=True))
        root = evecs @ np.diag(np.sqrt(np.clip(evals, 0, None))) @ evecs.T
        z = root.mean(axis=0)  # (1/C) sum over rows
        s = _sigmoid(w2 @ np.maximum(w1 @ z + b1, 0) + b2)
        ref[b] = _np(x[b]) * s[:, None, None]
    np.testing.assert_allclose(_np(out), ref, atol=1e-4)


def test_soca_constant_input_is_finite() -> None:
    with torch.no_grad():
        assert torch.isfinite(SOCA(32)(torch.ones(1, 32, 4, 4))).all()


# --- GAM: channel MLP at every position, then a 7x7 spatial gate -----------------------------


def test_gam_keeps_spatial_information_in_both_gates() -> None:
    block = GAM(32)
    _randomize_bn(block)
    block.eval()
    x = torch.randn(2, 32, 9, 10)
    with torch.no_grad():
        out = block(x)
        lin1, lin2 = block.channel[0], block.channel[2]
        h = torch.einsum("oc,nchw->nohw", lin1.weight, x) + lin1.bias.view(1, -1, 1, 1)
        mc = torch.sigmoid(torch.einsum("oc,nchw->nohw", lin2.weight, h.relu()) + lin2.bias.view(1, -1, 1, 1))
        x1 = x * mc
        s = block.spatial
        z = F.batch_norm(F.conv2d(x1, s[0].weight, s[0].bias, padding=3), s[1].running_mean, s[1].running_var,
                         s[1].weight, s[1].bias, False, 0.0, s[1].eps).relu()
        z = F.batch_norm(F.conv2d(z, s[3].weight, s[3].bias, padding=3), s[4].running_mean, s[4].running_var,
                         s[4].weight, s[4].bias, False, 0.0, s[4].eps)
        ref = x1 * torch.sigmoid(z)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert block.spatial[0].out_channels == 8  # rate 4


# --- MHSA: permutation equivariance without position encoding, and the memory refusal -------


def test_mhsa_without_position_encoding_is_permutation_equivariant() -> None:
    block = MHSA(32, 4, False).eval()
    x = torch.randn(2, 32, 6, 7)
    perm = torch.randperm(42)
    with torch.no_grad():
        out = block(x).flatten(2)
        out_p = block(x.flatten(2)[:, :, perm].view(2, 32, 6, 7)).flatten(2)
    torch.testing.assert_close(out_p, out[:, :, perm], rtol=1e-5, atol=1e-5)
    # With BoTNet's relative position logits the block knows where things are: a shuffle is no longer equivariant.
    pos = MHSA(32, 4, True).eval()
    with torch.no_grad():
        out = pos(x).flatten(2)
        out_p = pos(x.flatten(2)[:, :, perm].view(2, 32, 6, 7)).flatten(2)
    assert (out_p - out[:, :, perm]).abs().max() > 1e-3


def test_mhsa_position_logits_depend_only_on_the_offset() -> None:
    # Shifting the whole map by one column changes nothing for pairs that stay inside: relative, not absolute.
    block = MHSA(16, 2).eval()
    q = torch.randn(1, 2, 4, 6, 8)
    with torch.no_grad():
        logits = block._rel_logits(q, 4, 6).view(1, 2, 4, 6, 4, 6)
        shifted = block._rel_logits(torch.roll(q, 1, dims=3), 4, 6).view(1, 2, 4, 6, 4, 6)
    torch.testing.assert_close(shifted[:, :, :, 2:4, :, 3:5], logits[:, :, :, 1:3, :, 2:4])
    d = 8
    expected = (q[0, 1, 2, 3] * (block.rel_h[127 + 1 - 2] + block.rel_w[127 + 5 - 3])).sum()
    torch.testing.assert_close(logits[0, 1, 2, 3, 1, 5], expected.detach())
    assert block.rel_h.shape == (255, d)


def test_mhsa_refuses_an_attention_matrix_that_does_not_fit() -> None:
    block = MHSA(128)
    # P3 of a 640 px batch of 16: 16 x 4 x 6400^2 x 4 bytes = 9.8 GiB; checked before anything is allocated.
    x = torch.empty(16, 128, 80, 80, device="meta")
    with pytest.raises(RuntimeError) as info:
        block(x)
    msg = str(info.value)
    assert msg.startswith("MHSA: attention over a 80x80 feature map (batch 16, 4 heads) needs 9.8 GiB")
    assert "2 GiB limit" in msg and "P4/P5" in msg and "imgsz" in msg and "\n" not in msg
    assert block.attention_bytes(16, 80, 80) == 16 * 4 * 6400**2 * 4
    with torch.no_grad():  # P4 of the same batch fits: 16 x 4 x 1600^2 x 4 bytes = 0.6 GiB
        assert MHSA(128).to("meta")(torch.empty(16, 128, 40, 40, device="meta")).shape == (16, 128, 40, 40)
    with pytest.raises(RuntimeError, match=r"over the 0\.001 GiB limit"):
        MHSA(16, 4, True, 0.001)(torch.randn(1, 16, 24, 24))


# --- argument checks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ShuffleAttention(40, 8), r"^ShuffleAttention: channels 40 must be divisible by 2\*G = 16 \(G=8 groups\)$"),
        (lambda: ShuffleAttention(64), r"^ShuffleAttention: channels 64 must be divisible by 2\*G = 128 \(G=64 groups\)$"),
        (lambda: ShuffleAttention(64, 0), r"^ShuffleAttention: groups must be a positive int, got 0$"),
        (lambda: MHSA(30), r"^MHSA: channels 30 must be divisible by heads = 4$"),
        (lambda: MHSA(32, 0), r"^MHSA: heads must be a positive int, got 0$"),
        (lambda: MHSA(32, 4, "yes"), r"^MHSA: pos_enc must be True or False, got 'yes'$"),
        (lambda: MHSA(32, 4, True, 0), r"^MHSA: max_gib must be a positive number, got 0$"),
        (lambda: SKAttention(48), r"^SKAttention: channels 48 must be divisible by G = 32 \(grouped convolutions\)$"),
        (lambda: SKAttention(64, 0), r"^SKAttention: M \(branches\) must be a positive int, got 0$"),
        (lambda: S2Attention(30), r"^S2Attention: channels 30 must be divisible by 4 \(one quarter per shift direction\)$"),
        (lambda: SimAM(16, -1), r"^SimAM: e_lambda must be a positive number, got -1$"),
        (lambda: CrissCrossAttention(4), r"^CrissCrossAttention: ratio 8 leaves no hidden channels for 4 input"),
        (lambda: CrissCrossAttention(64, 8, 0), r"^CrissCrossAttention: recurrence must be a positive int, got 0$"),
        (lambda: SOCA(8), r"^SOCA: ratio 16 leaves no hidden channels for 8 input channels"),
        (lambda: SOCA(64, 16, 2.5), r"^SOCA: iterations must be a positive int, got 2\.5$"),
        (lambda: GAM(64, 0), r"^GAM: rate must be a positive int, got 0$"),
        (lambda: NAMAttention(0), r"^NAMAttention: c1 \(input channels\) must be a positive int, got 0$"),
    ],
)
def test_bad_hyperparameters_raise(build, message: str) -> None:
    with pytest.raises(AttentionConfigError, match=message) as info:
        build()
    assert "\n" not in str(info.value)


def _variant(tmp_path, name: str, scale: str, rows: dict[int, list]) -> str:
    """A copy of models/yolov5-NAME.yaml with some rows replaced, named for the scale."""
    d = yaml.safe_load((MODELS / f"yolov5-{name}.yaml").read_text())
    for i, row in rows.items():
        d["head"][i - len(d["backbone"])] = row
    path = tmp_path / f"yolov5{scale}-{name}.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return str(path)


def test_divisibility_error_names_the_row_and_scale(tmp_path) -> None:
    # The paper's G = 64 needs 128 | C; P3 at scale n has 64 channels.
    path = _variant(tmp_path, "shuffleattention", "n", {24: [17, 1, "ShuffleAttention", []]})
    with pytest.raises(AttentionConfigError) as info:
        YOLO(path)
    msg = str(info.value)
    assert msg.startswith(f"row 24 of {path} (scale n): ShuffleAttention[] cannot be built on 64 channels: "
                          "ShuffleAttention: channels 64 must be divisible by 2*G = 128 (G=64 groups)")
    # The same rows build at scale s (128, 256, 512 channels).
    YOLO(_variant(tmp_path, "shuffleattention", "s", {24: [17, 1, "ShuffleAttention", []]}))


def test_heads_error_names_the_row_and_scale(tmp_path) -> None:
    path = _variant(tmp_path, "mhsa", "n", {25: [23, 1, "MHSA", [3]]})  # 256 channels at n, 3 heads
    with pytest.raises(AttentionConfigError, match=r"^row 25 of .* \(scale n\): MHSA\[3\] cannot be built on 256 "
                                                   r"channels: MHSA: channels 256 must be divisible by heads = 3"):
        YOLO(path)


# --- variant configs -------------------------------------------------------------------------

VARIANTS = [n.lower() for n in ZOO]


def _rows(name):
    d = yaml.safe_load((MODELS / f"{name}.yaml").read_text())
    return d["backbone"], d["head"]


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_keeps_the_base_rows_and_feeds_detect(name: str) -> None:
    base_backbone, base_head = _rows("yolov5")
    backbone, head = _rows(f"yolov5-{name}")
    assert backbone == base_backbone and head[:14] == base_head[:-1]
    block = next(b for b in ZOO if b.lower() == name)
    if name == "mhsa":  # P4 and P5 only: P3 at 640 px is 6400 positions
        assert [r[:3] for r in head[14:16]] == [[20, 1, block], [23, 1, block]]
        assert head[16] == [[17, 24, 25], 1, "Detect", ["nc"]]
    else:
        assert [r[:3] for r in head[14:17]] == [[17, 1, block], [20, 1, block], [23, 1, block]]
        assert head[17] == [[24, 25, 26], 1, "Detect", ["nc"]]


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("scale", ["n", "s"])
def test_variant_builds_and_runs(name: str, scale: str) -> None:
    model = YOLO(str(MODELS / f"yolov5{scale}-{name}.yaml")).model.eval()
    assert model.yaml["scale"] == scale
    with torch.no_grad():
        out, raw = model(torch.zeros(1, 3, 96, 128))
    assert out.shape == (1, 4 + 80, 12 * 16 + 6 * 8 + 3 * 4)
    assert torch.isfinite(out).all()
    n_blocks = sum(isinstance(m, get(next(b for b in ZOO if b.lower() == name))) for m in model.model)
    assert n_blocks == (2 if name == "mhsa" else 3)


@pytest.mark.slow
@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("scale", ["m", "l", "x"])
def test_variant_builds_at_larger_scales(name: str, scale: str) -> None:
    model = YOLO(str(MODELS / f"yolov5{scale}-{name}.yaml")).model.eval()
    with torch.no_grad():
        out, _ = model(torch.zeros(1, 3, 64, 64))
    assert torch.isfinite(out).all()


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", ZOO)
def test_exports_to_onnx_with_dynamic_shapes(name: str, tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    block = _wake(make(name)).eval()
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(block, (torch.randn(1, 64, 8, 12),), str(path), opset_version=17, dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}})
    session = ort.InferenceSession(str(path))
    for shape in [(1, 64, 8, 12), (2, 64, 5, 7)]:
        z = torch.randn(shape)
        with torch.no_grad():
            np.testing.assert_allclose(session.run(None, {"x": z.numpy()})[0], block(z).numpy(), rtol=1e-4, atol=1e-4)
