"""Pretrained weights into variants: every base tensor lands in the layer of the same role."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import torch
import yaml
from ultralytics import YOLO

from attention.blocks.gate import IdentityGate
from attention.training.build import build
from attention.training.transfer import align, transfer

from conftest import BLOCKS, MODELS, REPO


def randomized(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every tensor distinct and non-default, so a tensor loaded into the wrong place shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.dtype.is_floating_point:
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + (0.5 if "running_var" in name else -0.25))
    return model


def tensors(model, layer):
    return {k: v for k, v in model.model[layer].state_dict().items() if v.dtype.is_floating_point}


@pytest.fixture(scope="module")
def base():
    return randomized(YOLO(str(MODELS / "yolov5n.yaml")).model.eval())


@pytest.mark.parametrize("block", BLOCKS)
def test_every_base_tensor_reaches_its_counterpart(base, block):
    variant = YOLO(str(MODELS / f"yolov5n-{block.lower()}.yaml")).model
    report = transfer(base, variant)
    assert report.loaded == report.base_tensors == len(base.state_dict())  # 100% of the base
    assert report.new == [24, 25, 26] and report.unused == []
    assert report.layers[27].new_branches == [] and "new: left" not in report.summary().splitlines()[-1]
    for b, t in [*((i, i) for i in range(24)), (24, 27)]:  # neck unchanged, Detect moved from 24 to 27
        for name, value in tensors(base, b).items():
            assert torch.equal(variant.model[t].state_dict()[name], value), (b, t, name)


def test_same_architecture_equals_ultralytics_key_loading(base):
    ours, theirs = YOLO(str(MODELS / "yolov5n.yaml")).model, YOLO(str(MODELS / "yolov5n.yaml")).model
    report = transfer(base, ours)
    theirs.load(base)
    assert report.loaded == report.total == len(base.state_dict()) and report.new == []
    a, b = ours.state_dict(), theirs.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


TRAP = """
nc: 3
backbone:
  - [-1, 1, Conv, [16, 3, 2]] # 0
{insert}
  - [-1, 1, Conv, [16, 3, 1]] # a: same shape as b
  - [-1, 1, Conv, [16, 3, 1]] # b
  - [-1, 1, Conv, [32, 3, 2]]
head:
  - [[-1], 1, Detect, [nc]]
