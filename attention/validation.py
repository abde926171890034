"""val.py's job: score one or several checkpoints on a dataset split.

ultralytics' validator computes P, R, mAP50 and mAP50-95 and writes its predictions in COCO form;
attention.coco adds COCO AP/AR by object size from those predictions. With several checkpoints,
every model is scored on the same data in the same run, with params, GFLOPs and latency beside.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from ultralytics import YOLO
from ultralytics.data.utils import check_det_dataset
from ultralytics.models.yolo.detect import DetectionValidator
from ultralytics.utils.metrics import DetMetrics
from ultralytics.utils.files import increment_path

from attention.coco import evaluate, image_id, size_bins, split_images, yolo_to_coco
from attention.data_audit import check_data
from attention.dataset import EMBEDDED_DATA, prepare_data
from attention.paths import resolve_weights
from attention.report import METRIC_COLUMNS, box_metrics, format_table, model_size, write_table


def load_split(data: str, task: str) -> tuple[dict[str, Any], list[Path]]:
    """The checked data dict and the image files of its split `task`."""
    if task not in {"train", "val", "test"}:
        raise ValueError(f"--task must be train, val or test, got {task!r}")
    cfg = check_det_dataset(data, autodownload=False)
    if not cfg.get(task):
        raise ValueError(f"--task {task}: the data YAML {data} has no '{task}' split")
    return cfg, split_images(Path(cfg["path"]), cfg[task])


def variant_name(model: YOLO, weights: str) -> str:
    """The model YAML's name (yolov5n-cbam), else the checkpoint's file name."""
    yaml_file = getattr(model.model, "yaml", {}).get("yaml_file")
    return Path(yaml_file).stem if yaml_file else Path(weights).stem


def latency_ms(models: Sequence[torch.nn.Module], imgsz: int, device: torch.device, repeats: int = 30) -> list[float]:
    """Median batch-1 forward latency of each model, measured interleaved so load changes hit all alike."""
    x = torch.zeros(1, 3, imgsz, imgsz, device=device)
    times: list[list[float]] = [[] for _ in models]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        for r in range(repeats + 3):  # 3 warm-up rounds
            for k, m in enumerate(models):
                sync()
                t = time.perf_counter()
                m(x)
                sync()
                if r >= 3:
                    times[k].append((time.perf_counter() - t) * 1e3)
    return [statistics.median(t) for t in times]


def score(model: YOLO, data: str, images: list[Path], names: list[str], bins: dict, task: str, save_dir: Path,
          **val_args: Any) -> tuple[Any, dict[str, float]]:
    """ultralytics' metrics and our COCO-by-size metrics for one model, saved in save_dir."""
    metrics = model.val(data=data, split=task, save_json=True, project=str(save_dir.parent), name=save_dir.name,
                        exist_ok=True, **val_args)
    pred_file = Path(metrics.save_dir) / "predictions.json"
    predictions = json.loads(pred_file.read_text()) if pred_file.is_file() else []
    coco = evaluate(yolo_to_coco(images, names), predictions, bins)
    (Path(metrics.save_dir) / "coco_metrics.json").write_text(json.dumps(coco, indent=1))
    return metrics, coco


