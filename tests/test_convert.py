"""Converters: VisDrone2019-DET and COCO-JSON fixture files (written here) to the expected YOLO lines."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import yaml

from attention.cli.main import main
from attention.data.convert import VISDRONE_NAMES, convert_coco, convert_visdrone

from conftest import REPO


def write_image(path, w, h, value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), value, np.uint8))


@pytest.fixture
def visdrone(tmp_path):
    """A VisDrone2019-DET-val folder: two 200 x 100 images and their annotation files."""
    src = tmp_path / "VisDrone2019-DET-val"
    write_image(src / "images" / "0000001_00000_d_0000001.png", 200, 100)
    write_image(src / "images" / "0000002_00000_d_0000002.png", 200, 100)
    (src / "annotations").mkdir()
    (src / "annotations" / "0000001_00000_d_0000001.txt").write_text(
        "20,10,40,20,1,4,0,0\n"  # car (4) -> class 3
        "100,50,10,30,1,1,0,1\n"  # pedestrian (1) -> class 0
        "180,90,40,20,1,10,1,0\n"  # motor (10) -> class 9, cut by the border: clipped to 180..200, 90..100
        "150,0,50,40,0,0,0,0\n"  # ignored region (category 0, score 0): no label, blacked out
        "60,60,20,20,1,11,0,0\n"  # others (11): dropped
    )
    (src / "annotations" / "0000002_00000_d_0000002.txt").write_text("0,0,50,50,1,9,0,0,\n")  # trailing comma: bus
    return src


def test_visdrone_to_yolo_lines(visdrone, tmp_path):
    data = convert_visdrone(visdrone, tmp_path / "out")
    labels = tmp_path / "out" / "labels" / "val"
    assert (labels / "0000001_00000_d_0000001.txt").read_text() == (
        "3 0.200000 0.200000 0.200000 0.200000\n"
        "0 0.525000 0.650000 0.050000 0.300000\n"
        "9 0.950000 0.950000 0.100000 0.100000\n"
    )
    assert (labels / "0000002_00000_d_0000002.txt").read_text() == "8 0.125000 0.250000 0.250000 0.500000\n"
    cfg = yaml.safe_load(data.read_text())
    assert cfg["val"] == "images/val" and list(cfg["names"].values()) == list(VISDRONE_NAMES)
    assert cfg["path"] == str((tmp_path / "out").resolve())
    # the ignored region is black, the rest of the image untouched; an image without one is copied as is
    img = cv2.imread(str(tmp_path / "out" / "images" / "val" / "0000001_00000_d_0000001.png"))
    assert (img[0:40, 150:200] == 0).all() and (img[40:, :] == 128).all() and (img[:, :150] == 128).all()
    same = "images/val/0000002_00000_d_0000002.png"
    assert (tmp_path / "out" / same).read_bytes() == (visdrone / same.replace("val/", "")).read_bytes()


def test_visdrone_keep_ignored_and_split_from_folder_name(visdrone, tmp_path):
    train = visdrone.rename(visdrone.with_name("VisDrone2019-DET-train"))
    main(["convert", "visdrone", "--src", str(train), "--out", str(tmp_path / "out"), "--keep-ignored"])
    out = tmp_path / "out" / "images" / "train" / "0000001_00000_d_0000001.png"
    assert out.read_bytes() == (train / "images" / out.name).read_bytes()
    cfg = yaml.safe_load((tmp_path / "out" / "data.yaml").read_text())
    assert cfg["train"] == "images/train"


def test_visdrone_malformed_line_names_file_and_line(visdrone, tmp_path):
    ann = visdrone / "annotations" / "0000002_00000_d_0000002.txt"
    ann.write_text("0,0,50,50,1,9,0,0\n1,2,three,4,1,1,0,0\n")
    with pytest.raises(ValueError, match=r"0000002_00000_d_0000002\.txt:2: expected 'bbox_left,bbox_top"):
        convert_visdrone(visdrone, tmp_path / "out")
    ann.write_text("0,0,50,50,1,12,0,0\n")
    with pytest.raises(ValueError, match=r"\.txt:1: object_category must be 0-11, got 12"):
        convert_visdrone(visdrone, tmp_path / "out")


@pytest.fixture
def coco(tmp_path):
    """A COCO-JSON file with sparse category ids, a crowd box and an image without annotations."""
    images = tmp_path / "coco_images"
    write_image(images / "a.jpg", 100, 50)
    write_image(images / "sub" / "b.jpg", 80, 80)
    write_image(images / "c.jpg", 64, 64)
    doc = {
        "images": [{"id": 10, "file_name": "a.jpg", "width": 100, "height": 50},
                   {"id": 11, "file_name": "sub/b.jpg", "width": 80, "height": 80},
                   {"id": 12, "file_name": "c.jpg", "width": 64, "height": 64}],
        "categories": [{"id": 7, "name": "truck"}, {"id": 3, "name": "car"}, {"id": 18, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 3, "bbox": [10, 5, 20, 10], "iscrowd": 0},  # car -> 0
            {"id": 2, "image_id": 10, "category_id": 18, "bbox": [90, 40, 20, 20], "iscrowd": 0},  # dog -> 2, clipped
            {"id": 3, "image_id": 11, "category_id": 7, "bbox": [0, 0, 40, 20]},  # truck -> 1
            {"id": 4, "image_id": 11, "category_id": 7, "bbox": [40, 40, 40, 40], "iscrowd": 1},  # crowd: skipped
        ],
    }
    path = tmp_path / "instances_val.json"
    path.write_text(json.dumps(doc))
    return path, images


def test_coco_to_yolo_lines(coco, tmp_path):
    path, images = coco
    data = convert_coco(path, images, tmp_path / "out")
    labels = tmp_path / "out" / "labels" / "val"
    assert (labels / "a.txt").read_text() == (
        "0 0.200000 0.200000 0.200000 0.200000\n"
        "2 0.950000 0.900000 0.100000 0.200000\n"
    )
    assert (labels / "sub" / "b.txt").read_text() == "1 0.250000 0.125000 0.500000 0.250000\n"
    assert (labels / "c.txt").read_text() == ""  # no annotations: an empty label file (a background image)
    assert (tmp_path / "out" / "images" / "val" / "sub" / "b.jpg").is_file()
    cfg = yaml.safe_load(data.read_text())
    assert cfg["names"] == {0: "car", 1: "truck", 2: "dog"}  # sorted by category id
    assert cfg["val"] == "images/val" and cfg["train"] == "images/val"


def test_coco_errors(coco, tmp_path):
    path, images = coco
    with pytest.raises(FileNotFoundError, match="COCO JSON not found: .*missing.json"):
        convert_coco(tmp_path / "missing.json", images, tmp_path / "out")
    doc = json.loads(path.read_text())
    doc["annotations"].append({"id": 9, "image_id": 99, "category_id": 3, "bbox": [0, 0, 1, 1]})
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"annotations\[4\] refers to image_id 99"):
        convert_coco(path, images, tmp_path / "out")


def test_missing_source_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "attention", "convert", "visdrone", "--src", str(tmp_path / "nope"),
                           "--out", str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith(f"error: VisDrone source folder not found: {tmp_path / 'nope'}")
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_visdrone_data_yaml_matches_the_converter():
    cfg = yaml.safe_load((REPO / "data" / "visdrone.yaml").read_text())  # found by prepare_data here or in cwd
    assert list(cfg["names"].values()) == list(VISDRONE_NAMES)
    assert cfg["path"] == "datasets/visdrone" and cfg["train"] == "images/train" and cfg["val"] == "images/val"
