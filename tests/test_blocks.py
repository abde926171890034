"""The four attention blocks equal their paper definitions; every block is a pure function of its input.

Each formula below recomputes the block's output in float64 numpy from the block's own weights,
never through the block's forward or its submodules, so a wrong wiring cannot hide in both.
(tests/test_blocks_vs_oracles.py holds the blocks to their literal torch definitions, gradients included.)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from ultralytics import YOLO

import attention
from attention.blocks import CA, CBAM, ECA, SE
from attention.blocks.registry import AttentionConfigError, get

from conftest import MODELS

SHAPES = [(2, 16, 8, 8), (2, 32, 7, 11), (1, 64, 13, 5), (2, 24, 1, 9)]
TOL = 1e-5


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _relu(z: np.ndarray) -> np.ndarray:
    return np.maximum(z, 0.0)


def _check(block: nn.Module, x: torch.Tensor, expected: np.ndarray) -> None:
    with torch.no_grad():
        out = block(x)
    assert out.shape == x.shape
    np.testing.assert_allclose(_np(out), expected, rtol=0, atol=TOL)


# --- formulas --------------------------------------------------------------------------------


def se_formula(block: SE, x: torch.Tensor) -> np.ndarray:
    xn = _np(x)
    w1, w2 = _np(block.fc1.weight), _np(block.fc2.weight)  # (C//r, C), (C, C//r)
    s = _sigmoid(_relu(xn.mean(axis=(2, 3)) @ w1.T) @ w2.T)  # (N, C)
    return xn * s[:, :, None, None]


def eca_formula(block: ECA, x: torch.Tensor) -> np.ndarray:
    xn = _np(x)
    w = _np(block.conv.weight).reshape(-1)  # (k,)
    k = w.size
    pad = (k - 1) // 2
    g = xn.mean(axis=(2, 3))  # (N, C)
    n, c = g.shape
    s = np.zeros_like(g)
    for ch in range(c):  # cross-correlation over the channel axis, zeros outside [0, C)
        for j in range(k):
            src = ch + j - pad
            if 0 <= src < c:
                s[:, ch] += w[j] * g[:, src]
    return xn * _sigmoid(s)[:, :, None, None]


def _hswish(z: np.ndarray) -> np.ndarray:
    return z * np.clip(z + 3.0, 0.0, 6.0) / 6.0


def ca_formula(block: CA, x: torch.Tensor, train_bn: bool = False) -> np.ndarray:
    xn = _np(x)
    h = xn.shape[2]
    y = np.concatenate([xn.mean(axis=3), xn.mean(axis=2)], axis=2)  # (N, C, H+W)
    w1 = _np(block.conv1.weight)[:, :, 0, 0]
    z = np.einsum("mc,ncl->nml", w1, y) + _np(block.conv1.bias)[None, :, None]
    bn = block.bn1
    if train_bn:  # batch statistics over N and all H+W positions together, biased variance
        mean, var = z.mean(axis=(0, 2)), z.var(axis=(0, 2))
    else:
        mean, var = _np(bn.running_mean), _np(bn.running_var)
    z = (z - mean[None, :, None]) / np.sqrt(var[None, :, None] + bn.eps)
    z = z * _np(bn.weight)[None, :, None] + _np(bn.bias)[None, :, None]
    z = _hswish(z)
    y_h, y_w = z[:, :, :h], z[:, :, h:]
    wh, ww = _np(block.conv_h.weight)[:, :, 0, 0], _np(block.conv_w.weight)[:, :, 0, 0]
    a_h = _sigmoid(np.einsum("cm,nml->ncl", wh, y_h) + _np(block.conv_h.bias)[None, :, None])  # (N, C, H)
    a_w = _sigmoid(np.einsum("cm,nml->ncl", ww, y_w) + _np(block.conv_w.bias)[None, :, None])  # (N, C, W)
    return xn * a_w[:, :, None, :] * a_h[:, :, :, None]


def cbam_formula(block: CBAM, x: torch.Tensor, use_max: bool = True) -> np.ndarray:
    xn = _np(x)
    w1, w2 = _np(block.mlp[0].weight)[:, :, 0, 0], _np(block.mlp[2].weight)[:, :, 0, 0]

    def mlp(v: np.ndarray) -> np.ndarray:  # (N, C) -> (N, C)
        return _relu(v @ w1.T) @ w2.T

    logits = mlp(xn.mean(axis=(2, 3)))
    if use_max:
        logits = logits + mlp(xn.max(axis=(2, 3)))
    x1 = xn * _sigmoid(logits)[:, :, None, None]

    desc = np.stack([x1.mean(axis=1), x1.max(axis=1)], axis=1)  # (N, 2, H, W)
    w = _np(block.spatial.weight)[0]  # (2, k, k)
    k = w.shape[-1]
    p = k // 2
    n, _, hh, ww = desc.shape
    padded = np.zeros((n, 2, hh + 2 * p, ww + 2 * p))
    padded[:, :, p : p + hh, p : p + ww] = desc
    s = np.zeros((n, hh, ww))
    for i in range(k):
        for j in range(k):
            s += np.einsum("c,nchw->nhw", w[:, i, j], padded[:, :, i : i + hh, j : j + ww])
    return x1 * _sigmoid(s)[:, None]


# --- the blocks against them -----------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_se_matches_formula(shape: tuple[int, ...]) -> None:
    block = SE(shape[1], 4).eval()
    x = torch.randn(shape)
    _check(block, x, se_formula(block, x))


@pytest.mark.parametrize("shape", SHAPES)
def test_eca_matches_formula(shape: tuple[int, ...]) -> None:
    block = ECA(shape[1], b=1, gamma=1).eval()  # gamma=1 gives k of 5 or 7: padding is exercised
    x = torch.randn(shape)
    _check(block, x, eca_formula(block, x))


@pytest.mark.parametrize(
    ("channels", "b", "gamma", "k"),
    [
        # (log2(C) + b) / gamma, truncated, then made odd; worked by hand.
        (1, 1, 2, 1),  # 0.5 -> 0 -> 1
        (3, 1, 2, 1),  # 1.29 -> 1
        (8, 1, 2, 3),  # 2 -> 3
        (16, 1, 2, 3),  # 2.5 -> 2 -> 3
        (32, 1, 2, 3),  # 3
        (64, 1, 2, 3),  # 3.5 -> 3
        (96, 1, 2, 3),  # 3.79 -> 3
        (128, 1, 2, 5),  # 4 -> 5
        (192, 1, 2, 5),  # 4.29 -> 4 -> 5
        (256, 1, 2, 5),  # 4.5 -> 4 -> 5
        (384, 1, 2, 5),  # 4.79 -> 4 -> 5
        (512, 1, 2, 5),  # 5
        (768, 1, 2, 5),  # 5.29 -> 5
        (1024, 1, 2, 5),  # 5.5 -> 5
        (2048, 1, 2, 7),  # 6 -> 7
        (64, 1, 1, 7),  # 7
        (256, 2, 3, 3),  # 3.33 -> 3
        (16, 0, 2, 3),  # 2 -> 3
    ],
)
def test_eca_kernel_size(channels: int, b: float, gamma: float, k: int) -> None:
    block = ECA(channels, b, gamma)
    assert block.kernel_size == k
    assert block.conv.weight.shape == (1, 1, k)
    assert block.conv.padding == ((k - 1) // 2,)


def test_eca_defaults_are_the_papers() -> None:
    assert ECA(256).kernel_size == ECA(256, 1, 2).kernel_size == 5


def _randomize_bn(bn: nn.BatchNorm2d) -> None:
    with torch.no_grad():
        bn.running_mean.uniform_(-1.0, 1.0)
        bn.running_var.uniform_(0.3, 3.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)


@pytest.mark.parametrize("shape", SHAPES)
def test_ca_matches_formula_eval(shape: tuple[int, ...]) -> None:
    block = CA(shape[1], reduction=4)
    _randomize_bn(block.bn1)
    block.eval()
    x = torch.randn(shape)
    _check(block, x, ca_formula(block, x))
    # The running statistics are really used: the block with identity BN differs.
    with torch.no_grad():
        ref_plain = CA(shape[1], reduction=4).eval()
        ref_plain.load_state_dict(block.state_dict())
        ref_plain.bn1.reset_running_stats()
        assert not torch.allclose(ref_plain(x), block(x), atol=1e-3)


def test_ca_matches_formula_train_bn() -> None:
    # In training mode BN normalises rows and columns together, which is why they are concatenated.
    block = CA(32, reduction=4)
    _randomize_bn(block.bn1)
    block.train()
    x = torch.randn(2, 32, 7, 11)
    _check(block, x, ca_formula(block, x, train_bn=True))


def test_ca_mip_floor() -> None:
    assert CA(64).conv1.out_channels == 8  # 64 // 32 = 2, floored up to 8
    assert CA(512).conv1.out_channels == 16
    assert CA(512, 8).conv1.out_channels == 64


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kernel", [3, 7])
def test_cbam_matches_formula(shape: tuple[int, ...], kernel: int) -> None:
    block = CBAM(shape[1], ratio=4, kernel=kernel).eval()
    x = torch.randn(shape)
    _check(block, x, cbam_formula(block, x))


def test_cbam_one_shared_mlp_and_max_branch() -> None:
    block = CBAM(32, ratio=4).eval()
    # Exactly one MLP (two 1x1 convs) plus the spatial conv: the two pooled branches share weights.
    assert [name for name, _ in block.named_parameters()] == ["mlp.0.weight", "mlp.2.weight", "spatial.weight"]
    assert sum(isinstance(m, nn.Conv2d) for m in block.modules()) == 3
    x = torch.randn(2, 32, 9, 7)
    with torch.no_grad():
        out = _np(block(x))
    # Dropping the max-pooled branch changes the result.
    assert np.abs(out - cbam_formula(block, x, use_max=False)).max() > 1e-3
    # Two inputs with the same per-channel mean but different per-channel maxima differ.
    y = x.clone()
    y[:, :, 0, 0] += 5.0
    y[:, :, 0, 1] -= 5.0
    assert torch.allclose(x.mean(dim=(2, 3)), y.mean(dim=(2, 3)), atol=1e-6)
    with torch.no_grad():
        mc = lambda t: torch.sigmoid(block.mlp(t.mean((2, 3), keepdim=True)) + block.mlp(t.amax((2, 3), keepdim=True)))  # noqa: E731
        assert not torch.allclose(mc(x), mc(y), atol=1e-3)


def test_cbam_is_the_papers_not_ultralytics() -> None:
    assert get("CBAM") is CBAM
    assert CBAM.__module__ == "attention.blocks.cbam"


# --- structure -------------------------------------------------------------------------------


def _n_params(block: nn.Module) -> int:
    return sum(p.numel() for p in block.parameters())


@pytest.mark.parametrize("c", [16, 64, 256])
def test_parameter_counts(c: int) -> None:
    assert _n_params(SE(c)) == 2 * c * (c // 16)
    assert _n_params(SE(c, 4)) == 2 * c * (c // 4)
    assert _n_params(ECA(c)) == ECA(c).kernel_size
    mip = max(8, c // 32)
    # conv1 (weight + bias), BN (weight + bias), conv_h and conv_w (weight + bias each)
    assert _n_params(CA(c)) == (c * mip + mip) + 2 * mip + 2 * (mip * c + c)
    assert _n_params(CBAM(c)) == 2 * c * (c // 8) + 2 * 7 * 7
    assert _n_params(CBAM(c, 4, 3)) == 2 * c * (c // 4) + 2 * 3 * 3


BLOCKS = [
    pytest.param(lambda: SE(32), id="SE"),
    pytest.param(lambda: ECA(32), id="ECA"),
    pytest.param(lambda: CA(32), id="CA"),
    pytest.param(lambda: CBAM(32), id="CBAM"),
]


@pytest.mark.parametrize("make", BLOCKS)
def test_registered_under_class_name(make) -> None:
    block = make()
    assert get(type(block).__name__) is type(block)


@pytest.mark.parametrize("make", BLOCKS)
def test_gradients_reach_every_parameter(make) -> None:
    block = make().train()
    x = torch.randn(2, 32, 7, 9, requires_grad=True)
    (block(x) * torch.randn(2, 32, 7, 9)).sum().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.filterwarnings("ignore:`torch.jit.trace:FutureWarning")
@pytest.mark.filterwarnings("error::torch.jit.TracerWarning")  # no shape baked in as a constant
@pytest.mark.parametrize("make", BLOCKS)
def test_traces_and_generalises_across_shapes(make) -> None:
    block = make().eval()
    x = torch.randn(2, 32, 8, 12)
    with torch.no_grad():
        traced = torch.jit.trace(block, x)
        for shape in [(2, 32, 8, 12), (1, 32, 5, 7), (3, 32, 11, 4)]:
            z = torch.randn(shape)
            torch.testing.assert_close(traced(z), block(z), rtol=0, atol=1e-6)


def _any_block(name: str, c: int = 64) -> nn.Module:
    """Any registered block with the paper's defaults (ShuffleAttention: 8 groups, so 64 channels divide)."""
    return attention.get(name)(c, 8) if name == "ShuffleAttention" else attention.get(name)(c)


