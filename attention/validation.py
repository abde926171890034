"""val.py's job: score a checkpoint on a dataset split with the ultralytics validator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from ultralytics import YOLO

from attention.dataset import EMBEDDED_DATA, prepare_data
from attention.paths import resolve_weights
from attention.report import METRIC_COLUMNS, box_metrics, format_table, write_table


def val(
    weights: str,
    data: str | Path = EMBEDDED_DATA,
    imgsz: int = 640,
    batch_size: int = 32,
    conf_thres: float = 0.001,
    iou_thres: float = 0.6,
    device: str | None = None,
    task: str = "val",
    project: str | Path = "runs/val",
    name: str = "exp",
    exist_ok: bool = False,
) -> list[dict[str, Any]]:
    """Per-class and overall P, R, mAP50, mAP50-95; printed and saved as results.{csv,md,json}."""
    if task not in {"train", "val", "test"}:
        raise ValueError(f"--task must be train, val or test, got {task!r}")
    model = YOLO(resolve_weights(weights))
    data = prepare_data(data)
    if task not in yaml.safe_load(Path(data).read_text()):
        raise ValueError(f"--task {task}: the data YAML {data} has no '{task}' split")
    metrics = model.val(
        data=data,
        imgsz=imgsz,
        batch=batch_size,
        conf=conf_thres,
        iou=iou_thres,
        device=device,
        split=task,
        project=str(Path(project).resolve()),
        name=name,
        exist_ok=exist_ok,
        plots=True,
    )
    box, names, instances = metrics.box, metrics.names, metrics.nt_per_class
    rows = [{"class": "all", "instances": int(instances.sum()), **box_metrics(metrics)}]
    for i, c in enumerate(box.ap_class_index):
        rows.append({"class": names[int(c)], "instances": int(instances[c]),
                     **dict(zip(METRIC_COLUMNS, box.class_result(i)))})
    save_dir = Path(metrics.save_dir)
    write_table(rows, save_dir / "results")
    (save_dir / "results.json").write_text(json.dumps(rows, indent=2, default=float))
    print(f"\n{format_table(rows)}\nResults saved to {save_dir}")
    return rows
