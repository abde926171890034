"""P2 configs: four detection levels at every scale, the base's layers untouched, weights transfer."""

from __future__ import annotations

import pytest
import torch
import yaml
from ultralytics.nn import tasks
from ultralytics.nn.tasks import DetectionModel

import attention
from attention.training.transfer import transfer

from conftest import BLOCKS, MODELS

P2_VARIANTS = ["yolov5-p2"] + [f"yolov5-p2-{b.lower()}" for b in BLOCKS]
SCALES = ["n", "s", "m", "l", "x"]


def rows(name):
    d = yaml.safe_load((MODELS / f"{name}.yaml").read_text())
    return d["backbone"], d["head"]


def build(variant: str, scale: str, nc: int = 80) -> DetectionModel:
    d = yaml.safe_load((MODELS / f"{variant}.yaml").read_text())
    d["scale"], d["yaml_file"] = scale, f"{variant.replace('yolov5', 'yolov5' + scale)}.yaml"
    return DetectionModel(d, nc=nc, verbose=False).eval()


WIDTH = {"n": 0.25, "s": 0.5, "m": 0.75, "l": 1.0, "x": 1.25}


def parse(variant: str, scale: str, monkeypatch) -> torch.nn.Sequential:
    """The layers ultralytics' parser builds for a config at a scale (conv weights zero: only shapes matter)."""
    monkeypatch.setattr(torch.nn.Conv2d, "reset_parameters", lambda self: torch.nn.init.zeros_(self.weight))
    d = yaml.safe_load((MODELS / f"{variant}.yaml").read_text())
    d["scale"], d["yaml_file"] = scale, f"{variant.replace('yolov5', 'yolov5' + scale)}.yaml"
    return tasks.parse_model(d, ch=3, verbose=False)[0]


@pytest.mark.parametrize("variant", P2_VARIANTS)
@pytest.mark.parametrize("scale", SCALES)
def test_p2_builds_at_every_scale_with_four_levels(variant, scale, monkeypatch):
    layers = parse(variant, scale, monkeypatch)
    detect = layers[-1]
    assert type(detect).__name__ == "Detect" and detect.nl == 4 and len(detect.f) == 4
    # P2, P3, P4, P5 widths of the scale reach Detect (through the blocks, which keep their input's width)
    assert [seq[0].conv.in_channels for seq in detect.cv2] == [int(c * WIDTH[scale]) for c in (128, 256, 512, 1024)]
    n_blocks = sum(isinstance(m, tuple(attention.get(b) for b in BLOCKS)) for m in layers)
    assert n_blocks == (0 if variant == "yolov5-p2" else 4)


@pytest.mark.parametrize("scale", SCALES)
def test_p2_levels_have_strides_4_to_32_at_every_scale(scale, monkeypatch):
    layers = parse("yolov5-p2", scale, monkeypatch)
    x, y = torch.zeros(1, 3, 64, 96), []
    with torch.no_grad():
        for m in layers[:-1]:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x)
    assert [tuple(y[j].shape[-2:]) for j in layers[-1].f] == [(16, 24), (8, 12), (4, 6), (2, 3)]


@pytest.mark.parametrize("variant", P2_VARIANTS)
def test_p2_model_runs_with_strides_4_to_32(variant):
    model = build(variant, "n", nc=3)
    assert model.stride.tolist() == [4, 8, 16, 32]
    with torch.no_grad():
        out, raw = model(torch.zeros(1, 3, 64, 96))
    assert [tuple(f.shape[-2:]) for f in (raw["feats"] if isinstance(raw, dict) else raw)]  # 8.3: a list == [(16, 24), (8, 12), (4, 6), (2, 3)]
    assert out.shape == (1, 4 + 3, 16 * 24 + 8 * 12 + 4 * 6 + 2 * 3) and torch.isfinite(out).all()
    n_blocks = sum(isinstance(m, tuple(attention.get(b) for b in BLOCKS)) for m in model.model)
    assert n_blocks == (0 if variant == "yolov5-p2" else 4)


