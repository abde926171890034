"""train.py's job: fine-tune or train one or more model YAMLs on the ultralytics trainer."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml
from ultralytics import YOLO
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils.files import increment_path

from attention.checkpoints import ResumableTrainer, check_resumable
from attention.config import load_mapping
from attention.data_audit import check_data
from attention.dataset import EMBEDDED_DATA, prepare_data
from attention.blocks.gate import INITS
from attention.paths import resolve_cfg, resolve_weights
from attention.report import box_metrics, format_table, model_size, write_table
from attention.transfer import TransferReport, transfer


def load_hyp(hyp: str | Path | None) -> dict[str, Any]:
    """Hyperparameters from a YAML mapping (configs/hyp.*.yaml); ultralytics validates the keys."""
    return load_mapping(hyp, "hyperparameter YAML") if hyp else {}


def latest_checkpoint(project: str | Path) -> str:
    """The most recently written last.pt under project, for a bare --resume."""
    found = sorted(Path(project).rglob("last.pt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"--resume: no last.pt under {project}; pass the checkpoint path")
    return str(found[-1])


def freeze_layers(freeze: Sequence[int | str] | None, model_yaml: dict) -> int | list[int] | None:
    """YOLOv5 semantics: one number freezes that many first layers, several name layer indices;
    'backbone' freezes every backbone row of the model YAML."""
    if not freeze:
        return None
    if list(freeze) == ["backbone"]:
        return list(range(len(model_yaml["backbone"])))
    try:
        values = [int(x) for x in freeze]
    except ValueError:
        raise ValueError(f"--freeze takes 'backbone', a layer count or layer indices, got {' '.join(map(str, freeze))}")
    return values[0] if len(values) == 1 else values


def build(cfg: str, attn_init: str = "paper", nc: int | None = None) -> YOLO:
    """YOLO(cfg) with nc classes, every attention block wrapped in an IdentityGate if attn_init is 'identity'.

    Building at the dataset's nc lets a base trained on the same classes hand over its class head too.
    """
    model = YOLO(cfg)
    if attn_init != "paper" or (nc and nc != model.model.yaml["nc"]):
        # The trainer rebuilds the model from model.yaml, so both choices must live in that dict.
        rebuilt = DetectionModel({**model.model.yaml, "attn_init": attn_init}, nc=nc, verbose=False)
        rebuilt.args, rebuilt.task = model.model.args, model.model.task
        model.model = rebuilt
    return model


def _save_report(report: TransferReport) -> Callable[[Any], None]:
    return lambda trainer: report.write(trainer.save_dir)


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
    freeze: Sequence[int | str] | None = None,
    attn_init: str = "paper",
    seed: int = 0,
    patience: int = 100,
) -> list[dict[str, Any]]:
    """Train each cfg with identical settings; one row of scores per cfg (also tabulated when several)."""
    project = Path(project).resolve()  # ultralytics puts relative projects under its settings dir
    if resume:
        ckpt = latest_checkpoint(project) if resume is True else resume
        check_resumable(ckpt)  # a missing, truncated or finished checkpoint is a one-line error, not a traceback
        YOLO(ckpt).train(resume=True, trainer=ResumableTrainer)
        return []

    if attn_init not in INITS:
        raise ValueError(f"--attn-init must be one of {', '.join(INITS)}, got {attn_init!r}")
    weights = resolve_weights(weights) if weights else None
    if attn_init != "paper" and not weights:
        raise ValueError(f"--attn-init {attn_init} makes a variant start as its base: it needs --weights")
    # --weights alone fine-tunes that checkpoint's own architecture; --cfg builds one and loads into it.
    cfgs = [resolve_cfg(c) for c in cfg] if cfg else [] if weights else [resolve_cfg("yolov5n.yaml")]
    data, audit = check_data(prepare_data(data), ("train", "val"), named=data)  # bad files: listed once, left out
    settings = {
        **load_hyp(hyp),
        "data": data,
        "epochs": epochs,
        "batch": batch_size,
        "imgsz": imgsz,
        "device": device,
        "workers": workers,
        "seed": seed,
        "deterministic": True,
        "patience": patience,
    }
    names = yaml.safe_load(Path(data).read_text())["names"]
    if len(cfgs) > 1:  # a comparison: every variant in one folder, runs/train/exp/<variant>
        project, exist_ok = increment_path(project / name, exist_ok=exist_ok), True
    rows = []
    for c in cfgs or [weights]:
        model = build(c, attn_init, nc=len(names)) if c != weights else YOLO(c)
        model.add_callback("on_pretrain_routine_start", lambda trainer: audit.write(trainer.save_dir))
        if c != weights and weights:
            report = transfer(weights, model.model)
            print(report.summary())
            model.add_callback("on_pretrain_routine_start", _save_report(report))
            model.load(model.model)  # the trainer starts from this model (ultralytics copies it by key)
        run_name = Path(c).stem if len(cfgs) > 1 else name
        start = time.perf_counter()
        metrics = model.train(**settings, freeze=freeze_layers(freeze, model.model.yaml), project=str(project),
                              name=run_name, exist_ok=exist_ok, trainer=ResumableTrainer)
        row = {"variant": Path(c).stem, **model_size(model.model, imgsz), **box_metrics(metrics)}
        row["train(s)"] = time.perf_counter() - start
        row["save_dir"] = str(model.trainer.save_dir)
        rows.append(row)
    if len(rows) > 1:
        table = [{k: v for k, v in r.items() if k != "save_dir"} for r in rows]
        csv_path, _ = write_table(table, project / "compare")
        print(f"\nSame data, settings and seed for every variant ({csv_path.parent}):\n{format_table(table)}")
    return rows
