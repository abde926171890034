"""Variants trained alike, one run folder each: a finished run is reused, an interrupted one resumed exactly.

train --cfg a.yaml b.yaml (one seed, ultralytics' own scores) and compare (several seeds, COCO scores by
object size, intervals) both train through train_in(), so a run is the same run whichever started it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from attention.adapter.api import YOLO, increment_path
from attention.adapter.checkpoints import finish_if_trained, is_finished
from attention.adapter.validator import box_metrics
from attention.data.prepare import prepare_data
from attention.errors import UserError
from attention.evaluation.tables import format_table, model_size, write_table
from attention.training import variants
from attention.training.job import resume, train


@dataclass
class Run:
    """One variant x seed in its folder; metrics are ultralytics' final validation when trained in this call."""

    variant: str
    seed: int
    folder: Path
    seconds: float
    metrics: dict[str, float] | None = None

    @property
    def best(self) -> Path:
        return self.folder / "weights" / "best.pt"


def variant_of(cfg: str | Path) -> str:
    """The variant's name: its YAML's file name without .yaml, or a spec's canonical name (yolov5s+CBAM@neck)."""
    return variants.name_of(cfg)


def train_in(folder: Path, cfg: str, seed: int, tag: str = "", **train_args: Any) -> Run:
    """The run of cfg with seed in folder: reused if finished, resumed if interrupted, else trained."""
    folder = Path(folder)
    start = time.perf_counter()
    if is_finished(folder):
        print(f"{tag}finished earlier, reused ({folder})")
        return Run(variant_of(cfg), seed, folder, 0.0)
    if finish_if_trained(folder):
        print(f"{tag}trained to its last epoch earlier, interrupted before the end; finished now ({folder})")
        return Run(variant_of(cfg), seed, folder, time.perf_counter() - start)
    last = folder / "weights" / "last.pt"
    if last.is_file():
        print(f"{tag}resuming an interrupted run ({folder})")
        done = resume(last, device=train_args.get("device"))  # the slot it runs on now, not the one it ran on
    else:
        print(f"{tag}training {train_args.get('epochs', 100)} epochs ({folder})")
        done = train(cfg, seed=seed, project=folder.parent, name=folder.name, exist_ok=True, **train_args)
    return Run(variant_of(cfg), seed, folder, time.perf_counter() - start, done.metrics)


def train_several(cfg: Sequence[str], data: str | Path, project: str | Path = "runs/train", name: str = "exp",
                  exist_ok: bool = False, seed: int = 0, imgsz: int = 640, batch_size: int = 16,
                  **train_args: Any) -> list[dict[str, Any]]:
    """Train every model YAML with the same data, settings and seed into project/name/<variant>; one table."""
    cfgs = [variants.model_yaml(c) for c in cfg]
    if len({variant_of(c) for c in cfgs}) < len(cfgs):
        raise UserError(f"--cfg names a model twice: {' '.join(map(str, cfg))}")
    root = increment_path(Path(project).resolve() / name, exist_ok=exist_ok)
    rows = []
    for k, c in enumerate(cfgs, 1):
        run = train_in(root / variant_of(c), c, seed, tag=f"[{k}/{len(cfgs)}] {variant_of(c)}: ", data=data,
                       imgsz=imgsz, batch_size=batch_size, **train_args)
        model = YOLO(str(run.best))
        metrics = run.metrics or box_metrics(model.val(data=prepare_data(data), imgsz=imgsz, batch=batch_size,
                                                        plots=False, verbose=False, project=str(run.folder),
                                                        name="val", exist_ok=True))
        rows.append({"variant": run.variant, **model_size(model.model, imgsz), **metrics, "train(s)": run.seconds})
    csv_path, _ = write_table(rows, root / "compare")
    print(f"\nSame data, settings and seed for every variant ({csv_path.parent}):\n{format_table(rows)}")
    return rows