def sliced_score(model: YOLO, images: list[Path], names: list[str], bins: dict, save_dir: Path, slice_size: int,
                 slice_overlap: float, imgsz: int | None, conf: float, iou: float, device: str | None,
                 **_: Any) -> tuple[DetMetrics, dict[str, float]]:
    """The same metrics as score(), from sliced inference (attention.slicing, on sahi) image by image.

    Predictions are matched to labels and averaged by ultralytics' own validator and metrics code.
    """
    from attention.slicing import SlicedPredictor

    predictor = SlicedPredictor(model, slice_size=slice_size, overlap=slice_overlap, imgsz=imgsz, conf=conf, iou=iou,
                                device=device)
    gt = yolo_to_coco(images, names)
    boxes: dict[Any, list] = {im["id"]: [] for im in gt["images"]}
    for a in gt["annotations"]:
        boxes[a["image_id"]].append((a["category_id"] - 1, *a["bbox"]))
    matcher, metrics = DetectionValidator(), DetMetrics(names=dict(enumerate(names)))
    matcher.iouv = torch.linspace(0.5, 0.95, 10)
    matcher.niou = matcher.iouv.numel()
    dets = []
    for path in (p for p in images if image_id(p) in boxes):
        pred = predictor(path)
        g = np.array(boxes[image_id(path)], dtype=np.float32).reshape(-1, 5)
        labels = {"cls": torch.from_numpy(g[:, 0]), "bboxes": torch.from_numpy(np.c_[g[:, 1:3], g[:, 1:3] + g[:, 3:5]])}
        found = {"cls": torch.from_numpy(pred.cls.astype(np.float32)), "bboxes": torch.from_numpy(pred.xyxy)}
        metrics.update_stats({**matcher._process_batch(found, labels), "conf": pred.conf, "pred_cls": pred.cls,
                              "target_cls": g[:, 0], "target_img": np.unique(g[:, 0]), "im_name": path.name})
        dets += [{"image_id": image_id(path), "category_id": int(c) + 1, "score": float(sc),
                  "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]}
                 for (x0, y0, x1, y1), sc, c in zip(pred.xyxy, pred.conf, pred.cls)]
    save_dir.mkdir(parents=True, exist_ok=True)
    metrics.process(save_dir=save_dir)
    (save_dir / "predictions.json").write_text(json.dumps(dets))
    coco = evaluate(gt, dets, bins)
    (save_dir / "coco_metrics.json").write_text(json.dumps(coco, indent=1))
    return metrics, coco


def val(
    weights: str | Sequence[str],
    data: str | Path = EMBEDDED_DATA,
    imgsz: int | None = None,
    batch_size: int = 32,
    conf_thres: float = 0.001,
    iou_thres: float = 0.6,
    device: str | None = None,
    task: str = "val",
    size_bins_spec: str = "coco",
    slice_size: int = 0,
    slice_overlap: float = 0.2,
    project: str | Path = "runs/val",
    name: str = "exp",
    exist_ok: bool = False,
) -> list[dict[str, Any]]:
    """Score each checkpoint; one checkpoint gives per-class rows, several a comparison table."""
    weights = [weights] if isinstance(weights, (str, Path)) else list(weights)
    paths = [resolve_weights(w) for w in weights]
    bins = size_bins(size_bins_spec)
    data, audit = check_data(prepare_data(data), (task,), named=data)  # bad files: listed once, left out
    cfg, images = load_split(data, task)
    names = [cfg["names"][i] for i in sorted(cfg["names"])]
    save_dir = increment_path(Path(project).resolve() / name, exist_ok=exist_ok)
    audit.write(save_dir)
    tile_imgsz, imgsz = imgsz, imgsz or 640
    if slice_size:  # the same table from sliced inference: tiles at native resolution unless --imgsz says otherwise
        scorer = lambda model, data, images, names, bins, task, out, **_: sliced_score(
            model, images, names, bins, out, slice_size, slice_overlap, tile_imgsz, conf_thres, iou_thres, device)
    else:
        scorer = score
    val_args = dict(imgsz=imgsz, batch=batch_size, conf=conf_thres, iou=iou_thres, device=device or None, plots=True)
    coco_cols = lambda c: {k: v for k, v in c.items() if k.startswith("AP_") or k in ("AP", "AP50", "AR")}

    if len(paths) == 1:
        model = YOLO(paths[0])
        metrics, coco = scorer(model, data, images, names, bins, task, save_dir, **val_args)
        box, instances = metrics.box, metrics.nt_per_class
        rows = [{"class": "all", "instances": int(instances.sum()), **box_metrics(metrics)}]
        for i, c in enumerate(box.ap_class_index):
            rows.append({"class": names[int(c)], "instances": int(instances[c]),
                         **dict(zip(METRIC_COLUMNS, box.class_result(i)))})
        write_table(rows, save_dir / "results")
        (save_dir / "results.json").write_text(json.dumps({"classes": rows, "coco": coco}, indent=1, default=float))
        print(f"\n{format_table(rows)}\n\nCOCO metrics by object size (px = sqrt(area); "
              f"{', '.join(f'{k} {lo:g}-{hi:g}' for k, (lo, hi) in bins.items())}):\n"
              f"{format_table([coco_cols(coco)])}\nResults saved to {save_dir}")
        return rows

    models = [YOLO(p) for p in paths]
    labels = [variant_name(m, p) for m, p in zip(models, paths)]
    if len(set(labels)) < len(labels):  # same architecture twice (seeds, epochs): tell them apart by run folder
        labels = [f"{lab} ({Path(p).parent.parent.name}/{Path(p).stem})" for lab, p in zip(labels, paths)]
    rows = []
    for k, (model, label) in enumerate(zip(models, labels)):
        print(f"[{k + 1}/{len(models)}] {label}")
        metrics, coco = scorer(model, data, images, names, bins, task, save_dir / f"{k}-{Path(paths[k]).stem}",
                               **val_args)
        rows.append({"variant": label, **model_size(model.model, imgsz), "latency(ms)": 0.0,
                     "mAP50": metrics.box.map50, "mAP50-95": metrics.box.map,
                     **{k2: v for k2, v in coco.items() if k2.startswith("AP_")}})
    dev = next(models[0].model.parameters()).device
    fused = [m.model.float().eval().fuse() for m in models]  # inference form, as predict runs it
    for row, ms in zip(rows, latency_ms(fused, imgsz, dev)):
        row["latency(ms)"] = ms
    write_table(rows, save_dir / "compare")
    plot_comparison(rows, save_dir / "compare.png")
    print(f"\nSame data, split and settings for every model; latency: median batch-1 forward at {imgsz} px on "
          f"{dev} ({save_dir}):\n{format_table(rows)}")
    return rows


def plot_comparison(rows: list[dict[str, Any]], path: Path) -> Path:
    """Grouped bars: mAP50-95 and AP per size bin for each model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["mAP50-95"] + [k for k in rows[0] if k.startswith("AP_")]
    fig, ax = plt.subplots(figsize=(1.2 + 1.6 * len(keys), 3.6))
    width = 0.8 / len(rows)
    for j, row in enumerate(rows):
        values = [max(float(row[k]), 0.0) for k in keys]  # -1 (no objects of that size) drawn as 0
        ax.bar([i + j * width for i in range(len(keys))], values, width, label=row["variant"])
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(keys))], keys)
    ax.set_ylabel("AP")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
