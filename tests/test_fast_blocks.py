"""Every block's fast forward equals its straightforward definition (attention.reference).

Outputs within 1e-5 (fp32; absolute, plus 1e-5 relative), in eval and in training mode; gradients of
the input and of every parameter within 1e-9 relative in float64, and within 1e-3 relative in float32
(they are sums over the whole map, whose float32 rounding follows the summation order); and in
training mode CA's BatchNorm running statistics end up the same.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from attention import reference
from attention.blocks import CA, CBAM, ECA, SE

from conftest import REPO

OUT_TOL = dict(rtol=1e-5, atol=1e-5)
GRAD_TOL = dict(rtol=1e-3, atol=1e-4)  # float32 sums over the map, in any order; float64 checks the math

# Odd sizes, H != W, batch 1..3, a one-row map, and a small version of each neck shape.
SHAPES = [(2, 16, 8, 8), (1, 32, 7, 11), (3, 24, 5, 9), (2, 64, 1, 6), (1, 32, 20, 20), (2, 64, 10, 10)]

MAKERS = {
    "SE": [lambda c: SE(c, 4), lambda c: SE(c)],
    "ECA": [lambda c: ECA(c), lambda c: ECA(c, 1, 1)],  # kernel 3 or 5, and 5 or 7
    "CA": [lambda c: CA(c, 4), lambda c: CA(c)],
    "CBAM": [lambda c: CBAM(c, 4, 3), lambda c: CBAM(c)],
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
def test_fast_equals_reference(name: str, i: int, shape: tuple[int, ...], mode: str) -> None:
    fast = make(name, i, shape[1])
    ref = copy.deepcopy(fast)
    fast.train(mode == "train"), ref.train(mode == "train")
    x = torch.randn(shape)
    g = torch.randn(shape)

    # Gradients are compared in float64 as well: a weight's gradient is a sum over the whole map, and
    # in float32 its rounding follows the summation order (threads, deterministic-algorithm mode set by
    # an earlier in-process training run), which says nothing about the fast form's math.
    fast64, ref64 = copy.deepcopy(fast).double(), copy.deepcopy(ref).double()
    xf = x.clone().requires_grad_()
    xr = x.clone().requires_grad_()
    out_f, out_r = fast(xf), reference.REFERENCES[name](ref, xr)
    torch.testing.assert_close(out_f, out_r, **OUT_TOL)

    gf, gr = grads(out_f, xf, fast, g), grads(out_r, xr, ref, g)
    assert gf.keys() == gr.keys()
    for key in gf:
        torch.testing.assert_close(gf[key], gr[key], **GRAD_TOL, msg=lambda m: f"grad of {key}: {m}")
    x64, g64 = x.double().requires_grad_(), g.double()
    x64r = x.double().requires_grad_()
    g64f = grads(fast64(x64), x64, fast64, g64)
    g64r = grads(reference.REFERENCES[name](ref64, x64r), x64r, ref64, g64)
    for key in g64f:
        torch.testing.assert_close(g64f[key], g64r[key], rtol=1e-9, atol=1e-10, msg=lambda m: f"float64 grad of {key}: {m}")

    # Same buffers afterwards: training-mode BN updated its running statistics alike.
    for (key, bf), (_, br) in zip(fast.state_dict().items(), ref.state_dict().items()):
        torch.testing.assert_close(bf, br, rtol=1e-6, atol=1e-6, msg=lambda m: f"{key}: {m}")


@pytest.mark.parametrize("shape", SHAPES[:3], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name, i", CASES)
def test_inference_path_equals_reference_and_leaves_input_alone(name: str, i: int, shape: tuple[int, ...]) -> None:
    # Without autograd the fast forms multiply into their own buffers in place: never into x.
    block = make(name, i, shape[1]).eval()
    x = torch.randn(shape)
    keep = x.clone()
    with torch.no_grad():
        out = block(x)
        expected = reference.REFERENCES[name](block, x)
    assert torch.equal(x, keep)
    assert out.data_ptr() != x.data_ptr()
    torch.testing.assert_close(out, expected, **OUT_TOL)
    with torch.inference_mode():
        torch.testing.assert_close(block(x), expected, **OUT_TOL)


@pytest.mark.parametrize("name, i", CASES)
def test_channels_last_input(name: str, i: int) -> None:
    block = make(name, i, 32).eval()
    x = torch.randn(2, 32, 9, 13).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(block(x), reference.REFERENCES[name](block, x.contiguous()), **OUT_TOL)


@pytest.mark.parametrize("name", list(MAKERS))
def test_state_dict_keys_unchanged(name: str) -> None:
    # Fast forms add no parameters or buffers: checkpoints of either form load into the other.
    expected = {
        "SE": ["fc1.weight", "fc2.weight"],
        "ECA": ["conv.weight"],
        "CA": ["conv1.weight", "conv1.bias", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
               "bn1.num_batches_tracked", "conv_h.weight", "conv_h.bias", "conv_w.weight", "conv_w.bias"],
        "CBAM": ["mlp.0.weight", "mlp.2.weight", "spatial.weight"],
    }[name]
    assert list(MAKERS[name][1](64).state_dict()) == expected


def test_reference_module_wraps_a_block() -> None:
    block = make("CBAM", 1, 32).eval()
    x = torch.randn(1, 32, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(reference.Reference(block)(x), reference.cbam(block, x), rtol=0, atol=0)


def test_cbam_under_torch_compile() -> None:
    # Inductor (the default backend) compiles CBAM on a CPU in about 20 s (cold cache) here.
    block = make("CBAM", 1, 32).eval()
    x = torch.randn(1, 32, 12, 12)
    compiled = torch.compile(block)
    with torch.no_grad():
        out = compiled(x)
        expected = reference.cbam(block, x)
    torch.testing.assert_close(out, expected, **OUT_TOL)


@pytest.mark.parametrize(
    "script, args, expect",
    [
        ("blocks.py", ["--batch", "1", "--shapes", "P5", "--blocks", "SE", "CBAM", "--repeats", "1"], "targets (CPU"),
        ("overhead.py", ["--scale", "n", "--imgsz", "64", "--repeats", "1"], "A/A noise"),
        ("models.py", ["--scale", "n", "--imgsz", "64", "--blocks", "CA", "--repeats", "1", "--train-repeats", "1",
                       "--train-batch", "1"], "yolov5n-ca"),
    ],
)
def test_benchmark_scripts_run(script: str, args: list[str], expect: str) -> None:
    # Smoke test with the smallest settings: the scripts keep working as the blocks change.
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "YOLO_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert expect in proc.stdout and "machine: " in proc.stdout
