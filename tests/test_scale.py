"""A comparison on every core or device, and on a Ray cluster: the same numbers as one run after another.

The sequential comparison is run once (module fixture); the pool and the Ray cluster must reproduce its score
files, its per-epoch losses and its summary number for number. The Ray test builds Ray's own two-node test
cluster on loopback and removes the node a run trains on after its first epoch: Ray retries the task on the
other node and the run resumes from its saved epoch.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from attention.errors import UserError
from attention.evaluation import executors
from attention.evaluation.experiment import Experiment
from attention.evaluation.progress import GridProgress
from attention.evaluation.reproduce import determined
from attention.evaluation.scored_run import RunResult, RunSpec

EPOCHS = 2  # a node is removed after epoch 1, so the retried run has one epoch left to resume


def compare_args(data: Path, project: Path, name: str) -> list[str]:
    return ["--cfg", "yolov5n.yaml", "yolov5n-se.yaml", "--seeds", "1", "--epochs", str(EPOCHS), "--data", str(data),
            "--img", "64", "--batch-size", "8", "--workers", "0", "--project", str(project), "--name", name]


def run_compare(args: list[str], cwd: Path, env: dict | None = None, wait: bool = True):
    env = {**os.environ, "YOLO_OFFLINE": "1", **(env or {})}
    cmd = [sys.executable, "-m", "attention", "compare", *args]
    if not wait:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def sequential(tiny_data, tmp_path_factory) -> Path:
    project = tmp_path_factory.mktemp("scale")
    proc = run_compare(compare_args(tiny_data, project, "sequential"), cwd=project)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Runs of" in proc.stdout and "in this process" in proc.stdout
    return project / "sequential"


def test_two_runs_at_a_time_give_the_sequential_numbers_even_when_a_worker_dies(sequential, tiny_data):
    project = sequential.parent
    root = project / "jobs2"
    proc = run_compare(compare_args(tiny_data, project, "jobs2") + ["--jobs", "2"], cwd=project, wait=False)
    run = root / "yolov5n" / "seed0"
    deadline = time.time() + 300
    while not (run / "weights" / "last.pt").is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(json.loads((run / "status.json").read_text())["pid"], signal.SIGKILL)  # its worker, in epoch 2
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert "2 at once on this machine" in out
    # each run is pinned to its own core (the CI machine has 2) and says where it went
    assert "yolov5n seed 0: its worker process died; it goes back to the queue and resumes" in out
    assert out.count("started on cpu cores") >= 3  # both at first, then the lost one (and its pool neighbour) again
    assert "2/2 runs done, 0 running, 0 waiting; all finished" in out
    found, expected = determined(root), determined(sequential)
    assert found.keys() == expected.keys() and len([k for k in found if k.endswith("results.csv")]) == 2
    assert found == expected
    assert "resuming an interrupted run" in (run / "run.log").read_text()
    for variant in ("yolov5n", "yolov5n-se"):  # a run away from the console logs to its folder, every attempt kept
        log = (root / variant / "seed0" / "run.log").read_text()
        # the pool neighbour, if still training when the worker died, is started again: its log holds both attempts
        assert log.count(f"training {EPOCHS} epochs") >= 1 and "scoring full 64" in log
        assert json.loads((root / variant / "seed0" / "status.json").read_text())["state"] == "done"

    again = run_compare(compare_args(tiny_data, project, "jobs2") + ["--jobs", "2"], cwd=project)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "started on" not in again.stdout and again.stdout.count("finished and scored earlier, reused") == 2


def test_a_node_lost_mid_run_is_retried_on_another_and_resumes(sequential, tiny_data, tmp_path, monkeypatch):
    import ray
    from ray.cluster_utils import Cluster

    # Ray's own switch for a single-machine cluster: every node and the driver on 127.0.0.1, nothing else bound.
    # ultralytics imported Ray (its tuning callback) before this test could set the variable: set what it became too.
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    monkeypatch.setattr(ray._private.ray_constants, "ENABLE_RAY_CLUSTER", False)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False,
        "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 4}})  # a lost node: 2 s
    proc = None
    try:
        first = cluster.add_node(num_cpus=1)
        assert cluster.address.startswith("127.0.0.1:")
        proc = run_compare(compare_args(tiny_data, tmp_path, "ray") + ["--ray", cluster.address], cwd=tmp_path,
                           env={"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}, wait=False)
        run = tmp_path / "ray" / "yolov5n" / "seed0"
        deadline = time.time() + 300
        # epoch 1 is saved once last.pt exists (the trainer writes it after the epoch's results.csv row)
        while not (run / "weights" / "last.pt").is_file() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert _epochs_saved(run) == 1, "the first run never saved its first epoch alone"
        cluster.remove_node(first, allow_graceful=False)  # the node dies with the run on it, in epoch 2
        cluster.add_node(num_cpus=1)  # somewhere for Ray to retry
        out, err = proc.communicate(timeout=600)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        ray.shutdown()
        cluster.shutdown()
    assert proc.returncode == 0, err[-3000:]
    attempts = (run / executors.ATTEMPTS).read_text().splitlines()
    assert len(attempts) == 2 and attempts[0].split()[3] != attempts[1].split()[3]  # two nodes
    log = (run / "run.log").read_text()
    assert log.count(f"training {EPOCHS} epochs") == 1  # the retry did not start from scratch: it resumed epoch 2
    assert "resuming an interrupted run" in log or "interrupted before the end; finished now" in log
    with (run / "results.csv").open() as fh:
        assert [int(float(r["epoch"])) for r in csv.DictReader(fh, skipinitialspace=True)] == [1, 2]
    assert determined(tmp_path / "ray") == determined(sequential)
    assert "Ray tasks (0 GPU, 1 CPU each" in out and "2/2 runs done" in out


def _epochs_saved(run: Path) -> int:
    """Completed epochs in a run folder (results.csv rows), 0 before the first."""
    try:
        return max(0, len((run / "results.csv").read_text().strip().splitlines()) - 1)
    except OSError:
        return 0


def test_a_node_that_cannot_see_the_project_folder_says_so(tmp_path):
    spec = RunSpec(tmp_path / "a" / "seed0", "yolov5n.yaml", 0, {}, (), "coco", 300)
    with pytest.raises(UserError, match=r"does not see .*nowhere: with --ray, --project must be a folder every node"):
        executors._ray_execute(spec, str(tmp_path / "nowhere"), 0, 1)


def test_ray_addresses_that_cannot_work_are_one_line(tmp_path):
    with pytest.raises(UserError, match="this project does not start one"):
        executors.OnRay("local", tmp_path)
    with pytest.raises(UserError, match=r"--ray 127.0.0.1:9: nothing answers there"):
        executors.OnRay("127.0.0.1:9", tmp_path)


def test_local_slots_split_the_cores_and_take_gpus_in_turn(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    slots = executors.local_slots("cpu", 3)
    assert [s.cores for s in slots] == [(0, 1), (2, 3), (4, 5)]  # 8 // 3 = 2 cores each, disjoint
    assert all(s.device == "cpu" and s.quiet for s in slots)
    assert [s.device for s in executors.local_slots("0,1", 4)] == ["0", "1", "0", "1"]  # two runs per GPU
    assert [s.device for s in executors.local_slots("cuda:2", 2)] == ["2", "2"]
    assert [s.cores for s in executors.local_slots("cpu", 16)][8] == (0,)  # more runs than cores: they share


def _result(variant: str, seed: int, seconds: float, score: float = 0.5) -> RunResult:
    return RunResult(variant, seed, Path(f"/r/{variant}/seed{seed}"), {"full:64": {"AP_small": score}},
                     {}, seconds, True)


def test_progress_counts_runs_and_estimates_the_time_left():
    lines: list[str] = []
    progress = GridProgress(total=6, width=2, metric="AP_small", say=lines.append)
    specs = [RunSpec(Path(f"/r/v{k}/seed0"), f"v{k}.yaml", 0, {}, (), "coco", 300, f"[run {k + 1}/6] ") for k in range(6)]
    progress.started(specs[0], "cpu cores 0")
    progress.started(specs[1], "cpu cores 1")
    assert lines[-1] == "[run 2/6] started on cpu cores 1   (0/6 runs done, 2 running, 4 waiting)"
    progress.finished(_result("v0", 0, 600.0, 0.4125))
    # 4 waiting + half of the 1 running = 4.5 runs over 2 at once: 3 rounds of the median 10 min
    assert lines[-1] == "v0 seed 0: AP_small 0.412 (full 64) in 10 min   (1/6 runs done, 1 running, 4 waiting; " \
                        "about 30 min left)"
    progress.failed(specs[1], UserError("bad data\nmore"))
    assert "v1 seed 0: FAILED (bad data)" in lines[-1] and "1 failed" in lines[-1]
    reused = RunResult("v2", 0, Path("/r/v2/seed0"), {"full:64": {"AP_small": -1.0}}, {}, 0.0, False)
    progress.finished(reused)  # no ground truth of that size: n/a, as in the table
    assert lines[-1].startswith("v2 seed 0: AP_small n/a (full 64) reused")


def test_experiment_settings_are_one_typed_object():
    exp = Experiment.from_mapping({"cfg": ["a.yaml", "b.yaml"], "seeds": 2, "margin": 0, "infer": "full:320"})
    assert exp.seed_list == [0, 1] and exp.margin == 0.0 and exp.infer == ["full:320"] and exp.start_as == "paper"
    assert set(exp.run_settings()) == {"data", "hyp", "weights", "epochs", "imgsz", "batch_size", "attn_init",
                                       "finetune", "base"}
    with pytest.raises(UserError, match=r"compare: unknown setting\(s\) epoch;"):
        Experiment.from_mapping({"cfg": ["a", "b"], "epoch": 3})
    with pytest.raises(UserError, match=r"setting 'epochs' must be int, got '3'"):
        Experiment.from_mapping({"cfg": ["a", "b"], "epochs": "3"})
    with pytest.raises(UserError, match="give one of them"):
        Experiment.from_mapping({"cfg": ["a", "b"], "jobs": 2, "ray": "auto"})
    with pytest.raises(UserError, match="--jobs must be at least 1"):
        Experiment.from_mapping({"cfg": ["a", "b"], "jobs": 0})
