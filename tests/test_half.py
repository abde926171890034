"""Half precision: every registered block under fp16 inference and fp16 autocast (AMP), and whole variants in fp16.

Per block, neck-like shape and large-magnitude input pattern:
- fp16 inference: ``block.half()`` in eval mode on an fp16 input gives finite outputs, close to the fp32
  output of the same block (same fp16-rounded weights and input): ||out16 - out32|| <= NORM_TOL * ||out32||
  (2-norm over the whole output);
- AMP: under ``torch.autocast("cpu", dtype=AMP_DTYPE)`` (float16: CPU autocast supports it in torch 2.14;
  bfloat16 only where it does not) in train mode, forward and backward of a mean loss give a finite output,
  finite input and parameter gradients and finite BatchNorm statistics.
Per variant (every models/yolov5-<block>.yaml at scale n): the model in fp16, with its neck made to feed the
attention blocks values up to ~2e4, gives finite outputs close to fp32 (see large_neck).

The patterns go up to fp16's limit (65504): randn * 1e3 and * 1e4, values of magnitude near 6e4 with random
signs, a constant map, a unit map with one 6e4 spike. fp16 cannot hold an activation above 65504 however it
is computed, so an input is first scaled down, if needed, until the fp32 forward keeps every activation (the
input, each submodule's output, the block's output) below ACT_LIMIT; the fitted input must stay large
(>= MIN_PEAK). What remains is what the blocks must survive: overflow in their own reductions, products and
exponentials of in-range activations (sums of squares, q.k products, softmax).

NORM_TOL: gates are sigmoids of logits that grow with the input, and fp16 rounds a logit L to about
2^-11 * sum|terms of L|; near L = 0 that can flip a gate, and at magnitude 1e4 a few per mille of the
positions are that near. The 2-norm error from those flips is a few per cent (at most 0.05 here, GAM);
an overflow that saturates or flips whole channels gives 0.3 and more.

The default run covers a (2, 128, 10, 10) batch and a (1, 64, 40, 40) map; -m slow adds (1, 256, 20, 20)
and (1, 64, 80, 80) (about 5 minutes on 2 CPU cores).

The blocks keep an fp16 precaution only where a case here fails without it (each one removed in turn):
- CA, conv1 + BN + h-swish in float32 with autocast off: test_autocast_forward_backward_is_finite
  [CA-2x128x10x10-constant] (a flat map: BN's backward scales by 1/sqrt(eps), conv1's fp16 weight gradient overflows);
- SimAM, energy in float32: both tests, every pattern but constant, both shapes, and the SimAM variant;
- MHSA and CrissCrossAttention, logits and softmax in float32: test_half_inference_* (every pattern and shape) and
  the variants; with autocast left on, test_autocast_* (every pattern and shape);
- SKAttention, sum_m W mean(U_m) instead of W mean(sum_m U_m): test_half_inference_*[SKAttention-*-near_max];
- SOCA, covariance and square root in float32: both tests, every pattern but constant, and the variant; with
  autocast left on, test_autocast_*[SOCA-*] for every pattern but constant.
SE, ECA, CBAM and the other blocks need none: torch's mean accumulates fp16 in float32, and CBAM's sum of two
in-range MLP outputs can overflow only into a sigmoid, which saturates as it would in float32.
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from torch import nn
from ultralytics import YOLO

import attention

from conftest import BLOCKS as VARIANT_BLOCKS, MODELS

FP16_MAX = float(torch.finfo(torch.float16).max)  # 65504
ACT_LIMIT = 6.0e4  # fp32 activations above this are out of fp16's reach: the input is scaled down first
MIN_PEAK = 1e3  # a fitted input keeps at least this magnitude, or the case says nothing about large values
NORM_TOL = 0.1
# ECA's gate logits are unnormalised sums of channel means: at descriptors near 1e4 the ~1e-3 relative error that
# the fp16 layers before it leave in its input moves logits by several units and flips the gates near 0, whatever
# precision the gate itself is computed in (float32 gates were tried: no change). Over 6 initial draws the ECA
# variant's error was 0.03-0.20 (the base yolov5n: 0.04), finite everywhere; no overflow is involved.
VARIANT_TOL = {"ECA": 0.25}
PATTERNS = ["randn1e3", "randn1e4", "near_max", "constant", "spike"]
SMALL, P3 = (2, 128, 10, 10), (1, 64, 40, 40)  # a P4/P5-like batch; a P3-sized map (sums over 1600 positions)
# (shape, patterns) run by default; the rest of the grid is marked slow (-m slow).
DEFAULT = [(SMALL, PATTERNS), (P3, PATTERNS)]
SLOW = [((1, 256, 20, 20), PATTERNS), ((1, 64, 80, 80), PATTERNS)]  # P5 of s/m scale; P3 at 640 px


def _amp_dtype() -> torch.dtype:
    """float16 if CPU autocast lowers a convolution to it in this torch (it does in 2.14), else bfloat16."""
    conv = nn.Conv2d(2, 2, 1)
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            if conv(torch.randn(1, 2, 2, 2)).dtype == torch.float16:
                return torch.float16
    except (RuntimeError, TypeError):
        pass
    return torch.bfloat16


AMP_DTYPE = _amp_dtype()

def cases(test: str) -> list:
    out = []
    for grid, slow in ((DEFAULT, False), (SLOW, True)):
        for shape, patterns in grid:
            for name in attention.available():
                for kind in patterns:
                    marks = [pytest.mark.slow] if slow else []
                    sid = f"{name}-{'x'.join(map(str, shape))}-{kind}"
                    out.append(pytest.param(name, shape, kind, marks=marks, id=sid))
    return out


def make(name: str, c: int) -> nn.Module:
    """The block with the paper's defaults (ShuffleAttention: 8 groups, so 64 channels divide), gates opened."""
    torch.manual_seed(0)
    block = attention.get(name)(c, 8) if name == "ShuffleAttention" else attention.get(name)(c)
    with torch.no_grad():
        for pname, p in block.named_parameters():
            if pname in {"gamma", "cweight", "sweight"}:  # the authors' zero-init gates: open them
                p.uniform_(0.5, 1.5)
    return block


