"""COCO metrics by object size: known answers on hand-built cases, label conversion, agreement with ultralytics."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ultralytics.models.yolo.detect import DetectionValidator
from ultralytics.utils.metrics import ap_per_class, box_iou

from attention.data.coco_format import coco_to_yolo, yolo_to_coco
from attention.data.listing import label_file, load_split
from attention.evaluation.coco import evaluate, size_bins, size_shares

ALL_POINTS = 101  # COCO interpolates precision at 101 recall points


def box(i, x, y, w, h, img="a", cat=1):
    return {"id": i, "image_id": img, "category_id": cat, "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0}


# Two small boxes (10 px) in image a, two medium boxes (50 px) in image b.
GT = {
    "images": [{"id": "a", "width": 200, "height": 200}, {"id": 7, "width": 200, "height": 200}],
    "annotations": [box(1, 10, 10, 10, 10), box(2, 100, 100, 10, 10),
                    box(3, 10, 10, 50, 50, img=7), box(4, 100, 100, 50, 50, img=7)],
    "categories": [{"id": 1, "name": "thing"}],
}


def detections(shift=None, drop=None):
    out = []
    for a in GT["annotations"]:
        if a["id"] == drop:
            continue
        x, y, w, h = a["bbox"]
        if a["id"] == shift:
            x += 3 * w  # no overlap with any box: a false positive, and its object is missed
        score = 0.95 if w > 32 else 0.9 if a["id"] == 1 else 0.8
        out.append({"image_id": a["image_id"], "category_id": 1, "bbox": [x, y, w, h], "score": score})
    return out


def test_perfect_predictions_score_one_and_empty_bins_minus_one():
    m = evaluate(GT, detections())
    assert m["AP"] == m["AP50"] == m["AP75"] == m["AR"] == pytest.approx(1.0)
    assert m["AP_small"] == m["AP_medium"] == pytest.approx(1.0)
    assert m["AP_large"] == m["AR_large"] == -1  # no large objects exist


def test_a_shifted_small_box_changes_only_the_small_bin():
    m = evaluate(GT, detections(shift=2))
    # small: the first of two objects found before any error, recall stops at 0.5 -> 51 of 101 points.
    assert m["AP_small"] == pytest.approx(51 / ALL_POINTS)
    assert m["AR_small"] == pytest.approx(0.5)
    assert m["AP_medium"] == pytest.approx(1.0) and m["AR_medium"] == pytest.approx(1.0)
    # all sizes: three of four found, the false positive ranked last -> 76 of 101 points.
    assert m["AP"] == pytest.approx(76 / ALL_POINTS)


def test_a_missed_medium_box_changes_only_the_medium_bin():
    m = evaluate(GT, detections(drop=4))
    assert m["AP_medium"] == pytest.approx(51 / ALL_POINTS) and m["AR_medium"] == pytest.approx(0.5)
    assert m["AP_small"] == pytest.approx(1.0)


def test_no_predictions_score_zero():
    m = evaluate(GT, [])
    assert m["AP"] == 0 and m["AP_small"] == 0 and m["AP_large"] == -1


def test_tiny_preset_bins():
    bins = size_bins("tiny")
    assert bins == {"very_tiny": (0, 8), "tiny": (8, 16), "small": (16, 32), "medium": (32, math.inf)}
    m = evaluate(GT, detections(shift=2), bins)
    assert m["AP_tiny"] == pytest.approx(51 / ALL_POINTS) and m["AP_medium"] == pytest.approx(1.0)
    assert m["AP_very_tiny"] == m["AP_small"] == -1
    assert size_shares(GT, bins) == {"very_tiny": 0.0, "tiny": 0.5, "small": 0.0, "medium": 0.5}


def test_custom_bins_and_bad_bins():
    assert size_bins("0,16,inf") == {"0-16": (0, 16), "16-inf": (16, math.inf)}
    for bad in ("16,8", "abc", "5"):
        with pytest.raises(ValueError, match="size bins must be coco or tiny or ascending edges"):
            size_bins(bad)


def test_yolo_labels_round_trip_through_coco(tiny_data):
    cfg = yaml.safe_load(tiny_data.read_text())
    images = load_split(tiny_data, "val")[1]
    coco = yolo_to_coco(images, cfg["names"])
    assert len(coco["images"]) == len(images) and coco["annotations"]
    back = coco_to_yolo(coco)
    for path in images:
        original = [tuple(map(float, line.split())) for line in label_file(path).read_text().splitlines()]
        assert np.allclose(np.array(back[path.stem]), np.array(original), atol=1e-9)
    assert all(a["area"] == pytest.approx(a["bbox"][2] * a["bbox"][3]) for a in coco["annotations"])


def test_coco_ap_agrees_with_ultralytics_map(tiny_data):
    """Where both measure the same thing (AP over IoU 0.5:0.95, and at 0.5), they agree within 0.02."""
    import inspect

    if "descending confidence" not in inspect.getsource(DetectionValidator.match_predictions):
        pytest.skip("this ultralytics release matches predictions by IoU, not in confidence order as COCO does")
    cfg = yaml.safe_load(tiny_data.read_text())
    gt = yolo_to_coco(load_split(tiny_data, "val")[1], cfg["names"])
    rng = np.random.default_rng(0)
    xyxy = lambda b: torch.tensor(np.c_[b[:, :2], b[:, :2] + b[:, 2:]], dtype=torch.float32)
    preds, stats = [], {"tp": [], "conf": [], "pred_cls": [], "target_cls": []}
    validator = DetectionValidator()  # ultralytics' own matching of predictions to labels
    validator.iouv = torch.linspace(0.5, 0.95, 10)
    for im in gt["images"]:
        anns = [a for a in gt["annotations"] if a["image_id"] == im["id"]]
        g = np.array([a["bbox"] for a in anns], dtype=float).reshape(-1, 4)
        gc = np.array([a["category_id"] - 1 for a in anns], dtype=int)
        keep = rng.random(len(g)) > 0.15  # miss 15% of the objects
        jitter = rng.normal(0, 0.06, g.shape) * np.repeat(g[:, 2:], 2, axis=1)  # ~6% of the box size
        fp = np.c_[rng.uniform(0, 140, (3, 2)), rng.uniform(5, 20, (3, 2))]  # three false positives
        p = np.concatenate([(g + jitter)[keep], fp])
        pc = np.concatenate([gc[keep], rng.integers(0, 3, 3)])
        conf = rng.uniform(0.05, 1, len(p))
        preds += [{"image_id": im["id"], "category_id": int(c) + 1, "bbox": b.tolist(), "score": float(s)}
                  for b, c, s in zip(p, pc, conf)]
        tp = validator.match_predictions(torch.tensor(pc), torch.tensor(gc), box_iou(xyxy(g), xyxy(p)))
        for k, v in zip(stats, (tp, conf, pc, gc)):
            stats[k].append(v)
    ap = ap_per_class(*(np.concatenate(stats[k]) for k in stats))[5]  # [classes, 10 IoU thresholds]
    ours = evaluate(gt, preds)
    assert 0.2 < ours["AP"] < 0.9  # a case with something to disagree about
    assert abs(ours["AP"] - ap.mean()) < 0.02 and abs(ours["AP50"] - ap[:, 0].mean()) < 0.02


def test_dataset_size_report(tiny_data, tmp_path):
    from attention.cli.main import main
    from attention.data.sizes import object_sizes

    sizes = object_sizes(str(tiny_data))
    cfg = yaml.safe_load(tiny_data.read_text())
    for split in ("train", "val"):
        labels = sorted((Path(cfg["path"]) / "labels" / split).glob("*.txt"))
        rows = [line.split() for p in labels for line in p.read_text().splitlines()]
        assert sum(len(s) for s in sizes[split].values()) == len(rows)
        vehicle = sorted(np.sqrt(float(r[3]) * 160 * float(r[4]) * 160) for r in rows if r[0] == "0")
        assert np.allclose(sorted(sizes[split]["vehicle"]), vehicle)
    table = main(["sizes", "--data", str(tiny_data), "--project", str(tmp_path), "--name", "r"])
    val_all = next(r for r in table if r["split"] == "val" and r["class"] == "all")
    shares = [float(val_all[b].rstrip("%")) for b in ("very tiny", "tiny", "small", "medium", "large")]
    assert sum(shares) == pytest.approx(100, abs=0.3) and val_all["objects"] > 0
    assert (tmp_path / "r" / "sizes.png").stat().st_size > 5000 and (tmp_path / "r" / "sizes.csv").is_file()
