"""P2 configs: four detection levels at every scale, the base's layers untouched, every base tensor transfers."""

from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from torch import nn
from ultralytics.nn import tasks
from ultralytics.nn.tasks import DetectionModel

import attention
from attention.blocks.registry import AttentionConfigError
from attention.training.build import build as build_run_model
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


NC = 3  # the embedded set's class count: at n, P2's narrow first level used to shrink every class branch


def parse(variant: str, scale: str, nc: int = NC) -> torch.nn.Sequential:
    """The layers ultralytics' parser builds for a config at a scale (conv weights zero: only shapes matter)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.nn.Conv2d, "reset_parameters", lambda self: torch.nn.init.zeros_(self.weight))
        d = yaml.safe_load((MODELS / f"{variant}.yaml").read_text())
        d["scale"], d["yaml_file"], d["nc"] = scale, f"{variant.replace('yolov5', 'yolov5' + scale)}.yaml", nc
        return tasks.parse_model(d, ch=3, verbose=False)[0]


class Layers(nn.Module):
    """Parsed layers as transfer() takes a model: its .model."""

    def __init__(self, layers: torch.nn.Sequential) -> None:
        super().__init__()
        self.model = layers


def box_width(c: int) -> int:
    """ultralytics' box-branch width for a Detect whose first input has c channels (reg_max 16)."""
    return max(16, c // 4, 16 * 4)


def class_width(c: int, nc: int) -> int:
    """ultralytics' class-branch width for a Detect whose first input has c channels."""
    return max(c, min(nc, 100))


@functools.lru_cache(maxsize=1)  # one at a time: parsed x models take 400 MB each
def base_layers(scale: str) -> torch.nn.Sequential:
    return parse("yolov5", scale)


@pytest.mark.parametrize("variant", P2_VARIANTS)
@pytest.mark.parametrize("scale", SCALES)
def test_p2_at_every_scale_has_four_levels_and_takes_every_base_tensor(variant, scale):
    layers = parse(variant, scale)
    detect = layers[-1]
    assert type(detect).__name__ == "Detect" and detect.nl == 4 and len(detect.f) == 4
    # P2, P3, P4, P5 widths of the scale reach Detect (through the blocks, which keep their input's width)
    p2, p3, p4, p5 = (int(c * WIDTH[scale]) for c in (128, 256, 512, 1024))
    assert [seq[0].conv.in_channels for seq in detect.cv2] == [p2, p3, p4, p5]
    # the P2 level's branches are sized from P2 as ultralytics sizes a head; P3-P5's from P3, as the base's are
    assert [seq[0].conv.out_channels for seq in detect.cv2] == [box_width(p2)] + [box_width(p3)] * 3
    assert [seq[-1].in_channels for seq in detect.cv3] == [class_width(p2, NC)] + [class_width(p3, NC)] * 3
    assert [seq[-1].out_channels for seq in detect.cv3] == [NC] * 4
    n_blocks = sum(isinstance(m, tuple(attention.get(b) for b in BLOCKS)) for m in layers)
    assert n_blocks == (0 if variant == "yolov5-p2" else 4)

    # from a 3-class base of the same scale: every base tensor lands, none of another shape
    base = base_layers(scale)
    report = transfer(Layers(base), Layers(layers))
    assert report.loaded == report.base_tensors == len(base.state_dict()) and report.unused == []
    assert not [t.index for t in report.layers if t.skipped]
    head = report.layers[-1]
    p2_branch = len(detect.cv2[0].state_dict()) + len(detect.cv3[0].state_dict())
    assert (head.base, head.loaded, head.total) == (24, len(base[24].state_dict()), head.loaded + p2_branch)
    assert head.new_branches == [0]  # only the P2 level's branches start fresh
    assert f"({report.base_tensors}/{report.base_tensors} of the base's tensors used)" in report.summary()


@pytest.mark.parametrize("scale", SCALES)
def test_p2_levels_have_strides_4_to_32_at_every_scale(scale):
    layers = parse("yolov5-p2", scale)
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
    assert head[-1] == [[27, 17, 20, 23], 1, "Detect", ["nc"]]  # P2 first: ultralytics wants strides ascending


@pytest.mark.parametrize("variant", P2_VARIANTS)
def test_p2_asks_for_the_base_widths_from_p3_on(variant):
    assert yaml.safe_load((MODELS / f"{variant}.yaml").read_text())["detect_widths_from"] == 1


@pytest.mark.parametrize("block", BLOCKS)
def test_p2_block_variant_is_p2_plus_one_block_per_level(block):
    p2_backbone, p2_head = rows("yolov5-p2")
    backbone, head = rows(f"yolov5-p2-{block.lower()}")
    assert backbone == p2_backbone and head[: len(p2_head) - 1] == p2_head[:-1]
    assert head[-5:-1] == [[27, 1, block, []], [17, 1, block, []], [20, 1, block, []], [23, 1, block, []]]
    assert head[-1] == [[28, 29, 30, 31], 1, "Detect", ["nc"]]


@pytest.fixture(scope="module")
def yolov5n_ckpt(tmp_path_factory):
    """A yolov5n checkpoint file of 3 classes (as the embedded set) with distinct random tensors, as train.py saves one."""
    model = build("yolov5", "n", nc=NC)
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
    target = build("yolov5-p2-cbam", "n", nc=NC)
    report = transfer(path, target)
    # every backbone and neck tensor (rows 0-23) arrives, unchanged, in the same row
    for i in range(24):
        assert report.layers[i].base == i and report.layers[i].loaded == report.layers[i].total
        for name, value in base.model[i].state_dict().items():
            assert torch.equal(target.model[i].state_dict()[name], value), (i, name)
    # new: the P2 branch (24-27) and the four blocks (28-31); Detect gets the base's three levels, its P2 level is new
    assert report.new == list(range(24, 32))
    assert report.unused == [] and report.loaded == report.base_tensors  # every base tensor lands somewhere
    assert not report.layers[32].skipped  # none of another shape: P3-P5 branches as wide as the base's
    detect, base_detect = target.model[32], base.model[24]
    assert report.layers[32].base == 24 and report.layers[32].loaded < report.layers[32].total
    for k, j in ((1, 0), (2, 1), (3, 2)):  # the P3, P4, P5 branches come from the base's P3, P4, P5 branches
        for head in ("cv2", "cv3"):
            ours, theirs = getattr(detect, head)[k].state_dict(), getattr(base_detect, head)[j].state_dict()
            assert all(torch.equal(ours[name], theirs[name]) for name in theirs), (head, k)
    p2_branch = len(detect.cv2[0].state_dict()) + len(detect.cv3[0].state_dict())  # left as built
    assert report.layers[32].loaded == report.layers[32].total - p2_branch
    summary = report.summary()
    detect_line = next(line for line in summary.splitlines() if line.split()[:3] == ["32", "Detect", "24"])
    assert detect_line.split()[3] == f"{report.layers[32].loaded}/{report.layers[32].total}"
    assert detect_line.endswith("  branches on input 0 new: left as initialised")
    for i, kind in [(24, "Conv"), (25, "Upsample"), (26, "Concat"), (27, "C3"), (28, "CBAM")]:
        assert any(line.split()[:3] == [str(i), kind, "new"] for line in summary.splitlines()), (i, summary)


def test_transfer_from_a_cbam_checkpoint_keeps_its_blocks():
    base = build("yolov5-cbam", "n")
    target = build("yolov5-p2-cbam", "n")
    report = transfer(base, target)
    assert {t.index: t.base for t in report.layers if t.type == "CBAM"} == {28: None, 29: 24, 30: 25, 31: 26}


def run_model(variant: str, scale: str = "n", attn_init: str = "paper") -> DetectionModel:
    """A P2 variant as a run builds it (attention.training.build), 3 classes."""
    d = yaml.safe_load((MODELS / f"{variant}.yaml").read_text())
    d["scale"], d["yaml_file"] = scale, f"{variant.replace('yolov5', 'yolov5' + scale)}.yaml"
    return build_run_model(d, nc=NC, attn_init=attn_init).eval()


@pytest.mark.parametrize("variant", P2_VARIANTS)
def test_identity_start_predicts_like_the_base_on_p3_to_p5(yolov5n_ckpt, variant):
    # What "equal terms" can promise: with --attn-init identity, every P3-P5 prediction of the P2 variant (anchors
    # after the P2 level's, in ultralytics' finest-first order) is the base's, bit for bit, decoded boxes and class
    # scores alike. The P2 level adds predictions of its own (fresh branches), so the detections after NMS may differ.
    path, base = yolov5n_ckpt
    target = run_model(variant, attn_init="identity")
    report = transfer(path, target)
    assert report.loaded == report.base_tensors
    x = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = target(x)[0], base.eval()(x)[0]
    p2_anchors = (64 // 4) * (96 // 4)
    assert ours.shape == (2, 4 + NC, p2_anchors + theirs.shape[-1]) and theirs.shape[-1] == 8 * 12 + 4 * 6 + 2 * 3
    assert torch.equal(ours[..., p2_anchors:], theirs)
    assert torch.isfinite(ours[..., :p2_anchors]).all()


@pytest.fixture(scope="module")
def p2_ckpt(yolov5n_ckpt, tmp_path_factory):
    """A yolov5n-p2 checkpoint of 3 classes started from the base, saved as ultralytics saves one (fp16)."""
    model = run_model("yolov5-p2")
    transfer(yolov5n_ckpt[0], model)
    path = tmp_path_factory.mktemp("p2") / "p2-from-base.pt"
    torch.save({"model": model.half(), "train_args": {}, "epoch": -1}, path)
    return path


STOCK = """
import json, sys, torch
from ultralytics import YOLO
model = YOLO(sys.argv[1])
x = torch.load(sys.argv[2])
with torch.no_grad():
    out = model.model.float().eval()(x)[0]
result = model.predict(x, imgsz=x.shape[-1], conf=0.0, verbose=False)[0]
torch.save(out, sys.argv[3])
print(json.dumps({"plugin": sorted(m for m in sys.modules if m.split(".")[0] == "attention"),
                  "boxes": len(result.boxes), "nl": model.model.model[-1].nl}))
"""


def test_p2_checkpoint_loads_and_predicts_without_the_plugin(p2_ckpt, tmp_path):
    # The head is ultralytics' own Detect (only its per-level branch widths differ): stock ultralytics loads it.
    x = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(2))
    torch.save(x, tmp_path / "x.pt")
    proc = subprocess.run([sys.executable, "-c", STOCK, str(p2_ckpt), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
                          cwd=tmp_path, env={**os.environ, "YOLO_OFFLINE": "1"}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["plugin"] == [] and seen["nl"] == 4 and seen["boxes"] > 0
    with torch.no_grad():
        expected = torch.load(p2_ckpt, weights_only=False)["model"].float().eval()(x)[0]
    assert torch.allclose(torch.load(tmp_path / "y.pt"), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(bool(__import__("attention.inference.export", fromlist=["x"]).missing_packages("onnx")),
                    reason="ONNX export needs a package this environment lacks (onnxscript for ultralytics < 8.3.215 "
                           "under torch >= 2.9): tests/test_export.py covers the release that exports")
def test_p2_checkpoint_exports_to_onnx_like_pytorch(p2_ckpt, tmp_path):
    import onnxruntime as ort

    from attention.inference.export import export

    weights = tmp_path / p2_ckpt.name
    weights.write_bytes(p2_ckpt.read_bytes())
    path = export(weights, "onnx", imgsz=160)
    x = torch.rand(1, 3, 160, 160, generator=torch.Generator().manual_seed(3))
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        expected = torch.load(weights, weights_only=False)["model"].float().eval()(x)[0].numpy()
    assert got.shape == expected.shape == (1, 4 + NC, 40 ** 2 + 20 ** 2 + 10 ** 2 + 5 ** 2)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


TINY = """
nc: 2
{key}
backbone:
  - [-1, 1, Conv, [16, 3, 2]]
  - [-1, 1, Conv, [32, 3, 2]]
  - [-1, 1, Conv, [64, 3, 2]]
  - [-1, 1, Conv, [128, 3, 2]]
head:
  - [[1, 2, 3], 1, Detect, [nc]]
"""


def test_detect_widths_from_sizes_later_levels_on_their_own(write_yaml):
    from ultralytics.utils import LOGGER

    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    LOGGER.addHandler(handler)
    try:
        model = DetectionModel(str(write_yaml("tiny.yaml", TINY.format(key="detect_widths_from: 1"))), verbose=True)
    finally:
        LOGGER.removeHandler(handler)
    head = model.model[-1]
    row = next(line for line in lines if line.startswith("  4") and "Detect" in line)  # the summary: the head as built
    assert int(row[26:36]) == sum(p.numel() for p in head.parameters())
    assert [seq[0].conv.out_channels for seq in head.cv2] == [box_width(32)] + [box_width(64)] * 2
    assert [seq[-1].in_channels for seq in head.cv3] == [class_width(32, 2)] + [class_width(64, 2)] * 2
    assert type(head) is tasks.Detect and model.stride.tolist() == [4, 8, 16]
    plain = DetectionModel(str(write_yaml("plain.yaml", TINY.format(key=""))), verbose=False).model[-1]
    assert [seq[-1].in_channels for seq in plain.cv3] == [class_width(32, 2)] * 3  # without the key: stock sizing


@pytest.mark.parametrize("value, says", [
    (0, "detect_widths_from must be a positive integer (the first Detect input sized on its own, 1 for P2 listed "
        "first), got 0"),
    ("P3", "detect_widths_from must be a positive integer (the first Detect input sized on its own, 1 for P2 listed "
           "first), got 'P3'"),
    (3, "row 4 of {path}: detect_widths_from is 3, but Detect has 3 inputs (0 to 2); it names the first input whose "
        "branches take that input's own width"),
])
def test_detect_widths_from_refuses_what_it_cannot_do(write_yaml, value, says):
    path = write_yaml("tiny-bad.yaml", TINY.format(key=f"detect_widths_from: {value}"))
    with pytest.raises(AttentionConfigError) as e:
        DetectionModel(str(path), verbose=False)
    assert str(e.value).endswith(says.format(path=path))


def test_seeded_p2_builds_are_equal_even_the_first_in_a_process():
    # The release check behind detect_widths_from builds a small Detect once per process; it must not draw from
    # the run's seeded generator, or a run's first model would differ from the same command's later ones.
    from attention.adapter import compat

    compat.missing.cache_clear()
    compat.enabled.cache_clear()
    first, again = run_model("yolov5-p2").state_dict(), run_model("yolov5-p2").state_dict()
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)


def test_a_release_whose_detect_differs_switches_detect_widths_off_with_one_warning(monkeypatch):
    from ultralytics.utils import LOGGER

    from attention.adapter import compat, heads

    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    monkeypatch.setattr(heads, "probe", lambda: list(heads.RELIES_ON))  # as if Detect had moved its branches
    compat.missing.cache_clear()
    compat.enabled.cache_clear()
    LOGGER.addHandler(handler)
    try:
        models = [run_model("yolov5-p2") for _ in range(2)]
    finally:
        LOGGER.removeHandler(handler)
        compat.missing.cache_clear()
        compat.enabled.cache_clear()
    warned = [line for line in lines if "P2 variants whose P3-P5 Detect branches" in line]
    assert len(warned) == 1 and "is switched off: ultralytics " in warned[0]
    p2 = int(128 * WIDTH["n"])  # the heads are as the parser built them: every level sized from P2
    assert [seq[-1].in_channels for seq in models[0].model[-1].cv3] == [class_width(p2, NC)] * 4
