"""Attention maps: one PNG per attention block wherever it sits, drawn from what the block itself computed."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from ultralytics import YOLO

import attention
from attention.blocks.gate import IdentityGate, gate_blocks
from attention.inference.maps import attention_maps, block_maps

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
    """An untrained yolov5n variant saved as an ultralytics checkpoint (the maps need no training to be drawn).

    Its convolutions are redrawn to keep activations alive: in a freshly built YOLO they fade to ~1e-9 by the neck,
    where every gate is then flat, a constant map.
    """
    tmp_path.mkdir(parents=True, exist_ok=True)
    model = YOLO(f"yolov5n-{name}.yaml")
    alive(model.model)
    if identity:
        gate_blocks(model.model.model)
    path = tmp_path / f"{name}.pt"
    model.save(str(path))
    return path


def alive(model: nn.Module) -> nn.Module:
    """Convolutions redrawn (He init, seeded) so that activations keep their scale through the network."""
    torch.manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return model


def check_pngs(paths, layers, block, shape=(H, W), image=None):
    assert [p.name for p in paths] == [f"scene_layer{i}_{block}.png" for i in layers]
    for p in paths:
        png = cv2.imread(str(p))
        assert png is not None, p
        assert png.shape[:2] == shape
        assert png.std() > 5 and len(np.unique(png.reshape(-1, 3), axis=0)) > 50  # not blank
        if image is not None:  # the colour layer (png = image / 2 + colour / 2) must vary: a constant map fails
            colour = 2 * png.astype(float) - cv2.imread(str(image)).astype(float)
            below_label = colour[shape[0] // 3:]
            assert below_label.reshape(-1, 3).std(axis=0).max() > 10, f"{p.name}: the map is constant"


def test_maps_command_writes_one_png_per_cbam_block(tmp_path, image, ckpt):
    weights = ckpt("cbam")
    proc = subprocess.run(
        [sys.executable, "-m", "attention", "maps", "--weights", str(weights), "--source", str(image), "--imgsz", "160",
         "--project", str(tmp_path / "runs" / "maps"), "--name", "exp"],
        cwd=REPO, capture_output=True, text=True, env={"YOLO_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "runs" / "maps" / "exp"
    check_pngs(sorted(out.glob("*.png")), [24, 25, 26], "CBAM", image=image)


@pytest.mark.parametrize(("name", "block", "layers"), [("ca", "CA", [24, 25, 26]), ("mhsa", "MHSA", [24, 25])])
def test_maps_for_ca_and_self_attention(tmp_path, image, ckpt, name, block, layers):
    paths = attention_maps(ckpt(name), image, imgsz=160, project=tmp_path / "maps")
    check_pngs(paths, layers, block, image=image)
    assert paths[0].parent == tmp_path / "maps" / "exp"
    again = attention_maps(YOLO(str(ckpt(name))).model, image, imgsz=160, project=tmp_path / "maps")
    assert again[0].parent == tmp_path / "maps" / "exp-2"  # runs/maps/exp, exp-2, ... as the other scripts


def test_maps_see_through_the_identity_gate(tmp_path, image, ckpt):
    weights = ckpt("cbam", identity=True)
    model = YOLO(str(weights)).model
    assert all(isinstance(model.model[i], IdentityGate) for i in (24, 25, 26))
    check_pngs(attention_maps(weights, image, imgsz=160, project=tmp_path), [24, 25, 26], "CBAM", image=image)


def test_channel_blocks_get_a_bar_plot_and_gated_blocks_their_gate(tmp_path, image):
    from attention.blocks import SE, SimAM

    model = nn.Sequential(nn.Conv2d(3, 16, 8, stride=8), SE(16, 4), SimAM(16)).eval()  # any model of layers works
    paths = attention_maps(model, image, imgsz=160, project=tmp_path)
    assert [p.name for p in paths] == ["scene_layer1_SE.png", "scene_layer2_SimAM.png"]
    bars = cv2.imread(str(paths[0]))
    assert bars.shape[:2] == (450, 1200) and bars.std() > 5  # the image beside a bar plot of 16 channel weights
    check_pngs(paths[1:], [2], "SimAM", image=image)


def test_a_constant_map_fails_the_check(tmp_path, image, ckpt, monkeypatch):
    import attention.inference.maps as maps

    monkeypatch.setattr(maps, "spatial_map", lambda seen, n, h, w: torch.zeros(n, h, w))
    paths = attention_maps(ckpt("cbam"), image, imgsz=160, project=tmp_path)
    with pytest.raises(AssertionError, match="the map is constant"):
        check_pngs(paths, [24, 25, 26], "CBAM", image=image)


def test_blocks_inside_c3attn_and_in_repeated_rows_get_maps(tmp_path, image, ckpt, write_yaml):
    check_pngs(attention_maps(ckpt("c3cbam"), image, imgsz=160, project=tmp_path),
               ["17.attn", "20.attn", "23.attn"], "CBAM", image=image)
    gated = ckpt("c3cbam", identity=True)  # the gate sits inside C3Attn: the map is still the block's
    check_pngs(attention_maps(gated, image, imgsz=160, project=tmp_path), ["17.attn", "20.attn", "23.attn"], "CBAM")
    from attention import cfg as shipped

    text = (shipped.folder("models") / "yolov5-cbam.yaml").read_text()
    assert "- [17, 1, CBAM, []]" in text
    # a repeated row: 6 at yolov5n's depth 0.33 is a chain of two CBAMs
    chained = write_yaml("yolov5n-chain.yaml", text.replace("- [17, 1, CBAM, []]", "- [17, 6, CBAM, []]"))
    model = alive(YOLO(str(chained)).model)
    assert isinstance(model.model[24], nn.Sequential) and len(model.model[24]) == 2
    check_pngs(attention_maps(model, image, imgsz=160, project=tmp_path), ["24.0", "24.1", 25, 26], "CBAM",
               image=image)


def _randomized(block: nn.Module) -> nn.Module:
    with torch.no_grad():  # away from the paper's initialisation, where some gates start constant
        for p in block.parameters():
            p.uniform_(-1.0, 1.0)
    return block.eval()


def test_the_map_is_what_the_block_computed():
    from attention.blocks import CA, CBAM, SE

    torch.manual_seed(0)
    x = torch.rand(1, 3, 96, 128)
    stem = nn.Conv2d(3, 16, 8, stride=8)
    cbam, ca, se = _randomized(CBAM(16, 4)), _randomized(CA(16, 4)), _randomized(SE(16, 4))
    found = block_maps(nn.Sequential(stem, cbam, ca, se).eval(), x)
    assert [(m.where, m.block, m.kind, m.grid) for m in found] == [
        ("1", "CBAM", "spatial", (12, 16)), ("2", "CA", "spatial", (12, 16)), ("3", "SE", "channel", (12, 16))]
    with torch.no_grad():  # the gates by the papers' formulas, from each block's input (tests/oracles.py's way)
        f = stem(x)
        mc = torch.sigmoid(cbam.mlp(F.adaptive_avg_pool2d(f, 1)) + cbam.mlp(F.adaptive_max_pool2d(f, 1)))
        f1 = f * mc
        ms = torch.sigmoid(cbam.spatial(torch.cat([f1.mean(1, keepdim=True), f1.max(1, keepdim=True)[0]], 1)))
        f2 = cbam(f)
        n, c, h, w = f2.shape
        y = ca.act(ca.bn1(ca.conv1(torch.cat([F.adaptive_avg_pool2d(f2, (h, 1)),
                                              F.adaptive_avg_pool2d(f2, (1, w)).permute(0, 1, 3, 2)], 2))))
        a_h = torch.sigmoid(ca.conv_h(y[:, :, :h]))
        a_w = torch.sigmoid(ca.conv_w(y[:, :, h:].permute(0, 1, 3, 2)))
        f3 = ca(f2)
        s = torch.sigmoid(se.fc2(F.relu(se.fc1(f3.mean((2, 3))))))
    np.testing.assert_allclose(found[0].values, ms[0, 0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(found[1].values, (a_h * a_w).mean(1)[0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(found[2].values, s.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", attention.available())
def test_every_block_draws_a_map_that_varies(name):
    torch.manual_seed(0)
    block = attention.get(name)(64, 8) if name == "ShuffleAttention" else attention.get(name)(64)
    model = nn.Sequential(nn.Conv2d(3, 64, 8, stride=8), _randomized(block)).eval()
    found = block_maps(model, torch.rand(2, 3, 64, 96))
    assert len(found) == 1 and found[0].block == name
    values = found[0].values
    assert values.shape == ((8, 12) if found[0].kind == "spatial" else values.shape) and np.isfinite(values).all()
    assert np.ptp(values) > 1e-6, f"{name}: a constant {found[0].kind} map"  # float32 steps near 0.5: 6e-8


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
