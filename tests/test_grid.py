"""A comparison's grid that never trains the wrong thing: locked run folders, one failure policy, complete reuse
keys, every option checked before the first run, flags made from the settings object.

Fast tests in this process (no training); the multi-process behaviour (slots, stops, a killed driver) is in
tests/test_scale.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import math
import os
import socket
import subprocess
import sys
import time
import typing
from pathlib import Path

import pytest

from attention.errors import MissingFileError, UserError
from attention.evaluation import compare as comparing
from attention.evaluation import executors
from attention.evaluation.coco import evaluate, metric_names, size_bins
from attention.evaluation.experiment import Experiment
from attention.evaluation.locks import LOCK, Holder, RunLock, busy, process_start
from attention.evaluation.progress import GridProgress
from attention.evaluation.scored_run import (RunResult, RunSpec, Scoring, TrainSettings, attempts, execute, mode_key,
                                             rescore_because, score_file, status)
from attention.training.job import train

import fake_units  # tests/: units an executor runs instead of a real run
from conftest import REPO

TRAIN = TrainSettings(data="d.yaml", epochs=1, imgsz=64, batch_size=8, workers=0)
HOST = socket.gethostname()


def write_lock(folder: Path, **holder) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    fields = dict(host=HOST, pid=os.getpid(), start=process_start(os.getpid()), owner="another compare",
                  since=time.time()) | holder
    (folder / LOCK).write_text(json.dumps(fields))
    return folder / LOCK


def finished_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# --- one writer per run folder -------------------------------------------------------------------------------

def test_a_held_run_folder_is_refused_with_one_line_naming_its_holder(tmp_path):
    run = tmp_path / "v" / "seed0"
    with RunLock(run, owner="first compare"):
        saved = json.loads((run / LOCK).read_text())
        assert (saved["host"], saved["pid"], saved["owner"]) == (HOST, os.getpid(), "first compare")
        with pytest.raises(UserError, match=rf"{run} is being trained by pid {os.getpid()} on {HOST} since .* \(lock "
                                            rf"{run / LOCK}\): wait for that run or stop it"):
            RunLock(run, owner="second compare").acquire()
        assert busy(run) == Holder(**saved)
    assert not (run / LOCK).exists() and busy(run) is None  # released on the way out


def test_a_lock_whose_holder_is_gone_is_taken_over_with_a_warning(tmp_path, capsys):
    dead = tmp_path / "dead"
    write_lock(dead, pid=finished_pid(), start=None)
    recycled = tmp_path / "recycled"  # our own pid, but a process that started at another time: not its holder
    write_lock(recycled, start="1")
    lost_node = tmp_path / "lost-node"  # another host, silent for 10 min
    past = time.time() - 600
    os.utime(write_lock(lost_node, host="node-b", pid=1), (past, past))
    for folder in (dead, recycled, lost_node):
        with RunLock(folder, owner="this compare"):
            assert json.loads((folder / LOCK).read_text())["owner"] == "this compare"
    err = capsys.readouterr().err
    assert f"WARNING: {dead}: taking over the lock of pid" in err and "(its process is gone)" in err
    assert f"WARNING: {recycled}: taking over the lock of pid {os.getpid()}" in err
    assert f"WARNING: {lost_node}: taking over the lock of pid 1 on node-b" in err
    assert "last touched 10 min ago (a lost node?)" in err

    busy_node = tmp_path / "busy-node"  # another host, touched a minute ago: it may be at work
    os.utime(write_lock(busy_node, host="node-b", pid=1), (time.time() - 60,) * 2)
    with pytest.raises(UserError, match="is being trained by pid 1 on node-b"):
        RunLock(busy_node, owner="this compare").acquire()


@pytest.mark.parametrize("sigint", ["python's handler", "ignored, as in a --jobs child"])
def test_a_run_sent_again_by_its_comparison_takes_its_folder_and_the_earlier_attempt_stops(tmp_path, sigint):
    # Ray retries a task whose node it lost; if that node was only cut off, its attempt must stop writing.
    import signal

    before = signal.signal(signal.SIGINT, signal.default_int_handler if sigint.startswith("python") else signal.SIG_IGN)
    try:
        the_earlier_attempt_stops(tmp_path)
    finally:
        signal.signal(signal.SIGINT, before)


def the_earlier_attempt_stops(tmp_path):
    run = tmp_path / "v" / "seed0"
    first = RunLock(run, owner="compare 1", heartbeat=0.05)
    with pytest.raises(KeyboardInterrupt):
        with first:
            with RunLock(run, owner="compare 1"):  # the retry: same owner, holder alive; taken quietly
                deadline = time.time() + 10
                while time.time() < deadline:  # the first attempt's heartbeat notices and interrupts it
                    time.sleep(0.01)
    assert first.lost.startswith(f"{run} was taken over by pid {os.getpid()} on {HOST}")
    assert not (run / LOCK).exists()


def test_a_failed_run_says_so_in_its_folder(tmp_path):
    spec = RunSpec(tmp_path / "v" / "seed0", "yolov5n.yaml", 0, TrainSettings("missing.yaml", 1, 64, 8, 0), (),
                   Scoring("coco", 300), "[run 1/1] ")
    with pytest.raises(MissingFileError, match="data YAML not found: missing.yaml"):
        execute(spec)
    info = status(spec.folder)
    assert info["state"] == "failed" and info["why"].startswith("data YAML not found: missing.yaml")
    assert [a["state"] for a in attempts(spec.folder)] == ["failed"]
    assert "[run 1/1] failed: data YAML not found" in spec.log.read_text()
    assert not (spec.folder / LOCK).exists()


# --- one failure policy -----------------------------------------------------------------------------------------

def specs_of(root: Path, seeds=(0, 1, 2)) -> list[RunSpec]:
    return [RunSpec(root / "v" / f"seed{s}", "v.yaml", s, TRAIN, (), Scoring("coco", 300)) for s in seeds]


@pytest.mark.parametrize("where", ["sequential", "two processes"])
def test_every_executor_carries_on_past_a_failed_run_and_lists_it(tmp_path, monkeypatch, where):
    monkeypatch.setattr(executors, "RETRIES", 1)
    executor = (executors.Sequential("cpu", unit=fake_units.flaky) if where == "sequential"
                else executors.Local(2, "cpu", unit=fake_units.flaky))
    specs = specs_of(tmp_path)
    lines: list[str] = []
    progress = GridProgress(3, executor.width, "AP", say=lines.append)
    done = list(executor.run(specs, progress))
    assert [r.seed for r in done] == [0]
    failed = dict((spec.seed, why) for spec, why in progress.failed_runs)
    assert failed[1] == "v seed 1 cannot be trained" and set(failed) == {1, 2}
    calls = {s: (tmp_path / "v" / f"seed{s}" / "calls.txt").read_text().split() for s in (0, 1, 2)}
    assert len(calls[0]) == len(calls[1]) == 1  # never run twice: a run's own error is not retried
    if where == "two processes":
        assert failed[2] == "its worker process died (killed by SIGKILL), 2 times"  # its 1 retry, charged to it alone
        assert len(calls[2]) == 2 and len(set(sum(calls.values(), []))) == 4  # a fresh process for every call
        assert status(specs[2].folder)["state"] == "failed"
        retried = "v seed 2: its worker process died (killed by SIGKILL); it goes back to the queue"
        assert sum(retried in x for x in lines) == 1
    else:
        assert failed[2] == "seed 2 broke" and len(calls[2]) == 1
    assert "(1/3 runs done, 0 running, 0 waiting, 2 failed; all finished in" in lines[-1]


class HalfBroken:
    """An executor that scores each run as a function of variant and seed, and fails one run."""

    width, name = 1, "fake"

    def __init__(self, broken: tuple[str, int]) -> None:
        self.broken = broken

    def run(self, specs, progress):
        for spec in specs:
            if (spec.variant, spec.seed) == self.broken:
                progress.failed(spec, RuntimeError("CUDA out of memory"))
                continue
            spec.folder.mkdir(parents=True, exist_ok=True)
            value = 0.5 + 0.01 * spec.seed + (0.05 if spec.variant != "yolov5n" else 0.0)
            scores = {mode_key(m): dict.fromkeys(metric_names(size_bins("coco")), value) for m in spec.modes}
            result = RunResult(spec.variant, spec.seed, spec.folder, scores, {"params(M)": 1.0}, 1.0, True)
            progress.finished(result)
            yield result

    def call(self, fn, *args):
        return fn(*args, device=None)


def test_the_summary_is_written_from_the_runs_that_finished_then_compare_fails_in_one_line(tiny_data, tmp_path,
                                                                                          monkeypatch):
    monkeypatch.setattr(comparing, "executor_for", lambda exp: HalfBroken(("yolov5n-se", 1)))
    with pytest.raises(comparing.RunsFailed, match=r"^1 of 6 runs failed \(listed above with their logs\); the "
                                                    r"summary holds the 5 that finished") as caught:
        comparing.compare(cfg=["yolov5n.yaml", "yolov5n-se.yaml"], seeds=3, epochs=1, data=str(tiny_data), imgsz=64,
                          project=str(tmp_path), name="half")
    assert caught.value.exit_status == 1
    root = tmp_path / "half"
    rows = (root / "summary.csv").read_text()
    assert "(2 of 3 seeds)" in rows and "seed 1 left out (no score)" in rows
    assert f"yolov5n-se seed 1: CUDA out of memory ({root / 'yolov5n-se' / 'seed1' / 'run.log'})" in \
        (root / "summary.md").read_text()


# --- complete keys -------------------------------------------------------------------------------------------

def test_what_trains_a_run_and_the_seed_plan_decide_reuse(tmp_path, capsys):
    base = Experiment.from_mapping({"cfg": ["a", "b"], "workers": 0})
    comparing._check_settings(tmp_path, base.run_settings())
    with pytest.raises(UserError, match=r"other settings \(workers 0 -> 2\); pass another --name"):
        comparing._check_settings(tmp_path, base.replace(workers=2).run_settings())
    planned = base.replace(max_seeds=10)
    plan = planned.plan_settings("AP_small", 0.01)
    assert plan == {"seeds": [0, 1, 2], "max_seeds": 10, "metric": "AP_small", "margin": 0.01}
    with pytest.raises(UserError, match=r"other settings \(plan None -> \{'seeds': \[0, 1, 2\], 'max_seeds': 10"):
        comparing._check_settings(tmp_path, planned.run_settings(plan))
    # A folder of an earlier release recorded neither: taken as asked now, and recorded from here on
    older = json.loads((tmp_path / "settings.json").read_text())
    older = {k: v for k, v in older.items() if k not in ("workers", "plan")}
    (tmp_path / "settings.json").write_text(json.dumps(older))
    comparing._check_settings(tmp_path, planned.run_settings(plan))
    assert "did not record workers, plan; taken as asked now" in capsys.readouterr().out
    with pytest.raises(UserError, match=r"plan .*'max_seeds': 10.* -> .*'max_seeds': 20"):
        comparing._check_settings(tmp_path, planned.replace(max_seeds=20).run_settings(
            planned.replace(max_seeds=20).plan_settings("AP_small", 0.01)))


def test_a_score_file_names_what_it_was_scored_with(tmp_path):
    scoring = Scoring("coco", 300)
    full, sliced = ("full", 64), ("sliced", 32)
    assert rescore_because(tmp_path, full, scoring) == "not scored yet"
    for mode in (full, sliced):
        score_file(tmp_path, mode).write_text(json.dumps({**scoring.key(mode), "AP": 0.5}))
        assert rescore_because(tmp_path, mode, scoring) is None
    assert rescore_because(tmp_path, full, dataclasses.replace(scoring, iou=0.7)) == \
        "scored earlier with other settings (iou 0.6 -> 0.7)"
    overlap = dataclasses.replace(scoring, overlap=0.25)  # only sliced inference has tiles to overlap
    assert rescore_because(tmp_path, full, overlap) is None
    assert rescore_because(tmp_path, sliced, overlap) == "scored earlier with other settings (overlap 0.2 -> 0.25)"
    score_file(tmp_path, full).write_text(json.dumps({"size_bins": "coco", "max_det": 300, "AP": 0.5}))  # older
    assert rescore_because(tmp_path, full, scoring) == \
        "scored earlier with other settings (conf unrecorded -> 0.001, iou unrecorded -> 0.6)"


def test_latency_is_measured_again_on_another_device_or_host(tmp_path, monkeypatch):
    measured = []
    monkeypatch.setattr(comparing, "YOLO", lambda path: path)
    monkeypatch.setattr(comparing, "ms_per_image",
                        lambda models, images, mode, device: measured.append(device) or [7.0] * len(models))
    (tmp_path / "v" / "seed0" / "weights").mkdir(parents=True)
    (tmp_path / "v" / "seed0" / "weights" / "best.pt").write_bytes(b"")
    (tmp_path / "v" / "latency.json").write_text(json.dumps({"full:64": 99.0}))  # an earlier release: unkeyed
    mode = ("full", 64)
    first = comparing._latencies(tmp_path, ["v", "w"], [mode], [], device="cpu")
    assert first[("v", mode)] == 7.0 and math.isnan(first[("w", mode)])  # w has no finished run to measure
    assert measured == ["cpu"]
    comparing._latencies(tmp_path, ["v"], [mode], [], device="cpu")
    assert measured == ["cpu"]  # kept for this host and device
    comparing._latencies(tmp_path, ["v"], [mode], [], device="0")
    monkeypatch.setattr(socket, "gethostname", lambda: "another-host")
    comparing._latencies(tmp_path, ["v"], [mode], [], device="cpu")
    assert measured == ["cpu", "0", "cpu"]
    keys = json.loads((tmp_path / "v" / "latency.json").read_text())
    assert len(keys) == 3 and all(k.startswith((HOST, "another-host")) for k in keys)


def test_the_variants_of_a_mode_are_timed_side_by_side_and_again_together(tmp_path, monkeypatch):
    # A variant new to a finished comparison is not timed alone against figures from another hour: all are again.
    calls = []
    monkeypatch.setattr(comparing, "YOLO", lambda path: Path(path).parts[-4])
    monkeypatch.setattr(comparing, "ms_per_image",
                        lambda models, images, mode, device: calls.append(list(models)) or [10.0 + len(calls)] * len(models))
    for v in ("a", "b"):
        (tmp_path / v / "seed0" / "weights").mkdir(parents=True)
        (tmp_path / v / "seed0" / "weights" / "best.pt").write_bytes(b"")
    mode = ("full", 64)
    assert comparing._latencies(tmp_path, ["a", "b"], [mode], [], device="cpu") == {("a", mode): 11.0, ("b", mode): 11.0}
    assert calls == [["a", "b"]]
    (tmp_path / "c" / "seed0" / "weights").mkdir(parents=True)
    (tmp_path / "c" / "seed0" / "weights" / "best.pt").write_bytes(b"")
    again = comparing._latencies(tmp_path, ["a", "b", "c"], [mode], [], device="cpu")
    assert calls == [["a", "b"], ["a", "b", "c"]] and set(again.values()) == {12.0}


def test_ms_per_image_rotates_the_order_and_takes_each_models_median(tmp_path, monkeypatch):
    import cv2
    import numpy as np

    from attention.evaluation import latency

    images = []
    for i in range(5):
        images.append(tmp_path / f"{i}.png")
        cv2.imwrite(str(images[-1]), np.zeros((8, 8, 3), np.uint8))
    order, now = [], [0.0]
    cost = {"a": 0.001, "b": 0.002, "c": 0.005}  # seconds per image, on a fake clock

    class Model:
        def __init__(self, name):
            self.name = name

        def predict(self, img, **kw):
            order.append(self.name)
            now[0] += cost[self.name] + (0.5 if len(order) == 1 else 0.0)  # the first call is slow: the warm-up

    monkeypatch.setattr(latency.time, "perf_counter", lambda: now[0])
    ms = latency.ms_per_image([Model("a"), Model("b"), Model("c")], images, ("full", 64), limit=4)
    assert order[:3] == ["a", "b", "c"] and order[3:6] == ["b", "c", "a"] and order[6:9] == ["c", "a", "b"]
    assert len(order) == 15 and ms == pytest.approx([1.0, 2.0, 5.0])  # the warm-up image is not counted


# --- every option checked before the first run ----------------------------------------------------------------

@pytest.mark.parametrize("bad, message", [
    ({"metric": "AP_smal"}, "--metric 'AP_smal' is not among the scores with --size-bins coco: AP, AP50, AP75, "
                            "AP_small, AP_medium, AP_large, AR"),
    ({"metric": "AP_large", "size_bins": "tiny"}, "--metric 'AP_large' is not"),  # tiny bins end at medium
    ({"margin": math.inf}, "--margin must be a finite number >= 0"),
    ({"margin": math.nan}, "--margin must be a finite number >= 0"),
    ({"max_hours": math.nan, "max_seeds": 5}, "--max-hours caps"),
    ({"size_bins": "0,32,16"}, "size bins must be"),
    ({"seeds": [0, 0, 1]}, "seeds must be distinct numbers >= 0"),
])
def test_settings_that_cannot_work_are_one_line(bad, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Experiment.from_mapping({"cfg": ["a.yaml", "b.yaml"], **bad})


def test_metric_names_are_what_scoring_gives():
    bins = size_bins("tiny")
    gt = {"images": [{"id": "a.jpg", "width": 64, "height": 64}], "annotations": [
        {"id": 1, "image_id": "a.jpg", "category_id": 1, "bbox": [1, 1, 10, 10], "area": 100, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "x"}]}
    assert list(evaluate(gt, [], bins)) == metric_names(bins)


def test_an_unbuildable_variant_or_unreadable_data_stops_compare_before_anything_is_written(tiny_data, tmp_path,
                                                                                           write_yaml):
    common = dict(seeds=1, epochs=1, data=str(tiny_data), imgsz=64, project=str(tmp_path / "runs"))
    text = (REPO / "models" / "yolov5-se.yaml").read_text()
    bad = write_yaml("yolov5n-sex.yaml", text.replace("SE, []", "SEX, []"))
    with pytest.raises(UserError, match=r"row \d+ of .*yolov5n-sex.yaml \(scale n\): unknown module 'SEX' "
                                        r"\(did you mean SE\?\)"):
        comparing.compare(cfg=["yolov5n.yaml", str(bad)], **common)
    broken = write_yaml("broken.yaml", tiny_data.read_text().replace("images/val", "images/nowhere"))
    with pytest.raises(MissingFileError, match=r"data YAML .*broken.yaml"):
        comparing.compare(cfg=["yolov5n.yaml", "yolov5n-se.yaml"], **(common | {"data": str(broken)}))
    with pytest.raises(UserError, match="hyperparameter YAML not found"):
        comparing.compare(cfg=["yolov5n.yaml", "yolov5n-se.yaml"], hyp="nope.yaml", **common)
    assert not (tmp_path / "runs").exists()


def test_a_second_compare_on_a_busy_folder_refuses_before_writing(tiny_data, tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        root = tmp_path / "runs" / "exp"
        write_lock(root / "yolov5n" / "seed0", pid=sleeper.pid, start=process_start(sleeper.pid))
        with pytest.raises(UserError, match=rf"{root / 'yolov5n' / 'seed0'} is being trained by pid {sleeper.pid} "
                                            rf"on {HOST}"):
            comparing.compare(cfg=["yolov5n.yaml", "yolov5n-se.yaml"], seeds=1, epochs=1, data=str(tiny_data),
                              imgsz=64, project=str(tmp_path / "runs"))
        assert not (root / "settings.json").exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_the_declared_python_is_the_one_the_code_needs():
    pytest.importorskip("vermin")  # in the dev extra
    declared = next(line for line in (REPO / "pyproject.toml").read_text().splitlines()
                    if line.startswith("requires-python"))
    out = subprocess.run([sys.executable, "-c", "import sys; from vermin.main import main; sys.exit(main())",
                          "--no-tips", "--violations", "-t=3.10-", str(REPO / "attention")], capture_output=True,
                         text=True)
    assert declared == 'requires-python = ">=3.10"'
    assert out.returncode == 0 and "Minimum required versions: 3.10" in out.stdout, out.stdout[-2000:]
    hints = typing.get_type_hints(Experiment)  # X | Y evaluated at run time: 3.10's types.UnionType
    assert hints["margin"] == float | None


# --- options from one source ---------------------------------------------------------------------------------

def compare_parser() -> argparse.ArgumentParser:
    from attention.cli import compare as cli

    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    return p


def test_every_setting_is_a_flag_with_its_type_default_and_help():
    p = compare_parser()
    flags = {a.dest: a for a in p._actions if a.dest not in ("help", "experiment")}
    assert set(flags) == set(Experiment.keys())
    for f in dataclasses.fields(Experiment):
        assert f.metadata["help"], f"{f.name} has no help"
        assert flags[f.name].option_strings[0] == f"--{f.name.replace('_', '-')}" and flags[f.name].default is None
    assert "(default: 30)" in flags["epochs"].help and "(default: runs/compare)" in flags["project"].help
    args = p.parse_args(["--cfg", "a.yaml", "b.yaml", "--seeds", "2", "--margin", "0.02", "--finetune", "--img", "320",
                         "-j", "2", "--infer", "full:64", "sliced:32", "--ray-gpus", "0.5", "--attn-init", "identity"])
    given = {k: v for k, v in vars(args).items() if v is not None}
    assert given == {"cfg": ["a.yaml", "b.yaml"], "seeds": 2, "margin": 0.02, "finetune": True, "imgsz": 320, "jobs": 2,
                     "infer": ["full:64", "sliced:32"], "ray_gpus": 0.5, "attn_init": "identity"}
    exp = Experiment.from_mapping(given)
    assert (exp.seed_list, exp.margin, exp.start_as) == ([0, 1], 0.02, "identity")
    with pytest.raises(SystemExit):
        p.parse_args(["--attn-init", "random"])


def test_a_runs_training_settings_are_a_typed_object(tmp_path):
    exp = Experiment.from_mapping({"cfg": ["yolov5n.yaml", "yolov5n-se.yaml"], "workers": 3, "project": str(tmp_path)})
    grid = comparing.Grid(exp, exp.cfg, [("full", 640)], "AP_small", Scoring("coco", 300), None, "owner")
    spec = grid.spec("yolov5n.yaml", 1)
    assert spec.train == TrainSettings(data=exp.data, epochs=30, imgsz=640, batch_size=16, workers=3, hyp=None,
                                       weights=None, attn_init="paper")
    assert spec.owner == "owner" and spec.folder == exp.root / "yolov5n" / "seed1"
    assert set(spec.train.kwargs()) <= set(inspect.signature(train).parameters)  # what train_in passes on