"""


def test_shifted_layers_of_equal_shape_do_not_swap(write_yaml):
    base = randomized(YOLO(str(write_yaml("yolov5n-trap.yaml", TRAP.format(insert="")))).model)
    variant = YOLO(str(write_yaml("yolov5n-trap-se.yaml", TRAP.format(insert="  - [-1, 1, SE, [4]]")))).model
    # Key loading would fill variant layer 2 (a) with base layer 2 (b): same key, same shape, wrong role.
    assert variant.model[2].conv.weight.shape == base.model[2].conv.weight.shape
    assert align(base.model, variant.model) == {0: 0, 2: 1, 3: 2, 4: 3, 5: 4}
    transfer(base, variant)
    assert torch.equal(variant.model[2].conv.weight, base.model[1].conv.weight)
    assert torch.equal(variant.model[3].conv.weight, base.model[2].conv.weight)


def test_variant_of_a_variant_keeps_its_blocks(write_yaml):
    cbam = randomized(YOLO(str(MODELS / "yolov5n-cbam.yaml")).model, seed=1)
    # The CBAM model with one more block, after backbone stage P4: every later index shifts by one.
    text = (MODELS / "yolov5-cbam.yaml").read_text().replace(
        "- [-1, 9, C3, [512]] # 6", "- [-1, 9, C3, [512]] # 6\n  - [-1, 1, ECA, []]")
    for old, new in [("[[-1, 6]", "[[-1, 7]"), ("[[-1, 4]", "[[-1, 4]"), ("[[-1, 14]", "[[-1, 15]"),
                     ("[[-1, 10]", "[[-1, 11]"), ("[17, 1, CBAM", "[18, 1, CBAM"), ("[20, 1, CBAM", "[21, 1, CBAM"),
                     ("[23, 1, CBAM", "[24, 1, CBAM"), ("[[24, 25, 26], 1, Detect", "[[25, 26, 27], 1, Detect")]:
        text = text.replace(old, new)
    variant = YOLO(str(write_yaml("yolov5n-cbam-eca.yaml", text))).model
    report = transfer(cbam, variant)
    assert report.new == [7] and report.loaded == len(cbam.state_dict())
    for b, t in [(24, 25), (25, 26), (26, 27), (27, 28)]:  # CBAM blocks and Detect, shifted by one
        for name, value in tensors(cbam, b).items():
            assert torch.equal(variant.model[t].state_dict()[name], value)


def test_base_of_another_scale_or_architecture_is_reported_not_crashed():
    for other in (YOLO(str(MODELS / "yolov5s.yaml")).model, YOLO("yolov8n.yaml").model):
        report = transfer(other, YOLO(str(MODELS / "yolov5n-cbam.yaml")).model)
        text = report.summary()
        assert report.loaded < report.base_tensors / 2
        assert "most of the base did not fit: is it another scale (n/s/m/l/x) or another architecture?" in text
        assert "shape differs" in text or "new: left as initialised" in text


def test_report_is_written(base, tmp_path):
    report = transfer(base, YOLO(str(MODELS / "yolov5n-se.yaml")).model)
    report.write(tmp_path)
    text = (tmp_path / "transfer.txt").read_text()
    assert text.startswith(f"Transfer from DetectionModel: {report.loaded}/{report.total} target tensors loaded")
    assert yaml.safe_load((tmp_path / "transfer.json").read_text())["new"] == [24, 25, 26]


@pytest.fixture(scope="module")
def base_ckpt(tiny_data, tmp_path_factory):
    """A yolov5n trained one epoch on the tiny set: a real base checkpoint."""
    out = tmp_path_factory.mktemp("base")
    YOLO(str(MODELS / "yolov5n.yaml")).train(data=str(tiny_data), epochs=1, imgsz=160, batch=8, workers=0,
                                             project=str(out), name="base", plots=False)
    return out / "base" / "weights" / "last.pt"


@pytest.mark.parametrize("block", ["CBAM", "CA"])
def test_identity_start_predicts_like_the_base(base_ckpt, tiny_data, block):
    base = YOLO(str(base_ckpt))
    variant = build(f"yolov5n-{block.lower()}.yaml", nc=3, attn_init="identity")
    report = transfer(str(base_ckpt), variant)
    assert report.loaded == report.base_tensors
    assert all(isinstance(variant.model[i], IdentityGate) for i in (24, 25, 26))
    images = sorted((Path(yaml.safe_load(tiny_data.read_text())["path"]) / "images" / "val").glob("*.jpg"))[:4]
    x = torch.stack([torch.from_numpy(cv2.imread(str(p))[..., ::-1].copy()).permute(2, 0, 1) for p in images]) / 255
    with torch.no_grad():
        a = base.model.float().eval()(x)[0]
        b = variant.float().eval()(x)[0]
    assert a.shape == b.shape and (a - b).abs().max() < 1e-4


def test_identity_start_val_map_equals_the_base(base_ckpt, tiny_data, tmp_path):
    variant = build("yolov5n-cbam.yaml", nc=3, attn_init="identity")
    transfer(str(base_ckpt), variant)
    variant.names = YOLO(str(base_ckpt)).model.names
    path = tmp_path / "variant.pt"
    torch.save({"model": variant.half(), "epoch": -1}, path)
    kw = dict(data=str(tiny_data), imgsz=160, batch=8, plots=False, project=str(tmp_path), verbose=False)
    m_base = YOLO(str(base_ckpt)).val(**kw).box
    m_var = YOLO(str(path)).val(**kw).box
    assert (m_base.map50, m_base.map) == pytest.approx((m_var.map50, m_var.map), abs=1e-6)


def test_train_cli_transfers_with_identity_start_and_frozen_backbone(base_ckpt, tiny_data, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "--cfg", "yolov5n-cbam.yaml", "--weights", base_ckpt, "--data",
         tiny_data, "--attn-init", "identity", "--freeze", "backbone", "--epochs", "1", "--img", "160",
         "--batch-size", "8", "--workers", "0"],
        cwd=tmp_path, env={**os.environ, "YOLO_OFFLINE": "1"}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "runs" / "train" / "exp"
    report = (run / "transfer.txt").read_text()
    n = len(torch.load(base_ckpt, weights_only=False)["model"].state_dict())
    assert report.startswith(f"Transfer from {base_ckpt}: {n}/") and f"({n}/{n} of the base's tensors used)" in report
    trained = YOLO(str(run / "weights" / "last.pt")).model
    assert sum(isinstance(m, IdentityGate) for m in trained.modules()) == 3
    base = torch.load(base_ckpt, weights_only=False)["model"]
    for layer in range(10):  # the frozen backbone: conv weights as in the base (checkpoints are fp16)
        assert torch.equal(trained.model[layer].state_dict()[next(iter(tensors(base, layer)))].half(),
                           next(iter(tensors(base, layer).values())).half()), layer
    assert not torch.equal(trained.model[27].cv2[0][0].conv.weight.half(), base.model[24].cv2[0][0].conv.weight.half())


def test_identity_start_needs_weights(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), "--attn-init", "identity"], cwd=tmp_path,
                          env={**os.environ, "YOLO_OFFLINE": "1"}, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "train.py: error: --attn-init identity makes a variant start as its base: it needs --weights"


STOCK_PREDICT = """
import json, sys
from ultralytics import YOLO
result = YOLO(sys.argv[1]).predict(sys.argv[2], imgsz=160, conf=0.0, verbose=False)[0]
print(json.dumps({"plugin": sorted(m for m in sys.modules if m.split(".")[0] == "attention"), "boxes": len(result.boxes)}))
"""


@pytest.mark.slow  # a P2 training run (about 20 s on 2 cores); tests/test_p2.py checks the same fast, untrained
def test_train_cli_p2_uses_every_base_tensor_and_its_checkpoint_needs_no_plugin(base_ckpt, tiny_data, tmp_path):
    # A P2 variant fine-tuned from a 3-class yolov5n: its transfer report shows every base tensor used (the P3-P5
    # Detect branches included), and the trained checkpoint loads and predicts in ultralytics alone.
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "--cfg", "yolov5n-p2.yaml", "--weights", base_ckpt, "--data",
         tiny_data, "--attn-init", "identity", "--epochs", "1", "--img", "160", "--batch-size", "8", "--workers", "0"],
        cwd=tmp_path, env={**os.environ, "YOLO_OFFLINE": "1"}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "runs" / "train" / "exp"
    n = len(torch.load(base_ckpt, weights_only=False)["model"].state_dict())
    report = (run / "transfer.txt").read_text()
    assert f"({n}/{n} of the base's tensors used)" in report and "shape differs" not in report
    detect = next(line.split() for line in report.splitlines() if line.split()[:3] == ["28", "Detect", "24"])
    assert detect[3].split("/")[0] == str(len(torch.load(base_ckpt, weights_only=False)["model"].model[24].state_dict()))
    image = sorted((Path(yaml.safe_load(tiny_data.read_text())["path"]) / "images" / "val").glob("*.jpg"))[0]
    proc = subprocess.run([sys.executable, "-c", STOCK_PREDICT, str(run / "weights" / "last.pt"), str(image)],
                          cwd=tmp_path, env={**os.environ, "YOLO_OFFLINE": "1"}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["plugin"] == [] and seen["boxes"] > 0
