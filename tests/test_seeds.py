"""A seed determines a run: the same command twice gives the same run, with or without --weights, in train and in
compare (run one at a time or two at a time)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attention.training.build import build, starting_model

from conftest import REPO

ENV = {**os.environ, "YOLO_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
TRAIN = ("--epochs", 1, "--img", 160, "--batch-size", 8, "--workers", 0)


@pytest.fixture(scope="module")
def base(tiny_data, tmp_path_factory) -> Path:
    """A yolov5n checkpoint with 2 classes (so a 3-class run resizes Detect, another fresh layer)."""
    root = tmp_path_factory.mktemp("base")
    model = build("yolov5n.yaml", nc=2, seed=5)
    model.names = {0: "vehicle", 1: "person"}
    path = root / "base-2cls.pt"
    torch.save({"model": model.half(), "train_args": {}, "epoch": -1}, path)
    return path


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_fresh_layers_after_a_transfer_come_from_the_seed(base):
    first, report = starting_model("yolov5n-cbam.yaml", str(base), nc=3, seed=0)
    again, _ = starting_model("yolov5n-cbam.yaml", str(base), nc=3, seed=0)
    other, _ = starting_model("yolov5n-cbam.yaml", str(base), nc=3, seed=1)
    a, b, c = state(first), state(again), state(other)
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same seed: every tensor
    fresh = {f"model.{i}." for i in report.new} | {"model.27.cv3"}  # the blocks, and Detect's class convs (2 -> 3)
    differs = {k for k in a if not torch.equal(a[k], c[k])}
    assert differs and all(any(k.startswith(p) for p in fresh) for k in differs)  # only fresh layers move
    assert any(k.startswith("model.24.") for k in differs) and any(k.startswith("model.27.cv3") for k in differs)


def rows(run: Path) -> list[dict[str, str]]:
    with (run / "results.csv").open() as fh:
        return [{k.strip(): v.strip() for k, v in r.items() if k.strip() != "time"} for r in csv.DictReader(fh)]


def weights(path: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return (ckpt.get("ema") or ckpt["model"]).float().state_dict()


@pytest.mark.parametrize("with_weights", [True, False], ids=["fine-tune", "from-scratch"])
def test_the_same_train_command_twice_gives_the_same_run(base, tiny_data, tmp_path, with_weights):
    extra = ("--weights", base) if with_weights else ()
    for name in ("one", "two"):
        proc = subprocess.run([sys.executable, str(REPO / "train.py"), "--cfg", "yolov5n-cbam.yaml", *map(str, extra),
                               "--data", str(tiny_data), *map(str, TRAIN), "--name", name], cwd=tmp_path, env=ENV,
                              capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = tmp_path / "runs" / "train" / "one", tmp_path / "runs" / "train" / "two"
    assert rows(one) == rows(two) and float(rows(one)[0]["train/box_loss"]) > 0
    a, b = weights(one / "weights" / "last.pt"), weights(two / "weights" / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_same_compare_twice_gives_the_same_runs_one_or_two_at_a_time(base, tiny_data, tmp_path):
    for name, jobs in (("one", "1"), ("two", "2")):  # in this process, then each run in a pinned worker process
        proc = subprocess.run([sys.executable, "-m", "attention", "compare", "--cfg", "yolov5n.yaml", "yolov5n-se.yaml",
                               "--weights", str(base), "--attn-init", "identity", "--seeds", "1", "--epochs", "1",
                               "--data", str(tiny_data), "--img", "160", "--batch-size", "8", "--workers", "0",
                               "--project", str(tmp_path / "runs"), "--name", name, "--jobs", jobs], cwd=tmp_path,
                              env=ENV, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert ("at once on this machine" in proc.stdout) == (jobs == "2")
    for variant in ("yolov5n", "yolov5n-se"):
        one = tmp_path / "runs" / "one" / variant / "seed0"
        two = tmp_path / "runs" / "two" / variant / "seed0"
        assert rows(one) == rows(two)
        assert (one / "score-full160.json").read_text() == (two / "score-full160.json").read_text()
