"""Registered modules beyond attention blocks: channel-changing, repeated inside, several inputs, C3Attn, fusion."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from ultralytics import YOLO
from ultralytics.cfg import get_cfg

from attention.adapter.modules import C3Attn
from attention.blocks.fusion import WeightedFusion
from attention.blocks.gate import IdentityGate
from attention.blocks.registry import AttentionConfigError, register, unregister
from attention.training.build import build
from attention.training.transfer import transfer

SCALES = {"n": (0.33, 0.25), "s": (0.33, 0.50), "m": (0.67, 0.75)}


def scaled(c: int, scale: str) -> int:
    return math.ceil(min(c, 1024) * SCALES[scale][1] / 8) * 8


def depth(n: int, scale: str) -> int:
    return max(round(n * SCALES[scale][0]), 1) if n > 1 else n


class Widen(nn.Module):
    """A 1x1 convolution c1 -> c2 (a user's channel-changing module)."""

    def __init__(self, c1: int, c2: int, bias: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, 1, bias=bias)

    def forward(self, x):
        return self.conv(x)


class Stack(nn.Module):
    """n 3x3 convolutions c1 -> c2 -> ... -> c2, the row's number inside (like C3)."""

    def __init__(self, c1: int, c2: int, n: int = 1) -> None:
        super().__init__()
        self.n = n
        self.convs = nn.Sequential(*(nn.Conv2d(c1 if i == 0 else c2, c2, 3, padding=1) for i in range(n)))

    def forward(self, x):
        return self.convs(x)


class Mix(nn.Module):
    """Concatenate several inputs (resized to the first) and map them to c2 channels."""

    def __init__(self, c1s: list[int], c2: int) -> None:
        super().__init__()
        self.c1s = c1s
        self.conv = nn.Conv2d(sum(c1s), c2, 1)

    def forward(self, xs):
        size = xs[0].shape[-2:]
        return self.conv(torch.cat([nn.functional.interpolate(x, size=size) for x in xs], 1))


@pytest.fixture
def user_modules():
    register(Widen, channels="arg")
    register(Stack, channels="arg", repeat="inside")
    register(Mix, channels="arg", inputs="many")
    yield
    for name in ("Widen", "Stack", "Mix"):
        unregister(name)


MODEL = """
nc: 2
scales:
  n: [0.33, 0.25, 1024]
  s: [0.33, 0.50, 1024]
  m: [0.67, 0.75, 1024]
backbone:
  - [-1, 1, Conv, [64, 3, 2]]        # 0
  - [-1, 1, Conv, [128, 3, 2]]       # 1  stride 4
  - [-1, 1, Widen, [96]]             # 2  channel-changing
  - [-1, 3, Stack, [160]]            # 3  number inside, right after another channel change
  - [-1, 2, Widen, [80]]             # 4  number as a chain of copies
  - [-1, 1, Conv, [256, 3, 2]]       # 5  ultralytics reads the corrected channels
  - [[5, 2, 4], 1, Mix, [192]]       # 6  several inputs
  - [-1, 1, CBAM, []]                # 7  and an attention block on its output
head:
  - [[4, 7], 1, Detect, [nc]]
"""


@pytest.mark.parametrize("scale", SCALES)
def test_user_modules_build_with_the_right_channels_at_every_scale(user_modules, write_yaml, scale):
    model = YOLO(str(write_yaml(f"yolov5{scale}-mine.yaml", MODEL))).model.eval()  # the scale is read from the name
    layers = model.model
    c = {i: scaled(v, scale) for i, v in {0: 64, 1: 128, 2: 96, 3: 160, 4: 80, 5: 256, 6: 192}.items()}
    assert layers[2].conv.in_channels == c[1] and layers[2].conv.out_channels == c[2]
    assert layers[3].n == depth(3, scale) and layers[3].convs[0].in_channels == c[2]
    chain = list(layers[4]) if isinstance(layers[4], nn.Sequential) else [layers[4]]
    assert [m.conv.in_channels for m in chain] == [c[3]] + [c[4]] * (depth(2, scale) - 1)
    assert layers[5].conv.in_channels == c[4]  # ultralytics' Conv after ours
    assert layers[6].c1s == [c[5], c[2], c[4]] and layers[6].conv.out_channels == c[6] and layers[6].f == [5, 2, 4]
    assert layers[7].mlp[0].in_channels == c[6]  # the attention block reads the multi-input module's channels
    assert {2, 4, 5} <= set(model.save)  # the inputs of the multi-input row are kept during the forward pass
    out, _ = model(torch.zeros(1, 3, 64, 96))
    assert out.shape == (1, 4 + 2, 16 * 24 + 8 * 12) and torch.isfinite(out).all()


def test_a_module_that_cannot_be_built_names_the_row_scale_channels_and_how_to_write_it(user_modules, write_yaml):
    bad = write_yaml("yolov5n-bad.yaml", MODEL.replace("[-1, 1, Widen, [96]]", "[-1, 1, Widen, [wide]]"))
    with pytest.raises(AttentionConfigError) as e:
        YOLO(str(bad))
    assert str(e.value) == (f"row 2 of {bad} (scale n): Widen['wide'] cannot be built on 32 channels: its first "
                            "argument must be the output channel count, got ['wide']. Write the row as "
                            "[-1, 1, Widen, [c2]] or [-1, 1, Widen, [c2, bias]] (defaults: bias=False)")
    many = write_yaml("yolov5n-many.yaml", MODEL.replace("[[5, 2, 4], 1, Mix, [192]]", "[-1, 1, Mix, [192]]"))
    with pytest.raises(AttentionConfigError, match=r"row 6 of .*: Mix takes several inputs; 'from' must be a list"):
        YOLO(str(many))
    fusion = write_yaml("yolov5n-fuse.yaml", MODEL.replace("[[5, 2, 4], 1, Mix, [192]]", "[[5, 2], 1, WeightedFusion, []]"))
    with pytest.raises(AttentionConfigError, match=r"WeightedFusion\[\] cannot be built on 2 inputs of \[64, 24\] "
                                                   r"channels: its inputs must have equal channels"):
        YOLO(str(fusion))
    c3 = write_yaml("yolov5n-c3x.yaml", MODEL.replace("[-1, 1, Widen, [96]]", "[-1, 1, C3Attn, [96, CBM]]"))
    with pytest.raises(AttentionConfigError, match=r"C3Attn\[96, 'CBM'\] cannot be built on 32 channels: block must "
                                                   r"name an attention block \(CA, CBAM, .*\), got 'CBM'\. Write the "
                                                   r"row as \[-1, 1, C3Attn, \[c2\]\] or \[-1, 1, C3Attn, \[c2, block, "):
        YOLO(str(c3))


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("variant", ["c3cbam", "fusion"])
def test_shipped_variants_build_at_every_scale(variant, scale):
    model = YOLO(f"yolov5{scale}-{variant}.yaml").model.eval()
    kinds = [type(m).__name__ for m in model.model]
    if variant == "c3cbam":
        assert [i for i, k in enumerate(kinds) if k == "C3Attn"] == [17, 20, 23]
        assert [model.model[i].attn.mlp[0].in_channels for i in (17, 20, 23)] == [
            scaled(c, scale) // 2 for c in (256, 512, 1024)]  # CBAM on the bottleneck branch: half of c2
    else:
        assert [i for i, k in enumerate(kinds) if k == "WeightedFusion"] == [12, 16, 19, 22]
        assert model.model[13].cv1.conv.in_channels == scaled(512, scale)  # not the concatenated 2x
    out, _ = model(torch.zeros(1, 3, 64, 64))
    assert out.shape == (1, 84, 8 * 8 + 4 * 4 + 2 * 2)


def test_weighted_fusion_is_the_normalised_weighted_sum():
    fuse = WeightedFusion([8, 8, 8])
    xs = [torch.randn(2, 8, 5, 7) for _ in range(3)]
    assert torch.allclose(fuse(xs), sum(xs) / (3 + 1e-4), atol=1e-6)  # starts as the plain mean
    with torch.no_grad():
        fuse.w.copy_(torch.tensor([2.0, -1.0, 1.0]))  # a negative weight counts as 0
    assert torch.allclose(fuse(xs), (2 * xs[0] + xs[2]) / (3 + 1e-4), atol=1e-6)


@pytest.fixture(scope="module")
def base_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = build("yolov5n.yaml", nc=3, seed=1)
    with torch.no_grad():  # trained-looking BN statistics, so the comparison below is not trivially near zero
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("base") / "base.pt"
    torch.save({"model": model}, path)
    return path, model


def test_c3attn_takes_every_tensor_of_the_c3_it_replaces_and_identity_start_equals_the_base(base_ckpt):
    path, base = base_ckpt
    variant = build("yolov5n-c3cbam.yaml", nc=3, seed=0, attn_init="identity")
    report = transfer(str(path), variant)
    assert report.loaded == report.base_tensors and report.unused == []
    for i in (17, 20, 23):
        layer = variant.model[i]
        assert isinstance(layer, C3Attn) and isinstance(layer.attn, IdentityGate)
        c3 = base.model[i].state_dict()
        assert report.layers[i].loaded == len(c3) and report.layers[i].base == i
        assert all(torch.equal(layer.state_dict()[k], v) for k, v in c3.items())  # C3's names, C3's values
    x = torch.rand(2, 3, 128, 96)
    with torch.no_grad():
        assert torch.equal(base.eval()(x)[0], variant.eval()(x)[0])


def test_c3attn_and_fusion_variants_train_a_step(base_ckpt):
    for cfg in ("yolov5n-c3cbam.yaml", "yolov5n-fusion.yaml"):
        model = build(cfg, nc=3, seed=0).train()
        model.args = get_cfg()  # the loss reads its gains from here, as the trainer sets them
        batch = {"img": torch.rand(2, 3, 96, 96), "batch_idx": torch.tensor([0.0, 1.0]),
                 "cls": torch.tensor([[0.0], [2.0]]), "bboxes": torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.1, 0.1]])}
        loss, _ = model.loss(batch)
        loss.sum().backward()
        grads = [p.grad for n, p in model.named_parameters() if ".attn." in n or n.endswith(".w")]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads), cfg
