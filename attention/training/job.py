"""Training one model: a variant (or a checkpoint) fine-tuned or trained on ultralytics' trainer, or a run resumed.

Several variants trained alike and tabulated are attention.evaluation.runs' job (train --cfg a b c, compare).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from attention import cfg as shipped
from attention.adapter.api import YOLO, DetectionModel
from attention.adapter.scan import quiet_about
from attention.adapter.checkpoints import check_resumable
from attention.adapter.loss import nwd_available
from attention.adapter.trainer import hand_over, trainer_class
from attention.adapter.validator import box_metrics
from attention.adapter.weights import load, resolve_weights
from attention.data.audit import check_data
from attention.data.listing import class_names, data_dict
from attention.data.prepare import EMBEDDED_DATA, prepare_data
from attention.errors import MissingFileError, UserError
from attention.training import variants
from attention.training.build import starting_model
from attention.training.loss import chosen_loss, write_record

DEFAULT_MODEL = "yolov5n.yaml"


@dataclass
class Trained:
    """A finished run: its folder, the scores ultralytics' final validation gave best.pt, and the model."""

    save_dir: Path
    metrics: dict[str, float]  # P, R, mAP50, mAP50-95 on the val split
    model: DetectionModel


def load_hyp(hyp: str | Path | None) -> dict[str, Any]:
    """Hyperparameters from a YAML mapping (a path, or a shipped name such as hyp.finetune.yaml)."""
    if not hyp:
        return {}
    return shipped.load_mapping(shipped.resolve("configs", hyp, "hyperparameter YAML"), "hyperparameter YAML")


def latest_checkpoint(project: str | Path) -> str:
    """The most recently written last.pt under project, for a bare --resume."""
    found = sorted(Path(project).rglob("last.pt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise MissingFileError(f"--resume: no last.pt under {project}; pass the checkpoint path")
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
        raise UserError(f"--freeze takes 'backbone', a layer count or layer indices, got {' '.join(map(str, freeze))}")
    return values[0] if len(values) == 1 else values


def _finished(trainer: Any) -> Trained:
    best = Path(trainer.best) if Path(trainer.best).is_file() else Path(trainer.last)
    metrics = getattr(trainer.validator, "metrics", None)
    return Trained(Path(trainer.save_dir), box_metrics(metrics) if metrics is not None else {}, load(best)[0])


def resume(checkpoint: str | Path | bool = True, project: str | Path = "runs/train", device: str | None = None) -> Trained:
    """Carry an interrupted run on from its last.pt (the newest under project when checkpoint is True).

    device: where to carry it on (ultralytics lets a resume change it); None keeps the checkpoint's own.
    """
    ckpt = latest_checkpoint(Path(project).resolve()) if checkpoint is True else str(checkpoint)
    check_resumable(ckpt)  # a missing, truncated or finished checkpoint is a one-line error, not a traceback
    model = YOLO(ckpt)
    model.train(resume=True, trainer=trainer_class(), **({"device": device} if device is not None else {}))
    return _finished(model.trainer)


def train(
    cfg: str | None = None,
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
    freeze: Sequence[int | str] | None = None,
    attn_init: str = "paper",
    seed: int = 0,
    patience: int = 100,
    loss: dict[str, Any] | None = None,
) -> Trained:
    """Train one model YAML (or fine-tune the checkpoint `weights` alone) and return the finished run.

    With both cfg and weights, the variant is built and the base's weights are moved in by role
    (transfer.txt in the run folder). The same arguments give the same run: see attention.training.build.
    loss: keys of a model YAML's loss mapping (box, ratio, c, assigner) set over the YAML's (attention.losses).
    """
    weights = resolve_weights(weights) if weights else None
    model_name = variants.model_yaml(cfg) if cfg else None if weights else DEFAULT_MODEL  # or a spec: yolov5s+SE@sppf
    settings = load_hyp(hyp)  # before the data: a typo in --hyp should not wait for a dataset check
    data_yaml, audit = check_data(prepare_data(data), ("train", "val"), named=data)  # bad files: listed once, left out
    nc = len(class_names(data_dict(data_yaml)))
    model, report = starting_model(model_name, weights, nc, seed, attn_init)
    if report is not None:
        print(report.summary())
    stride = int(max(model.stride))  # ultralytics rounds imgsz up to a multiple of it (check_imgsz)
    chosen = chosen_loss(model.yaml, loss, model_name or weights, data_yaml, -(-imgsz // stride) * stride)
    if chosen is not None and chosen[0].uses_nwd and not nwd_available():
        chosen = None  # this release lacks what NWD needs (compat warned once): ultralytics' own loss, as recorded
    if chosen is not None:  # the model's YAML carries it (C resolved) into checkpoints, so a resume keeps it
        model.yaml["loss"] = chosen[0].to_yaml()
        print("; ".join(filter(None, (chosen[0].describe(), chosen[1]))))
    settings |= {"model": model_name or weights, "data": data_yaml, "epochs": epochs, "batch": batch_size,
                 "imgsz": imgsz, "device": device, "workers": workers, "seed": seed, "deterministic": True,
                 "patience": patience, "freeze": freeze_layers(freeze, model.yaml),
                 "project": str(Path(project).resolve()),  # ultralytics would put a relative one under its own runs dir
                 "name": name, "exist_ok": exist_ok, "mode": "train", "task": "detect"}
    trainer = trainer_class()(overrides=settings)  # picks (and creates) the run folder
    trainer.model = model  # trained as built: ultralytics would rebuild it from the YAML and copy weights by key
    variants.keep(model_name, trainer)  # a spec's generated YAML into the run folder, as the run's model
    if len(str(device or "").split(",")) > 1 and (report is not None or attn_init != "paper" or cfg is None
                                                   or chosen is not None):
        hand_over(trainer, model)  # several GPUs: each worker process starts from this model, not from the YAML
    audit.write(trainer.save_dir)
    if report is not None:
        report.write(trainer.save_dir)
    if chosen is not None:
        write_record(trainer.save_dir, *chosen)
    with quiet_about(audit.problem_images()):
        trainer.train()
    return _finished(trainer)
