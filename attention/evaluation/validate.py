"""Scoring checkpoints on a split: ultralytics' P, R, mAP plus COCO AP by object size, whole-image or sliced.

One checkpoint gives per-class rows; several are scored on the same data in the same run, with
params, GFLOPs and an interleaved latency measurement beside them. Every figure is computed under one
detection budget (max_det: the prediction cap and COCO's maxDets), stated under every table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from attention.adapter.api import YOLO, increment_path
from attention.adapter.scan import quiet_about
from attention.adapter.validator import SlicedMatcher, box_metrics, require_sliced_scoring, validate
from attention.adapter.weights import resolve_weights
from attention.data.audit import check_data
from attention.data.coco_format import image_id, yolo_to_coco
from attention.data.listing import class_names, load_split
from attention.data.prepare import EMBEDDED_DATA, prepare_data
from attention.data.size_bins import describe
from attention.evaluation.coco import budget_note, check_max_det, crowded_warning, evaluate, size_bins
from attention.evaluation.latency import latency_ms
from attention.evaluation.plots import size_bin_bars
from attention.evaluation.tables import METRIC_COLUMNS, format_markdown, format_table, model_size, write_table


def score(model: YOLO, data: str, gt: dict, bins: dict, split: str, save_dir: Path, max_det: int,
          **val_args: Any) -> tuple[Any, dict[str, float]]:
    """ultralytics' metrics and our COCO-by-size metrics (gt: the split as COCO, data.coco_format) in save_dir."""
    metrics, predictions = validate(model, data, split, save_dir, max_det=max_det, **val_args)
    coco = evaluate(gt, predictions, bins, max_det=max_det)
    (save_dir / "coco_metrics.json").write_text(json.dumps(coco, indent=1))
    return metrics, coco


def sliced_score(model: YOLO, images: list[Path], gt: dict, names: list[str], bins: dict, save_dir: Path,
                 slice_size: int, slice_overlap: float, imgsz: int | None, conf: float, iou: float,
                 device: str | None, max_det: int) -> tuple[Any, dict[str, float]]:
    """The same metrics as score(), from sliced inference (attention.inference.slicing, on sahi) image by image."""
    from attention.inference.slicing import SlicedPredictor, coco_detections

    matcher = SlicedMatcher(names)
    predictor = SlicedPredictor(model, slice_size=slice_size, overlap=slice_overlap, imgsz=imgsz, conf=conf, iou=iou,
                                device=device, max_det=max_det)
    boxes: dict[Any, list] = {im["id"]: [] for im in gt["images"]}
    for a in gt["annotations"]:
        boxes[a["image_id"]].append((a["category_id"] - 1, *a["bbox"]))
    dets = []
    for path in (p for p in images if image_id(p) in boxes):
        pred = predictor(path)
        g = np.array(boxes[image_id(path)], dtype=np.float32).reshape(-1, 5)
        matcher.add(str(path), pred.xyxy, pred.conf, pred.cls, g[:, 0], np.c_[g[:, 1:3], g[:, 1:3] + g[:, 3:5]])
        dets += coco_detections(path, pred)
    metrics = matcher.finish(save_dir)
    (save_dir / "predictions.json").write_text(json.dumps(dets))
    coco = evaluate(gt, dets, bins, max_det=max_det)
    (save_dir / "coco_metrics.json").write_text(json.dumps(coco, indent=1))
    return metrics, coco