@pytest.mark.parametrize("name", attention.available())
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_every_submodule_is_used_and_forward_keeps_no_state(name: str, mode: str) -> None:
    block = _any_block(name).train(mode == "train")
    leaves = {n: m for n, m in block.named_modules() if n and not list(m.children())}
    called = set()
    for n, m in leaves.items():
        m.register_forward_hook(lambda _m, _i, _o, n=n: called.add(n))
    attrs = set(vars(block))
    x = torch.randn(2, 64, 6, 7)
    block(x)
    assert called == set(leaves), f"built but never called: {sorted(set(leaves) - called)}"
    assert set(vars(block)) == attrs, "forward added attributes (a cache?)"


def test_ca_built_and_run_under_inference_mode() -> None:
    # Parameters created under inference_mode are inference tensors (no version counter): nothing may ask for one.
    with torch.inference_mode():
        block = CA(32, reduction=4).eval()
        x = torch.randn(2, 32, 7, 9)
        out = block(x)
    with torch.no_grad():
        assert torch.equal(block(x), out)


def test_ca_model_built_and_run_under_inference_mode() -> None:
    x = torch.rand(1, 3, 96, 128)
    with torch.inference_mode():
        model = YOLO(str(MODELS / "yolov5n-ca.yaml")).model.eval()
        out = model(x)[0]
    with torch.no_grad():
        assert torch.equal(model(x)[0], out)