def test_shipped_p2_yaml_by_scale_name():
    from ultralytics import YOLO

    model = YOLO(str(MODELS / "yolov5s-p2-cbam.yaml")).model
    assert model.yaml["scale"] == "s" and model.stride.tolist() == [4, 8, 16, 32]


def test_p2_keeps_the_base_rows_and_adds_a_p2_branch():
    base_backbone, base_head = rows("yolov5")
    backbone, head = rows("yolov5-p2")
    assert backbone == base_backbone  # rows 0-9: pretrained backbones load
    assert head[: len(base_head) - 1] == base_head[:-1]  # rows 10-23: FPN and PAN as in the base
    assert head[-5:-1] == [[17, 1, "Conv", [128, 1, 1]], [-1, 1, "nn.Upsample", ["None", 2, "nearest"]],
                           [[-1, 2], 1, "Concat", [1]], [-1, 3, "C3", [128, False]]]
    assert head[-1] == [[27, 17, 20, 23], 1, "Detect", ["nc"]]


@pytest.mark.parametrize("block", BLOCKS)
def test_p2_block_variant_is_p2_plus_one_block_per_level(block):
    p2_backbone, p2_head = rows("yolov5-p2")
    backbone, head = rows(f"yolov5-p2-{block.lower()}")
    assert backbone == p2_backbone and head[: len(p2_head) - 1] == p2_head[:-1]
    assert head[-5:-1] == [[27, 1, block, []], [17, 1, block, []], [20, 1, block, []], [23, 1, block, []]]
    assert head[-1] == [[28, 29, 30, 31], 1, "Detect", ["nc"]]


@pytest.fixture(scope="module")
def yolov5n_ckpt(tmp_path_factory):
    """A yolov5n checkpoint file with distinct random tensors, as train.py saves one."""
    model = build("yolov5", "n")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.dtype.is_floating_point:
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + (0.5 if "running_var" in name else -0.25))
    path = tmp_path_factory.mktemp("ckpt") / "base.pt"  # not a release name: nothing to download
    torch.save({"model": model, "train_args": {}}, path)
    return path, model


def test_transfer_from_yolov5n_fills_backbone_and_neck_and_lists_p2_layers(yolov5n_ckpt):
    path, base = yolov5n_ckpt
    target = build("yolov5-p2-cbam", "n")
    report = transfer(path, target)
    # every backbone and neck tensor (rows 0-23) arrives, unchanged, in the same row
    for i in range(24):
        assert report.layers[i].base == i and report.layers[i].loaded == report.layers[i].total
        for name, value in base.model[i].state_dict().items():
            assert torch.equal(target.model[i].state_dict()[name], value), (i, name)
    # new: the P2 branch (24-27) and the four blocks (28-31); Detect gets the base's three levels, its P2 level is new
    assert report.new == list(range(24, 32))
    assert report.unused == [] and report.loaded == report.base_tensors  # every base tensor lands somewhere
    detect, base_detect = target.model[32], base.model[24]
    assert report.layers[32].base == 24 and report.layers[32].loaded < report.layers[32].total
    for k, j in ((1, 0), (2, 1), (3, 2)):  # the P3, P4, P5 branches come from the base's P3, P4, P5 branches
        for head in ("cv2", "cv3"):
            ours, theirs = getattr(detect, head)[k].state_dict(), getattr(base_detect, head)[j].state_dict()
            assert all(torch.equal(ours[name], theirs[name]) for name in theirs), (head, k)
    p2_branch = len(detect.cv2[0].state_dict()) + len(detect.cv3[0].state_dict())  # left as built
    assert report.layers[32].loaded == report.layers[32].total - p2_branch
    summary = report.summary()
    for i, kind in [(24, "Conv"), (25, "Upsample"), (26, "Concat"), (27, "C3"), (28, "CBAM")]:
        assert any(line.split()[:3] == [str(i), kind, "new"] for line in summary.splitlines()), (i, summary)


def test_transfer_from_a_cbam_checkpoint_keeps_its_blocks():
    base = build("yolov5-cbam", "n")
    target = build("yolov5-p2-cbam", "n")
    report = transfer(base, target)
    assert {t.index: t.base for t in report.layers if t.type == "CBAM"} == {28: None, 29: 24, 30: 25, 31: 26}