def pattern(kind: str, shape: tuple[int, ...]) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    r = torch.randn(shape, generator=g)
    if kind == "randn1e3":
        return r * 1e3
    if kind == "randn1e4":
        return r * 1e4
    if kind == "near_max":  # |x| in [~5.98e4, 6e4], random signs
        return torch.where(r >= 0, 1.0, -1.0) * (6e4 - 50 * r.abs().clamp(max=4))
    if kind == "constant":
        return torch.full(shape, 3e4)
    if kind == "spike":  # a unit map with one huge value
        x = r.clone()
        x[0, shape[1] // 2, shape[2] // 2, shape[3] // 3] = 6e4
        return x
    raise ValueError(kind)


def peak_activation(block: nn.Module, x: torch.Tensor) -> float:
    """The largest |value| of x, of every submodule's tensor output and of the block's output (fp32 forward)."""
    peaks = [x.abs().max().item()]

    def hook(_m, _i, out):
        if isinstance(out, torch.Tensor) and out.is_floating_point():
            peaks.append(out.detach().abs().max().item())

    handles = [m.register_forward_hook(hook) for m in block.modules()]
    try:
        with torch.no_grad():
            block(x)
    finally:
        for h in handles:
            h.remove()
    return max(peaks)


@functools.lru_cache(maxsize=None)
def fitted_input(name: str, shape: tuple[int, ...], kind: str, train: bool) -> torch.Tensor:
    """The pattern, scaled down until the fp32 forward's activations fit ACT_LIMIT, rounded to fp16."""
    x = pattern(kind, shape)
    probe = make(name, shape[1]).train(train)
    for _ in range(6):
        peak = peak_activation(copy.deepcopy(probe), x)  # a copy: training-mode BN must not drift
        if peak <= ACT_LIMIT:
            break
        x = x * (0.9 * ACT_LIMIT / peak)
    assert peak <= ACT_LIMIT, f"could not fit {kind} into fp16 range for {name}: peak {peak:.3g}"
    assert x.abs().max() >= MIN_PEAK, f"{kind} had to shrink to {x.abs().max():.3g} for {name}"
    return x.half()


# --- fp16 inference: finite, and close to fp32 --------------------------------------------------


@pytest.mark.parametrize(("name", "shape", "kind"), cases("inference"))
def test_half_inference_is_finite_and_close_to_float(name: str, shape, kind: str) -> None:
    x = fitted_input(name, shape, kind, False)
    block16 = make(name, shape[1]).eval().half()
    block32 = copy.deepcopy(block16).float()  # the same fp16-rounded weights: only the arithmetic differs
    with torch.no_grad():
        out16 = block16(x)
        out32 = block32(x.float())
    assert out16.dtype == torch.float16 and out16.shape == x.shape
    bad = (~torch.isfinite(out16)).sum().item()
    assert bad == 0, f"{bad} non-finite outputs of {out16.numel()}"
    assert out32.abs().max() <= FP16_MAX  # by the fitting: the fp32 result is representable
    err = ((out16.float() - out32).norm() / out32.norm().clamp_min(1e-30)).item()
    assert err <= NORM_TOL, f"relative 2-norm error {err:.3g} > {NORM_TOL}"


# --- AMP training step: finite ------------------------------------------------------------------


@pytest.mark.parametrize(("name", "shape", "kind"), cases("amp"))
def test_autocast_forward_backward_is_finite(name: str, shape, kind: str) -> None:
    # The input is fp16, as a neck block receives it from the autocast convolution before it.
    x = fitted_input(name, shape, kind, True).clone().requires_grad_()
    block = make(name, shape[1]).train()
    with torch.autocast("cpu", dtype=AMP_DTYPE):
        out = block(x)
    assert torch.isfinite(out).all(), f"{(~torch.isfinite(out)).sum().item()} non-finite outputs"
    # A mean loss at scale 1, as detection losses are: the gradients at their true size. (A GradScaler
    # multiplies them up until they overflow and backs off; an inf or NaN at scale 1 is the block's own.)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
    (out.float() * g).mean().backward()
    assert torch.isfinite(x.grad).all(), f"{(~torch.isfinite(x.grad)).sum().item()} non-finite input gradients"
    bad = [n for n, p in block.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not bad, f"missing or non-finite gradients: {bad}"
    for bname, buf in block.named_buffers():  # BatchNorm's running statistics took this batch in
        if buf.is_floating_point():
            assert torch.isfinite(buf).all(), bname


# --- whole variants ----------------------------------------------------------------------------

MODEL_IMGSZ = 160
NECK_PEAK = 2e4  # what the C3 before each attention block is set to put out


def _block_types() -> tuple[type, ...]:
    return tuple(attention.get(n) for n in attention.available())


def large_neck(model: nn.Module, x: torch.Tensor) -> None:
    """Give a random-init model the statistics of a trained one, with large activations at the attention blocks.

    At random init the neck's activations decay to ~10 whatever the image's scale, so the blocks would never
    see large values. Here every BatchNorm takes its running statistics from x (each BN output is then
    standardized, as in a trained network), and the BN ending each C3 that feeds an attention block gets a
    scale that makes that C3 put out values up to ~NECK_PEAK.
    """
    feeders = {id(model.model[m.f].cv3.bn) for m in model.model if isinstance(m, _block_types())}

    def standardize(bn: nn.BatchNorm2d, args) -> None:
        t = args[0]
        bn.running_mean.copy_(t.mean(dim=(0, 2, 3)))
        bn.running_var.copy_(t.var(dim=(0, 2, 3), unbiased=False))
        if id(bn) in feeders:  # standardized values reach ~4 on a neck map
            bn.weight.fill_(NECK_PEAK / 4)
            bn.bias.zero_()

    handles = [m.register_forward_pre_hook(standardize) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()


def _variant_cases() -> list:
    out = []
    for b in [*VARIANT_BLOCKS, *(b for b in attention.available() if b not in VARIANT_BLOCKS)]:
        out.append(pytest.param(b, id=b))
    return out


@pytest.mark.parametrize("block", _variant_cases())
def test_variant_half_inference_with_large_neck_activations(block: str) -> None:
    torch.manual_seed(0)  # the model's initial weights: the error bound is for this model, not for any draw
    model = YOLO(str(MODELS / f"yolov5n-{block.lower()}.yaml")).model.eval()
    x = torch.rand(1, 3, MODEL_IMGSZ, MODEL_IMGSZ, generator=torch.Generator().manual_seed(0)).half().float()
    large_neck(model, x)
    blocks = [m for m in model.model if isinstance(m, _block_types())]
    seen = []
    handles = [m.register_forward_pre_hook(lambda _m, args: seen.append(args[0].abs().max().item())) for m in blocks]
    assert peak_activation(model, x) <= ACT_LIMIT  # every activation of the fp32 model fits fp16
    for h in handles:
        h.remove()
    assert max(seen) >= NECK_PEAK / 4, seen  # the blocks do see large inputs
    with torch.no_grad():
        expected = model(x)[0]
        out = model.half()(x.half())[0].float()
    bad = (~torch.isfinite(out)).sum().item()
    assert bad == 0, f"{bad} non-finite outputs of {out.numel()}"
    err = ((out - expected).norm() / expected.norm()).item()
    tol = VARIANT_TOL.get(block, NORM_TOL)
    assert err <= tol, f"relative 2-norm error {err:.3g} > {tol}"
