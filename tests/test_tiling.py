"""Tiling a large-image dataset: windows cover the borders, labels are clipped exactly; the large embedded set."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import yaml

from attention.data import embedded as ds
from attention.data.tiling import clip_boxes, tile_dataset, windows

from conftest import REPO


def test_windows_cover_the_image_and_end_at_its_borders():
    wins = windows(1000, 600, 256, 0.25)  # step 256 - 64 = 192
    assert sorted({w[0] for w in wins}) == [0, 192, 384, 576, 744]  # last column aligned to the right border
    assert sorted({w[1] for w in wins}) == [0, 192, 344]  # last row aligned to the bottom border
    assert all(x1 - x0 == 256 and y1 - y0 == 256 for x0, y0, x1, y1 in wins)
    covered = np.zeros((600, 1000), bool)
    for x0, y0, x1, y1 in wins:
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    assert windows(200, 100, 100, 0.0) == [(0, 0, 100, 100), (100, 0, 200, 100)]
    assert windows(80, 50, 640, 0.2) == [(0, 0, 80, 50)]  # smaller than a tile: one tile, the image


def test_clip_boxes_exact_numbers():
    boxes = [
        [0, 80, 40, 120, 60],  # 40 x 20 across the border at x=100: half in each tile
        [1, 90, 10, 130, 30],  # 10 of 40 px wide in the left tile (25%), 30 of 40 in the right (75%)
        [2, 10, 10, 30, 30],  # wholly in the left tile
        [0, 100, 70, 120, 90],  # starts exactly at the border: wholly in the right tile
    ]
    left, right = (0, 0, 100, 100), (100, 0, 200, 100)
    assert clip_boxes(boxes, left, 0.3).tolist() == [[0, 80, 40, 100, 60], [2, 10, 10, 30, 30]]
    assert clip_boxes(boxes, right, 0.3).tolist() == [[0, 0, 40, 20, 60], [1, 0, 10, 30, 30], [0, 0, 70, 20, 90]]
    assert clip_boxes(boxes, left, 0.5).tolist() == [[0, 80, 40, 100, 60], [2, 10, 10, 30, 30]]  # 50% is kept
    assert clip_boxes(boxes, left, 0.6).tolist() == [[2, 10, 10, 30, 30]]
    assert clip_boxes(boxes, left, 0.0).tolist()[1] == [1, 90, 10, 100, 30]  # any visible fragment
    assert clip_boxes(np.zeros((0, 5)), left, 0.3).shape == (0, 5)


@pytest.fixture
def big_dataset(tmp_path):
    """One 200 x 100 train image with the boxes above, one 150 x 100 val image; YOLO format."""
    root = tmp_path / "big"
    for split, (w, h), lines in [
        ("train", (200, 100), ["0 0.5 0.5 0.2 0.2", "1 0.55 0.2 0.2 0.2", "2 0.1 0.2 0.1 0.2"]),
        ("val", (150, 100), ["0 0.5 0.5 0.1 0.1"]),
    ]:
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        img = np.random.default_rng(0).integers(0, 255, (h, w, 3), np.uint8)
        cv2.imwrite(str(root / "images" / split / f"{split}.png"), img)
        (root / "labels" / split / f"{split}.txt").write_text("\n".join(lines) + "\n")
    data = tmp_path / "big.yaml"
    data.write_text("path: big\ntrain: images/train\nval: images/val\nnames: [vehicle, person, boat]\n")
    return data, root


def test_tile_dataset_writes_clipped_yolo_labels(big_dataset, tmp_path):
    data, root = big_dataset
    out = tile_dataset(data, tmp_path / "tiles", size=100, overlap=0.0, min_visible=0.3)
    cfg = yaml.safe_load(out.read_text())
    assert cfg["path"] == str(tmp_path / "tiles") and cfg["train"] == "images/train" and cfg["val"] == "images/val"
    assert cfg["names"] == ["vehicle", "person", "boat"] and cfg["tiling"]["size"] == 100
    labels = tmp_path / "tiles" / "labels" / "train"
    assert sorted(p.name for p in labels.iterdir()) == ["train_0_0.txt", "train_100_0.txt"]
    # box 0: x 80..120 -> half in each tile; box 1: x 90..130 -> 25% left (dropped), 75% right; box 2: left only
    assert (labels / "train_0_0.txt").read_text() == (
        "0 0.900000 0.500000 0.200000 0.200000\n2 0.200000 0.200000 0.200000 0.200000\n")
    assert (labels / "train_100_0.txt").read_text() == (
        "0 0.100000 0.500000 0.200000 0.200000\n1 0.150000 0.200000 0.300000 0.200000\n")
    tile = cv2.imread(str(tmp_path / "tiles" / "images" / "train" / "train_100_0.png"))
    assert np.array_equal(tile, cv2.imread(str(root / "images" / "train" / "train.png"))[:, 100:200])
    # val: 150 px wide -> tiles at x=0 and x=50 (aligned to the border); its box (x 67.5..82.5) is in both
    val = tmp_path / "tiles" / "labels" / "val"
    assert sorted(p.name for p in val.iterdir()) == ["val_0_0.txt", "val_50_0.txt"]
    assert (val / "val_50_0.txt").read_text() == "0 0.250000 0.500000 0.150000 0.100000\n"


def test_tiling_command_line(big_dataset, tmp_path):
    data, _ = big_dataset
    proc = subprocess.run([sys.executable, "-m", "attention", "tiling", "--data", str(data), "--size", "100",
                           "--overlap", "0", "--min-visible", "0.6", "--drop-empty", "--out", str(tmp_path / "t")],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "t" / "labels" / "train" / "train_0_0.txt").read_text() == (
        "2 0.200000 0.200000 0.200000 0.200000\n")
    assert not (tmp_path / "t" / "labels" / "train" / "train_100_0.txt").read_text().startswith("0 ")
    bad = subprocess.run([sys.executable, "-m", "attention", "tiling", "--data", str(tmp_path / "nope.yaml"),
                          "--out", str(tmp_path / "x")], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and "data YAML not found" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_malformed_label_names_file_and_line(big_dataset, tmp_path):
    data, root = big_dataset
    (root / "labels" / "train" / "train.txt").write_text("0 0.5 0.5 0.2 0.2\n0 0.5 oops 0.2\n")
    with pytest.raises(ValueError, match=r"train\.txt:2: expected 'class cx cy w h'"):
        tile_dataset(data, tmp_path / "tiles", size=100)


# ----------------------------------------------------------------------------- the large embedded set


def test_large_variant_is_non_square_tiny_and_deterministic(tmp_path):
    root = ds.generate(tmp_path / "large", n_train=2, n_val=1, width=960, height=540, seed=0)
    assert cv2.imread(str(root / "images" / "train" / "train_00000.jpg")).shape == (540, 960, 3)
    marker = json.loads((root / ds.MARKER).read_text())
    assert marker["width"] == 960 and marker["height"] == 540
    rows = np.array([[float(v) for v in line.split()] for f in sorted((root / "labels").rglob("*.txt"))
                     for line in f.read_text().splitlines()])
    assert len(rows) >= 20  # more objects per image than the 320 px set draws (3-25)
    assert ((rows[:, 1:] >= 0) & (rows[:, 1:] <= 1)).all()
    side = np.sqrt(rows[:, 3] * 960 * rows[:, 4] * 540)
    assert (side < 16).mean() > 0.5 and (side < 32).mean() > 0.9  # most objects tiny next to the image
    again = ds.generate(tmp_path / "again", n_train=2, n_val=1, width=960, height=540, seed=0)
    for rel in ("images/train/train_00001.jpg", "labels/val/val_00000.txt"):
        assert (root / rel).read_bytes() == (again / rel).read_bytes()
    with pytest.raises(ValueError, match="both width and height"):
        ds.generate(tmp_path / "half", n_train=1, n_val=1, width=960)


def test_square_sets_are_unchanged_by_the_large_variant():
    # sha1 of the first two train and val images (pixels and labels) of the default set, as drawn
    # before the large variant existed: the embedded set and its caches stay valid.
    h = hashlib.sha1()
    for split in ("train", "val"):
        for i in range(2):
            img, boxes = ds._make_image(0, split, i, 320)
            h.update(img.tobytes())
            h.update(ds._label_text(boxes, 320).encode())
    assert h.hexdigest() == "fea3af7ff35b6800811d5575ea3fe140f5f6c1a5"


def test_large_data_yaml():
    cfg = yaml.safe_load((REPO / "data" / "tiny-objects-large.yaml").read_text())
    assert cfg["generate"] == {"seed": 0, "n_train": 40, "n_val": 10, "width": 1920, "height": 1080}
    assert list(cfg["names"].values()) == list(ds.CLASSES)
