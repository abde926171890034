"""Sliced inference (sahi) with a checkpoint holding an attention block: tiny objects in large images."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import yaml
from torch import nn
from ultralytics import YOLO
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils.files import increment_path

from attention.inference.detect import detect
from attention.inference.slicing import Prediction, SlicedPredictor, predict_sliced

from conftest import REPO

# A one-level detector (stride 8) whose weights are set by hand rather than trained, so the test is
# fast and exact: it fires on bright squares of about 24 px (box 24 x 24) and on nothing smaller.
# It carries an ECA block, so it is also a checkpoint that needs `import attention` to load.
WIRED = """
nc: 1
backbone:
  - [-1, 1, Conv, [8, 3, 2]]  # 0 P1/2
  - [-1, 1, Conv, [8, 3, 2]]  # 1 P2/4
  - [-1, 1, Conv, [8, 3, 2]]  # 2 P3/8
  - [-1, 1, ECA, []]          # 3
head:
  - [[3], 1, Detect, [nc]]    # 4
"""
TILE = 128  # the detector's native inference size
OBJ = (610, 300, 634, 324)  # a 24 px white square in a 1024 x 576 image


def wired_model() -> DetectionModel:
    model = DetectionModel(yaml.safe_load(WIRED), ch=3, nc=1, verbose=False).eval()
    det = model.model[-1]
    if isinstance(det.cv3[0][0], nn.Sequential):  # 8.3.x gives this YAML YOLO11's depthwise class head
        pytest.skip("the hand-wired detector needs the plain-conv class head ultralytics builds here from 8.4 on")
    keep = set(det.dfl.modules())  # DFL's fixed 0..15 projection stays
    with torch.no_grad():
        for m in model.modules():
            if m in keep:
                continue
            if isinstance(m, nn.Conv2d):  # every conv: a local mean over all its inputs
                m.weight.fill_(1.0 / m.weight[0].numel())
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(1), m.bias.zero_(), m.running_mean.zero_(), m.running_var.fill_(1)
            elif isinstance(m, nn.Conv1d):  # ECA: a constant gate of 0.5
                m.weight.zero_()
        box, cls = det.cv2[0][-1], det.cv3[0][-1]
        box.weight.zero_()
        box.bias.zero_()
        box.bias.view(4, det.reg_max)[:, 1:3] = 10  # every side 1.5 strides from the anchor: a 24 px box
        # class logit 2000 * (local mean - 0.01): about +22 on a 24 px square, below -15 on 3 px or background
        cls.weight.fill_(2000.0 / cls.weight.shape[1])
        cls.bias.fill_(-20.0)
    model.names = {0: "square"}
    return model


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("wired") / "wired.pt"
    torch.save({"model": wired_model(), "train_args": {"imgsz": TILE}}, path)
    return path


@pytest.fixture(scope="module")
def big_image(tmp_path_factory):
    img = np.full((576, 1024, 3), 26, np.uint8)
    x0, y0, x1, y1 = OBJ
    img[y0:y1, x0:x1] = 255
    path = tmp_path_factory.mktemp("img") / "big.png"
    cv2.imwrite(str(path), img)
    return path


def iou(boxes: np.ndarray, box) -> np.ndarray:
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(boxes[:, 2], box[2]) - np.maximum(boxes[:, 0], box[0]), 0, None)
    iy = np.clip(np.minimum(boxes[:, 3], box[3]) - np.maximum(boxes[:, 1], box[1]), 0, None)
    inter = ix * iy
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / (area + (box[2] - box[0]) * (box[3] - box[1]) - inter)


def test_slicing_finds_the_tiny_object_that_full_image_inference_misses(weights, big_image):
    model = YOLO(str(weights))
    assert any(type(m).__name__ == "ECA" for m in model.model.modules())
    # full image at the detector's size: the 24 px square shrinks to 3 px and is lost
    full = model.predict(str(big_image), imgsz=TILE, conf=0.25, verbose=False)[0].boxes
    assert len(full) == 0
    # the same model on 128 px tiles (plus sahi's whole-image pass), merged by NMS
    pred = predict_sliced(model, big_image, slice_size=TILE, overlap=0.2, conf=0.25, merge="NMS", match_metric="IOU")
    assert iou(pred.xyxy, OBJ).max() > 0.7
    assert (iou(pred.xyxy, OBJ) > 0).all()  # nothing anywhere else in the image
    # sahi's default merge (GREEDYNMM) unites the overlapping boxes of the square into one
    merged = predict_sliced(model, big_image, slice_size=TILE, conf=0.25)
    assert iou(merged.xyxy, OBJ).max() > 0.4 and (iou(merged.xyxy, OBJ) > 0).all()


def test_prediction_arrays_for_val(weights, big_image):
    predictor = SlicedPredictor(str(weights), slice_size=TILE, overlap=0.25, conf=0.25, full_image=False)
    bgr = cv2.imread(str(big_image))
    pred = predictor(bgr)
    assert isinstance(pred, Prediction)
    xyxy, conf, cls = pred
    assert xyxy.dtype == np.float32 and conf.dtype == np.float32 and cls.dtype == np.int64
    assert xyxy.shape == (len(conf), 4) == (len(cls), 4) and len(conf) > 0
    assert (np.diff(conf) <= 0).all() and (cls == 0).all()
    assert (xyxy[:, [0, 2]] >= 0).all() and (xyxy[:, [0, 2]] <= 1024).all() and (xyxy[:, [1, 3]] <= 576).all()
    assert predict_sliced(predictor, big_image).xyxy.tolist() == xyxy.tolist()  # a predictor is reused as is
    empty = predictor(np.full((300, 500, 3), 26, np.uint8))
    assert empty.xyxy.shape == (0, 4) and empty.conf.shape == (0,) and empty.cls.shape == (0,)


def test_detect_sliced_saves_images_and_labels_in_original_pixels(weights, big_image, tmp_path):
    out = detect(str(weights), str(big_image), slice_size=TILE, save_txt=True, save_conf=True, project=tmp_path,
                 name="exp")
    assert out == tmp_path / "exp" and cv2.imread(str(out / "big.png")).shape == (576, 1024, 3)
    rows = np.array([[float(v) for v in line.split()] for line in (out / "labels" / "big.txt").read_text().splitlines()])
    cls, cx, cy, w, h, conf = rows.T
    boxes = np.c_[(cx - w / 2) * 1024, (cy - h / 2) * 576, (cx + w / 2) * 1024, (cy + h / 2) * 576]
    assert (cls == 0).all() and (conf >= 0.25).all() and iou(boxes, OBJ).max() > 0.4
    expected = increment_path(tmp_path / "exp")  # the next folder, named as ultralytics names it
    assert detect(str(weights), str(big_image), slice_size=TILE, project=tmp_path, name="exp") == expected


def test_detect_sliced_video_runs_frame_by_frame(weights, big_image, tmp_path):
    video = tmp_path / "clip.mp4"
    frame = cv2.imread(str(big_image))
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (1024, 576))
    for _ in range(3):
        writer.write(frame)
    writer.release()
    out = detect(str(weights), str(video), slice_size=TILE, save_txt=True, project=tmp_path / "runs")
    assert cv2.VideoCapture(str(out / "clip.mp4")).get(cv2.CAP_PROP_FRAME_COUNT) == 3
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["clip_0.txt", "clip_1.txt", "clip_2.txt"]


@pytest.mark.parametrize("kwargs, message", [
    ({"slice_overlap": 1.0}, "--slice-overlap must be in"),
    ({"slice_size": 8}, "--slice-size must be at least 32"),
])
def test_bad_slice_arguments(weights, big_image, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        detect(str(weights), str(big_image), **{"slice_size": TILE, **kwargs}, project=tmp_path)


def test_detect_py_slice_flags_and_stream_refusal(weights, big_image, tmp_path):
    env = {**os.environ, "YOLO_OFFLINE": "1"}
    args = [sys.executable, str(REPO / "detect.py"), "--weights", str(weights)]
    proc = subprocess.run([*args, "--source", str(big_image), "--slice-size", str(TILE), "--slice-overlap", "0.3",
                           "--save-txt"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "runs" / "detect" / "exp" / "labels" / "big.txt").read_text().strip()
    proc = subprocess.run([*args, "--source", "rtsp://camera/stream", "--slice-size", "640"], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "--slice-size works on image files, folders, globs and video files" in proc.stderr


def test_val_with_slicing_finds_what_full_image_val_misses(weights, tmp_path):
    """val.py --slice-size gives the same table as plain val.py, with the gain visible beside it."""
    from attention.adapter import compat
    from attention.evaluation.validate import val

    if compat.missing("sliced_val"):
        with pytest.raises(ValueError, match=r"val --slice-size .* needs ultralytics 8\.3\.154"):  # switched off
            val(str(weights), data=str(tmp_path / "none.yaml"), slice_size=640)
        pytest.skip("this release lacks what sliced scoring needs: checked that it says so")

    root = tmp_path / "big"
    for split in ("val",):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for k in range(2):
            img = np.full((576, 1024, 3), 26, np.uint8)
            x0, y0, x1, y1 = OBJ[0] - 200 * k, OBJ[1], OBJ[2] - 200 * k, OBJ[3]
            img[y0:y1, x0:x1] = 255
            cv2.imwrite(str(root / "images" / split / f"{k}.png"), img)
            cx, cy, w, h = (x0 + x1) / 2 / 1024, (y0 + y1) / 2 / 576, (x1 - x0) / 1024, (y1 - y0) / 576
            (root / "labels" / split / f"{k}.txt").write_text(f"0 {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n")
    data = tmp_path / "big.yaml"
    data.write_text(yaml.safe_dump({"path": str(root), "train": "images/val", "val": "images/val", "names": ["square"]}))
    kw = dict(data=data, batch_size=2, project=tmp_path / "runs", exist_ok=True)
    full = val(str(weights), imgsz=TILE, name="full", **kw)
    sliced = val(str(weights), slice_size=TILE, slice_overlap=0.2, name="sliced", **kw)
    assert [list(r) for r in full] == [list(r) for r in sliced]  # same table
    assert full[0]["mAP50"] < 0.1 and sliced[0]["mAP50"] > 0.5 and sliced[0]["instances"] == 2
    coco = json.loads((tmp_path / "runs" / "sliced" / "results.json").read_text())["coco"]
    assert coco["AP50"] > 0.5 and coco["AP_small"] > 0.3