# --- argument checks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: SE(0), r"^SE: c1 \(input channels\) must be a positive int, got 0$"),
        (lambda: SE(16.0), r"^SE: c1 \(input channels\) must be a positive int, got 16\.0$"),
        (lambda: SE(True), r"^SE: c1 \(input channels\) must be a positive int, got True$"),
        (lambda: SE(16, 0), r"^SE: ratio must be a positive int, got 0$"),
        (lambda: SE(16, -4), r"^SE: ratio must be a positive int, got -4$"),
        (lambda: SE(16, 1.5), r"^SE: ratio must be a positive int, got 1\.5$"),
        (lambda: SE(16, True), r"^SE: ratio must be a positive int, got True$"),
        (
            lambda: SE(16, 32),
            r"^SE: ratio 32 leaves no hidden channels for 16 input channels \(need ratio <= channels\)$",
        ),
        (lambda: ECA(-8), r"^ECA: c1 \(input channels\) must be a positive int, got -8$"),
        (lambda: ECA("64"), r"^ECA: c1 \(input channels\) must be a positive int, got '64'$"),
        (lambda: ECA(64, b="1"), r"^ECA: b must be a finite number, got '1'$"),
        (lambda: ECA(64, b=float("nan")), r"^ECA: b must be a finite number, got nan$"),
        (lambda: ECA(64, b=True), r"^ECA: b must be a finite number, got True$"),
        (lambda: ECA(64, gamma=0), r"^ECA: gamma must be a positive number, got 0$"),
        (lambda: ECA(64, gamma=-2), r"^ECA: gamma must be a positive number, got -2$"),
        (lambda: ECA(64, gamma=float("inf")), r"^ECA: gamma must be a positive number, got inf$"),
        (lambda: CA(0), r"^CA: c1 \(input channels\) must be a positive int, got 0$"),
        (lambda: CA(64, 0), r"^CA: reduction must be a positive int, got 0$"),
        (lambda: CA(64, 2.0), r"^CA: reduction must be a positive int, got 2\.0$"),
        (lambda: CA(64, False), r"^CA: reduction must be a positive int, got False$"),
        (lambda: CBAM(None), r"^CBAM: c1 \(input channels\) must be a positive int, got None$"),
        (lambda: CBAM(64, 0), r"^CBAM: ratio must be a positive int, got 0$"),
        (
            lambda: CBAM(4, 8),
            r"^CBAM: ratio 8 leaves no hidden channels for 4 input channels \(need ratio <= channels\)$",
        ),
        (lambda: CBAM(64, 8, 5), r"^CBAM: kernel must be 3 or 7, got 5$"),
        (lambda: CBAM(64, 8, 7.0), r"^CBAM: kernel must be 3 or 7, got 7\.0$"),
        (lambda: CBAM(64, 8, True), r"^CBAM: kernel must be 3 or 7, got True$"),
    ],
)
def test_bad_hyperparameters_raise(make, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        make()
    assert isinstance(info.value, AttentionConfigError)
    assert "\n" not in str(info.value)


def test_numpy_integers_are_accepted() -> None:
    # Channel counts computed with numpy (e.g. in a width-scaling script) are ordinary integers.
    block = SE(np.int64(32), np.int64(8))
    assert block.fc1.out_features == 4 and type(block.fc1.in_features) is int
    assert CBAM(np.int64(32), kernel=np.int64(3)).spatial.kernel_size == (3, 3)
