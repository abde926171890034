"""Multi-GPU training: the worker ultralytics spawns per GPU knows the attention blocks without running our scripts.

`--device 0,1` makes ultralytics pickle the trainer class, args, model and callbacks (generate_ddp_file) and
start a fresh interpreter per GPU on a generated script that unpickles them and trains. Here that script runs
once with device cpu, which makes it train as a single process: everything but torch.distributed is exercised.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils.dist import ddp_cleanup, generate_ddp_file

from attention import get
from attention.adapter.trainer import ResumableTrainer
from attention.training import job

# A worker is a fresh process: no rank variables from an outer launcher, and nothing imported for it.
ENV = {**{k: v for k, v in os.environ.items() if k not in {"RANK", "LOCAL_RANK", "WORLD_SIZE"}}, "YOLO_OFFLINE": "1"}


def yaml_only_trainer(trainer_cls: type, data: Path, project: Path) -> DetectionTrainer:
    """A trainer for `--cfg yolov5n-cbam.yaml` as Model.train builds it: its model is the YAML path, which each
    worker parses itself, and its callbacks are ultralytics' own, so only the trainer class can import attention."""
    return trainer_cls(overrides={"model": "yolov5n-cbam.yaml", "data": str(data), "epochs": 1,
                                  "imgsz": 160, "batch": 8, "workers": 0, "device": "cpu", "plots": False,
                                  "project": str(project), "name": "exp", "task": "detect", "mode": "train"})


def run_worker(trainer: DetectionTrainer, cwd: Path) -> subprocess.CompletedProcess:
    """Write ultralytics' DDP worker script for trainer and run it as each GPU's process would."""
    file = generate_ddp_file(trainer)
    try:
        return subprocess.run([sys.executable, file], cwd=cwd, env=ENV, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=600)
    finally:
        ddp_cleanup(trainer, file)


def cbam_blocks(checkpoint: Path) -> int:
    model = torch.load(checkpoint, map_location="cpu", weights_only=False)["model"]
    return sum(type(m) is get("CBAM") for m in model.modules())


def test_worker_of_our_trainer_builds_the_variant_from_its_yaml(tiny_data, tmp_path):
    trainer = yaml_only_trainer(ResumableTrainer, tiny_data, tmp_path / "runs")
    assert isinstance(trainer.model, str)  # nothing built: the worker parses the YAML
    proc = run_worker(trainer, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert cbam_blocks(Path(trainer.save_dir) / "weights" / "last.pt") == 3
    assert (Path(trainer.save_dir) / "results.csv").read_text().count("\n") == 2  # header and its one epoch


def test_worker_of_the_stock_trainer_cannot_parse_the_yaml(tiny_data, tmp_path):
    # The same launch with ultralytics' own trainer: a fresh interpreter that never imports attention.
    trainer = yaml_only_trainer(DetectionTrainer, tiny_data, tmp_path / "runs")
    proc = run_worker(trainer, tmp_path)
    # it finds neither our YAML nor, given the YAML, our blocks
    assert proc.returncode != 0 and "cbam" in proc.stderr.lower(), proc.stderr[-3000:]


class Captured(Exception):
    """Raised in place of training, carrying the trainer train.py built."""


@pytest.mark.slow
def test_worker_of_train_py_trains_the_variant(monkeypatch, tiny_data, tmp_path):
    def capture(trainer):
        raise Captured(trainer)

    monkeypatch.setattr(ResumableTrainer, "train", capture)  # the worker unpickles the class unpatched
    with pytest.raises(Captured) as caught:
        job.train(cfg="yolov5n-cbam.yaml", data=tiny_data, epochs=1, imgsz=160, batch_size=8, workers=0,
                  device="cpu", project=tmp_path / "runs")
    trainer = caught.value.args[0]
    assert isinstance(trainer.model, torch.nn.Module)  # built by train.py (seeded, transferred), handed over as is
    proc = run_worker(trainer, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert cbam_blocks(Path(trainer.save_dir) / "weights" / "last.pt") == 3


def test_a_fine_tuned_variant_reaches_the_workers_as_built(tiny_data, tmp_path):
    # Workers of releases that pass only the run's arguments rebuild the model from args.model; handing over
    # a checkpoint there keeps the transferred weights and the identity gates (what the worker sees: a path).
    from attention.adapter.trainer import hand_over
    from attention.blocks.gate import IdentityGate
    from attention.training.build import build

    model = build("yolov5n-cbam.yaml", nc=3, seed=0, attn_init="identity")
    for gate in (m for m in model.modules() if isinstance(m, IdentityGate)):
        gate.gamma.data.fill_(0.25)  # a value no fresh build has
    trainer = yaml_only_trainer(ResumableTrainer, tiny_data, tmp_path / "runs")
    start = hand_over(trainer, model)
    assert trainer.args.model == str(start) and isinstance(trainer.model, str)  # as an old release's worker gets it
    trainer.model = trainer.args.model
    proc = run_worker(trainer, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trained = torch.load(Path(trainer.save_dir) / "weights" / "last.pt", map_location="cpu", weights_only=False)
    gates = [m for m in trained["model"].modules() if isinstance(m, IdentityGate)]
    assert len(gates) == 3 and all(abs(float(g.gamma) - 0.25) < 0.05 for g in gates)  # one epoch moves it a little
