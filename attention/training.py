"""train.py's job: fine-tune or train one or more model YAMLs on the ultralytics trainer."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import yaml
from ultralytics import YOLO
from ultralytics.utils.files import increment_path

from attention.dataset import EMBEDDED_DATA, prepare_data
from attention.paths import resolve_cfg, resolve_weights
from attention.report import box_metrics, format_table, model_size, write_table


def load_hyp(hyp: str | Path | None) -> dict[str, Any]:
    """Hyperparameters from a YAML mapping (configs/hyp.*.yaml); ultralytics validates the keys."""
    if not hyp:
        return {}
    path = Path(hyp)
    if not path.is_file():
        raise FileNotFoundError(f"hyperparameter YAML not found: {hyp}")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"hyperparameter YAML {hyp} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(values, dict):
        raise ValueError(f"hyperparameter YAML {hyp} must be a mapping of name: value")
    return values


def latest_checkpoint(project: str | Path) -> str:
    """The most recently written last.pt under project, for a bare --resume."""
    found = sorted(Path(project).rglob("last.pt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"--resume: no last.pt under {project}; pass the checkpoint path")
    return str(found[-1])


def _freeze(freeze: Sequence[int] | None) -> int | list[int] | None:
    """YOLOv5 semantics: one number freezes that many first layers; several name layer indices."""
    if not freeze:
        return None
    return freeze[0] if len(freeze) == 1 else list(freeze)


def train(
    cfg: Sequence[str] | None = None,
    weights: str | None = None,
    data: str | Path = EMBEDDED_DATA,
    hyp: str | None = None,
    epochs: int = 100,
    batch_size: int = 16,
    imgsz: int = 640,
    device: str | None = None,
    workers: int = 8,
    project: str | Path = "runs/train",
    name: str = "exp",
    exist_ok: bool = False,
    resume: bool | str = False,
    freeze: Sequence[int] | None = None,
    seed: int = 0,
    patience: int = 100,
) -> list[dict[str, Any]]:
    """Train each cfg with identical settings; one row of scores per cfg (also tabulated when several)."""
    project = Path(project).resolve()  # ultralytics puts relative projects under its settings dir
    if resume:
        ckpt = latest_checkpoint(project) if resume is True else resolve_weights(resume)
        YOLO(ckpt).train(resume=True)
        return []

    weights = resolve_weights(weights) if weights else None
    # --weights alone fine-tunes that checkpoint's own architecture; --cfg builds one and loads into it.
    cfgs = [resolve_cfg(c) for c in cfg] if cfg else [] if weights else [resolve_cfg("yolov5n.yaml")]
    settings = {
        **load_hyp(hyp),
        "data": prepare_data(data),
        "epochs": epochs,
        "batch": batch_size,
        "imgsz": imgsz,
        "device": device,
        "workers": workers,
        "freeze": _freeze(freeze),
        "seed": seed,
        "deterministic": True,
        "patience": patience,
    }
    if len(cfgs) > 1:  # a comparison: every variant in one folder, runs/train/exp/<variant>
        project, exist_ok = increment_path(project / name, exist_ok=exist_ok), True
    rows = []
    for c in cfgs or [weights]:
        model = YOLO(c)
        if weights and c != weights:
            model.load(weights)
        run_name = Path(c).stem if len(cfgs) > 1 else name
        start = time.perf_counter()
        metrics = model.train(**settings, project=str(project), name=run_name, exist_ok=exist_ok)
        row = {"variant": Path(c).stem, **model_size(model.model, imgsz), **box_metrics(metrics)}
        row["train(s)"] = time.perf_counter() - start
        row["save_dir"] = str(model.trainer.save_dir)
        rows.append(row)
    if len(rows) > 1:
        table = [{k: v for k, v in r.items() if k != "save_dir"} for r in rows]
        csv_path, _ = write_table(table, project / "compare")
        print(f"\nSame data, settings and seed for every variant ({csv_path.parent}):\n{format_table(table)}")
    return rows
