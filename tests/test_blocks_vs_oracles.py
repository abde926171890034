"""Every block's forward equals its oracle (tests/oracles.py), the literal definition.

Outputs within 1e-5 (float32; absolute, plus 1e-5 relative), in eval and in training mode; gradients
of the input and of every parameter within 1e-9 relative in float64, and within 1e-3 relative in
float32 (they are sums over the whole map, whose float32 rounding follows the summation order); in
training mode CA's BatchNorm running statistics end up the same.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from attention.blocks import CA, CBAM, ECA, SE

from oracles import ORACLES

OUT_TOL = dict(rtol=1e-5, atol=1e-5)
GRAD_TOL = dict(rtol=1e-3, atol=1e-4)  # float32 sums over the map, in any order; float64 checks the math

# Channels under and over 16 and 64, odd sizes, H != W, batch 1..3, one-row and one-pixel maps.
SHAPES = [(2, 8, 8, 8), (1, 24, 7, 11), (3, 16, 5, 9), (2, 64, 1, 6), (1, 96, 1, 1), (2, 80, 13, 10),
          (1, 32, 20, 20)]

MAKERS = {  # a small ratio, and the paper's defaults (ratios capped at C: 8 channels have no C // 16)
    "SE": [lambda c: SE(c, 4), lambda c: SE(c, min(16, c))],
    "ECA": [lambda c: ECA(c), lambda c: ECA(c, 1, 1)],  # kernel 3 or 5, and 5 or 7
    "CA": [lambda c: CA(c, 4), lambda c: CA(c)],
    "CBAM": [lambda c: CBAM(c, 4, 3), lambda c: CBAM(c, min(8, c))],
}
CASES = [pytest.param(name, i, id=f"{name}{i}") for name, makers in MAKERS.items() for i in range(len(makers))]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def make(name: str, i: int, c: int) -> nn.Module:
    block = MAKERS[name][i](c)
    with torch.no_grad():
        for p in block.parameters():  # larger than the default init, so every gate really varies
            p.uniform_(-1.0, 1.0)
        for m in block.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1.0, 1.0)
                m.running_var.uniform_(0.3, 3.0)
    return block


def grads(out: torch.Tensor, x: torch.Tensor, block: nn.Module, g: torch.Tensor) -> dict[str, torch.Tensor]:
    names, params = zip(*block.named_parameters())
    got = torch.autograd.grad(out, [x, *params], g)
    return dict(zip(("input", *names), got))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name, i", CASES)
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_block_equals_oracle(name: str, i: int, shape: tuple[int, ...], mode: str) -> None:
    block = make(name, i, shape[1]).train(mode == "train")
    twin = copy.deepcopy(block)  # the oracle's copy: training-mode BN updates its own running statistics
    oracle = ORACLES[name]
    x = torch.randn(shape)
    g = torch.randn(shape)

    # Gradients are compared in float64 as well: a weight's gradient is a sum over the whole map, and
    # in float32 its rounding follows the summation order, which says nothing about the block's math.
    block64, twin64 = copy.deepcopy(block).double(), copy.deepcopy(twin).double()
    xb = x.clone().requires_grad_()
    xo = x.clone().requires_grad_()
    out_b, out_o = block(xb), oracle(twin, xo)
    torch.testing.assert_close(out_b, out_o, **OUT_TOL)

    gb, go = grads(out_b, xb, block, g), grads(out_o, xo, twin, g)
    assert gb.keys() == go.keys()
    for key in gb:
        torch.testing.assert_close(gb[key], go[key], **GRAD_TOL, msg=lambda m: f"grad of {key}: {m}")
    x64b, x64o, g64 = x.double().requires_grad_(), x.double().requires_grad_(), g.double()
    g64b = grads(block64(x64b), x64b, block64, g64)
    g64o = grads(oracle(twin64, x64o), x64o, twin64, g64)
    for key in g64b:
        torch.testing.assert_close(g64b[key], g64o[key], rtol=1e-9, atol=1e-10, msg=lambda m: f"float64 grad of {key}: {m}")

    # Same buffers afterwards: training-mode BN updated its running statistics alike.
    for (key, bb), (_, bo) in zip(block.state_dict().items(), twin.state_dict().items()):
        torch.testing.assert_close(bb, bo, rtol=1e-6, atol=1e-6, msg=lambda m: f"{key}: {m}")


@pytest.mark.parametrize("shape", SHAPES[:3], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name, i", CASES)
def test_inference_equals_oracle_and_leaves_input_alone(name: str, i: int, shape: tuple[int, ...]) -> None:
    block = make(name, i, shape[1]).eval()
    x = torch.randn(shape)
    keep = x.clone()
    with torch.no_grad():
        out = block(x)
        expected = ORACLES[name](block, x)
    assert torch.equal(x, keep)
    torch.testing.assert_close(out, expected, **OUT_TOL)
    with torch.inference_mode():
        torch.testing.assert_close(block(x), expected, **OUT_TOL)


@pytest.mark.parametrize("name, i", CASES)
def test_channels_last_input(name: str, i: int) -> None:
    block = make(name, i, 32).eval()
    x = torch.randn(2, 32, 9, 13).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(block(x), ORACLES[name](block, x.contiguous()), **OUT_TOL)


@pytest.mark.parametrize("name", list(MAKERS))
def test_state_dict_keys_unchanged(name: str) -> None:
    # The keys of checkpoints trained earlier: they must keep loading.
    expected = {
        "SE": ["fc1.weight", "fc2.weight"],
        "ECA": ["conv.weight"],
        "CA": ["conv1.weight", "conv1.bias", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
               "bn1.num_batches_tracked", "conv_h.weight", "conv_h.bias", "conv_w.weight", "conv_w.bias"],
        "CBAM": ["mlp.0.weight", "mlp.2.weight", "spatial.weight"],
    }[name]
    assert list(MAKERS[name][1](64).state_dict()) == expected


def test_cbam_under_torch_compile() -> None:
    # Inductor (the default backend) compiles CBAM on a CPU in about 20 s (cold cache) here.
    block = make("CBAM", 1, 32).eval()
    x = torch.randn(1, 32, 12, 12)
    compiled = torch.compile(block)
    with torch.no_grad():
        out = compiled(x)
        expected = ORACLES["CBAM"](block, x)
    torch.testing.assert_close(out, expected, **OUT_TOL)
