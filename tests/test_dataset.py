"""Embedded synthetic dataset: determinism, label validity, object sizes, cache, and prepare_data."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from attention import cfg as shipped
from attention.data import embedded as ds
from attention.data.embedded import CLASSES, MARKER, generate
from attention.data.prepare import EMBEDDED_DATA, ENV_DATASETS, datasets_dir, prepare_data
from attention.errors import UserError


def _labels(root: Path) -> list[list[float]]:
    """All label rows of both splits."""
    rows = []
    for f in sorted((root / "labels").rglob("*.txt")):
        rows += [[float(v) for v in line.split()] for line in f.read_text().splitlines()]
    return rows


def _snapshot(root: Path) -> dict[str, int]:
    """Relative path -> mtime_ns of every file under root."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """A 10+4 image dataset shared by the read-only tests."""
    return generate(tmp_path_factory.mktemp("ds") / "tiny", n_train=10, n_val=4, seed=3, workers=2)


def test_layout(small):
    for split, n in (("train", 10), ("val", 4)):
        images = sorted((small / "images" / split).glob("*.jpg"))
        labels = sorted((small / "labels" / split).glob("*.txt"))
        assert len(images) == len(labels) == n
        assert [p.stem for p in images] == [p.stem for p in labels]
        assert cv2.imread(str(images[0])).shape == (320, 320, 3)
    assert json.loads((small / MARKER).read_text())["n_train"] == 10


def test_deterministic(small, tmp_path):
    other = generate(tmp_path / "again", n_train=10, n_val=4, seed=3, workers=1)  # other worker count too
    files = sorted(p.relative_to(small) for p in small.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(other) for p in other.rglob("*") if p.is_file())
    for rel in files:
        assert (small / rel).read_bytes() == (other / rel).read_bytes(), rel
    different = generate(tmp_path / "seed4", n_train=10, n_val=4, seed=4)
    first = "labels/train/train_00000.txt"
    assert (different / first).read_text() != (small / first).read_text()


def test_labels_valid(small):
    for f in (small / "labels").rglob("*.txt"):
        text = f.read_text()
        lines = text.splitlines()
        assert 3 <= len(lines) <= 25, f
        for line in lines:
            fields = line.split()
            assert len(fields) == 5, line
            assert all(len(v.split(".")[1]) == 6 for v in fields[1:]), line
            c, x, y, w, h = map(float, fields)
            assert c == int(c) and 0 <= c < len(CLASSES)
            assert 0 < w <= 1 and 0 < h <= 1
            assert 0 <= x - w / 2 + 1e-6 and x + w / 2 - 1e-6 <= 1 and 0 <= y - h / 2 + 1e-6 and y + h / 2 - 1e-6 <= 1


def test_mostly_small_and_all_classes(small):
    rows = np.array(_labels(small))
    area = rows[:, 3] * rows[:, 4] * 320 * 320  # native pixels
    assert len(rows) >= 50
    assert (area < 32 * 32).mean() >= 0.8
    assert (area < 16 * 16).mean() >= 0.3  # a good share is really tiny
    assert set(rows[:, 0].astype(int)) == set(range(len(CLASSES)))


def test_boxes_tight():
    # plain mode: objects only, on black, so every non-black pixel belongs to a labelled object
    for i in range(4):
        img, boxes = ds._make_image(7, "train", i, 320, plain=True)
        drawn = img.max(-1) > 0
        inside = np.zeros_like(drawn)
        for _, x0, y0, x1, y1 in boxes:
            x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, 320), min(y1, 320)
            inside[y0:y1, x0:x1] = True
            box = drawn[y0:y1, x0:x1]
            # tight: the object reaches all four edges of its box
            assert box[0].any() and box[-1].any() and box[:, 0].any() and box[:, -1].any()
        assert not (drawn & ~inside).any(), "pixels drawn outside every box"
        # the labels written to disk are the same boxes
        text = ds._label_text(boxes, 320)
        assert len(text.splitlines()) == len(boxes)


def test_cache_reuse_and_regeneration(tmp_path):
    root = generate(tmp_path / "c", n_train=3, n_val=2, seed=1)
    before = _snapshot(root)
    assert generate(root, n_train=3, n_val=2, seed=1) == root
    assert _snapshot(root) == before  # reused: nothing rewritten
    (root / MARKER).unlink()  # as if the run had been interrupted
    generate(root, n_train=3, n_val=2, seed=1)
    assert (root / MARKER).is_file()
    assert _snapshot(root).keys() == before.keys()
    generate(root, n_train=4, n_val=2, seed=1)  # other parameters: regenerated, not mixed
    assert len(list((root / "images/train").glob("*.jpg"))) == 4
    assert not list(tmp_path.glob(".c.tmp-*"))  # no temp dirs left behind


def test_refuses_foreign_dir(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="refusing to overwrite"):
        generate(tmp_path / "mine", n_train=2, n_val=1)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_prepare_data_missing(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(FileNotFoundError, match="nope.yaml") as e:
        prepare_data(missing)
    assert str(missing) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "text, what",
    [
        ("train: a\nval: b\n", "names"),
        ("names: [a]\n", "train"),
        ("- a\n- b\n", "mapping"),
        ("names: [a\n", "is not valid YAML"),
        ("names: 3\ntrain: a\nval: b\n", "names"),
    ],
)
def test_prepare_data_invalid(write_yaml, text, what):
    path = write_yaml("bad.yaml", text)
    with pytest.raises(ValueError, match=what) as e:
        prepare_data(path)
    assert "bad.yaml" in str(e.value)


def test_prepare_data_generates_into_the_user_cache(write_yaml, tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_DATASETS, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    src = write_yaml(
        "tiny.yaml",
        "path: tiny\ntrain: images/train\nval: images/val\nnames: {0: vehicle, 1: person, 2: boat}\n"
        "generate: {seed: 0, n_train: 3, n_val: 2, imgsz: 160}\n",
    )
    out = Path(prepare_data(src))
    cfg = yaml.safe_load(out.read_text())
    root = Path(cfg["path"])
    assert root == tmp_path / "cache" / "yolov5-attention" / "datasets" / "tiny" == datasets_dir() / "tiny"
    assert not (tmp_path / "tiny").exists()  # nothing next to the YAML (in a wheel: site-packages)
    assert "generate" not in cfg and cfg["names"] == {0: "vehicle", 1: "person", 2: "boat"}
    for split in ("train", "val"):
        assert any((root / cfg[split]).iterdir())
    assert prepare_data(src) == str(out)  # second call reuses the cache

    monkeypatch.setenv(ENV_DATASETS, str(tmp_path / "elsewhere"))
    moved = yaml.safe_load(Path(prepare_data(src)).read_text())["path"]
    assert Path(moved) == (tmp_path / "elsewhere" / "tiny").resolve()


def test_shipped_data_yaml_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # any folder: the name is looked up among the shipped data YAMLs
    monkeypatch.setenv(ENV_DATASETS, str(tmp_path / "cache"))
    assert shipped.resolve("data", "tiny-objects.yaml", "data YAML") == shipped.folder("data") / "tiny-objects.yaml"
    with pytest.raises(FileNotFoundError, match="data YAML not found: nope.yaml .shipped: tiny-objects-large.yaml"):
        prepare_data("nope.yaml")


def test_prepare_data_ordinary(write_yaml, tmp_path):
    (tmp_path / "mydata" / "images").mkdir(parents=True)
    src = write_yaml("plain.yaml", "path: mydata\ntrain: images\nval: images\nnames: [a]\n")
    cfg = yaml.safe_load(Path(prepare_data(src)).read_text())
    assert cfg["path"] == str((tmp_path / "mydata").resolve())
    other = write_yaml("other.yaml", "path: not-here\ntrain: images\nval: images\nnames: [a]\n")
    assert prepare_data(other) == str(other.resolve())


def test_embedded_yaml():
    cfg = yaml.safe_load((shipped.folder("data") / EMBEDDED_DATA).read_text())
    assert list(cfg["names"].values()) == list(CLASSES)
    assert cfg["generate"] == {"seed": 0, "n_train": 400, "n_val": 100, "imgsz": 320}
    assert cfg["path"] == "tiny-objects"  # a folder of the dataset cache