def coco_columns(coco: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in coco.items() if k.startswith("AP_") or k in ("AP", "AP50", "AR")}


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
    max_det: int | None = None,
    slice_size: int = 0,
    slice_overlap: float = 0.2,
    project: str | Path = "runs/val",
    name: str = "exp",
    exist_ok: bool = False,
) -> list[dict[str, Any]]:
    """Score each checkpoint; one checkpoint gives per-class rows, several a comparison table.

    max_det: the detection budget, at most this many detections per image both as the prediction cap and as
    COCO's maxDets (default: ultralytics' own, 300; VisDrone's protocol: 500).
    """
    max_det = check_max_det(max_det)
    if slice_size:
        require_sliced_scoring()  # before anything runs: this release may lack what it needs
    weights = [weights] if isinstance(weights, (str, Path)) else list(weights)
    paths = [resolve_weights(w) for w in weights]
    bins = size_bins(size_bins_spec)
    data, audit = check_data(prepare_data(data), (task,), named=data)  # bad files: listed once, left out
    cfg, images = load_split(data, task)
    names = class_names(cfg)
    gt = yolo_to_coco(images, names)
    if warning := crowded_warning(gt, max_det):
        print(warning)
    save_dir = increment_path(Path(project).resolve() / name, exist_ok=exist_ok)
    audit.write(save_dir)
    tile_imgsz, imgsz = imgsz, imgsz or 640
    val_args = dict(imgsz=imgsz, batch=batch_size, conf=conf_thres, iou=iou_thres, device=device or None, plots=True)

    def scorer(model: YOLO, out: Path) -> tuple[Any, dict[str, float]]:
        with quiet_about(audit.problem_images()):  # the data check listed those files already
            if slice_size:  # tiles at native resolution unless --imgsz says otherwise
                return sliced_score(model, images, gt, names, bins, out, slice_size, slice_overlap, tile_imgsz,
                                    conf_thres, iou_thres, device, max_det)
            return score(model, data, gt, bins, task, out, max_det, **val_args)

    if len(paths) == 1:
        metrics, coco = scorer(YOLO(paths[0]), save_dir)
        box = metrics.box
        instances = np.bincount([a["category_id"] - 1 for a in gt["annotations"]], minlength=len(names))
        rows = [{"class": "all", "instances": int(instances.sum()), **box_metrics(metrics)}]
        scored = {int(c): i for i, c in enumerate(box.ap_class_index)}  # classes ultralytics has results for
        for c in np.flatnonzero(instances):
            result = box.class_result(scored[c]) if c in scored else (0.0, 0.0, 0.0, 0.0)
            rows.append({"class": names[c], "instances": int(instances[c]),
                         **{k: float(v) for k, v in zip(METRIC_COLUMNS, result)}})
        note = f"COCO metrics by object size, {describe(bins)}; {budget_note(max_det)}"
        write_table(rows, save_dir / "results")
        (save_dir / "results.md").write_text((save_dir / "results.md").read_text() + f"\n{note}:\n\n"
                                             + format_markdown([coco_columns(coco)]))
        (save_dir / "results.json").write_text(json.dumps(
            {"classes": rows, "coco": coco, "size_bins": size_bins_spec, "max_det": max_det}, indent=1, default=float))
        print(f"\n{format_table(rows)}\n\n{note}:\n"
              f"{format_table([coco_columns(coco)])}\nResults saved to {save_dir}")
        return rows

    models = [YOLO(p) for p in paths]
    labels = [variant_name(m, p) for m, p in zip(models, paths)]
    if len(set(labels)) < len(labels):  # same architecture twice (seeds, epochs): tell them apart by run folder
        labels = [f"{lab} ({Path(p).parent.parent.name}/{Path(p).stem})" for lab, p in zip(labels, paths)]
    rows = []
    for k, (model, label) in enumerate(zip(models, labels)):
        print(f"[{k + 1}/{len(models)}] {label}")
        metrics, coco = scorer(model, save_dir / f"{k}-{Path(paths[k]).stem}")
        rows.append({"variant": label, **model_size(model.model, imgsz), "latency(ms)": 0.0,
                     "mAP50": metrics.box.map50, "mAP50-95": metrics.box.map,
                     **{k2: v for k2, v in coco.items() if k2.startswith("AP_")}})
    dev = next(models[0].model.parameters()).device
    fused = [m.model.float().eval().fuse() for m in models]  # inference form, as predict runs it
    for row, ms in zip(rows, latency_ms(fused, imgsz, dev)):
        row["latency(ms)"] = ms
    write_table(rows, save_dir / "compare")
    note = f"AP by object size, {describe(bins)}; {budget_note(max_det)}."
    (save_dir / "compare.md").write_text((save_dir / "compare.md").read_text() + f"\n{note}\n")
    size_bin_bars({r["variant"]: r for r in rows}, save_dir / "compare.png", ranges=bins)
    print(f"\nSame data, split and settings for every model; latency: median batch-1 forward at {imgsz} px on "
          f"{dev} ({save_dir}):\n{format_table(rows)}\n{note}")
    return rows


def variant_name(model: YOLO, weights: str) -> str:
    """The model YAML's name (yolov5n-cbam), else the checkpoint's file name."""
    yaml_file = getattr(model.model, "yaml", {}).get("yaml_file")
    return Path(yaml_file).stem if yaml_file else Path(weights).stem

