"""Attention maps: one overlay PNG per inserted block, for CBAM, CA and self-attention variants."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
from ultralytics import YOLO

from attention.blocks.gate import IdentityGate, gate_blocks
from attention.inference.maps import attention_maps

from conftest import REPO

H, W = 150, 200  # not square, not a multiple of 32: the letterbox is exercised


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """A generated scene: noise, a road and a few small bright objects."""
    rng = np.random.default_rng(0)
    img = rng.integers(60, 110, size=(H, W, 3), dtype=np.uint8)
    img[60:75, :] = 40
    for y, x in [(20, 30), (64, 120), (110, 160), (130, 40)]:
        cv2.rectangle(img, (x, y), (x + 8, y + 5), (40, 200, 240), -1)
    path = tmp_path_factory.mktemp("img") / "scene.jpg"
    cv2.imwrite(str(path), img)
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """Checkpoints built once per module: ckpt(name) or ckpt(name, identity=True)."""
    made = {}
    root = tmp_path_factory.mktemp("ckpt")

    def get(name: str, identity: bool = False):
        if (name, identity) not in made:
            made[name, identity] = checkpoint(root / f"{name}-{identity}", name, identity)
        return made[name, identity]

    return get


def checkpoint(tmp_path, name: str, identity: bool = False):
    """An untrained yolov5n variant saved as an ultralytics checkpoint (the maps need no training to be drawn)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    model = YOLO(f"yolov5n-{name}.yaml")
    if identity:
        gate_blocks(model.model.model)
    path = tmp_path / f"{name}.pt"
    model.save(str(path))
    return path


def check_pngs(paths, layers, block, shape=(H, W)):
    assert [p.name for p in paths] == [f"scene_layer{i}_{block}.png" for i in layers]
    for p in paths:
        png = cv2.imread(str(p))
        assert png is not None, p
        assert png.shape[:2] == shape
        assert png.std() > 5 and len(np.unique(png.reshape(-1, 3), axis=0)) > 50  # not blank


def test_maps_command_writes_one_png_per_cbam_block(tmp_path, image, ckpt):
    weights = ckpt("cbam")
    proc = subprocess.run(
        [sys.executable, "-m", "attention", "maps", "--weights", str(weights), "--source", str(image), "--imgsz", "160",
         "--project", str(tmp_path / "runs" / "maps"), "--name", "exp"],
        cwd=REPO, capture_output=True, text=True, env={"YOLO_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "runs" / "maps" / "exp"
    check_pngs(sorted(out.glob("*.png")), [24, 25, 26], "CBAM")


@pytest.mark.parametrize(("name", "block", "layers"), [("ca", "CA", [24, 25, 26]), ("mhsa", "MHSA", [24, 25])])
def test_maps_for_ca_and_self_attention(tmp_path, image, ckpt, name, block, layers):
    paths = attention_maps(ckpt(name), image, imgsz=160, project=tmp_path / "maps")
    check_pngs(paths, layers, block)
    assert paths[0].parent == tmp_path / "maps" / "exp"
    again = attention_maps(YOLO(str(ckpt(name))).model, image, imgsz=160, project=tmp_path / "maps")
    assert again[0].parent == tmp_path / "maps" / "exp-2"  # runs/maps/exp, exp-2, ... as the other scripts


def test_maps_see_through_the_identity_gate(tmp_path, image, ckpt):
    weights = ckpt("cbam", identity=True)
    model = YOLO(str(weights)).model
    assert all(isinstance(model.model[i], IdentityGate) for i in (24, 25, 26))
    check_pngs(attention_maps(weights, image, imgsz=160, project=tmp_path), [24, 25, 26], "CBAM")


def test_channel_blocks_get_a_bar_plot_and_other_blocks_the_energy_ratio(tmp_path, image):
    from torch import nn

    from attention.blocks import SE, SimAM

    model = nn.Sequential(nn.Conv2d(3, 16, 8, stride=8), SE(16, 4), SimAM(16)).eval()  # any model of layers works
    paths = attention_maps(model, image, imgsz=160, project=tmp_path)
    assert [p.name for p in paths] == ["scene_layer1_SE.png", "scene_layer2_SimAM.png"]
    bars = cv2.imread(str(paths[0]))
    assert bars.shape[:2] == (450, 1200) and bars.std() > 5  # the image beside a bar plot of 16 channel weights
    check_pngs(paths[1:], [2], "SimAM")


def test_missing_weights_is_one_line(tmp_path, image):
    proc = subprocess.run([sys.executable, "-m", "attention", "maps", "--weights", str(tmp_path / "nope.pt"), "--source",
                           str(image), "--project", str(tmp_path)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"yolov5-attention maps: error: weights not found: {tmp_path / 'nope.pt'}"]
    assert not list(tmp_path.glob("exp*"))


def test_missing_source_is_one_line(tmp_path, capsys, ckpt):
    from attention.cli.main import main

    with pytest.raises(SystemExit) as info:
        main(["maps", "--weights", str(ckpt("cbam")), "--source", str(tmp_path / "nope.jpg"), "--project", str(tmp_path)])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(f"error: --source not found: {tmp_path / 'nope.jpg'}")
    assert not list(tmp_path.glob("exp*"))
