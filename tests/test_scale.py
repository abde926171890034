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
from attention.evaluation.locks import alive
from attention.evaluation import executors
from attention.evaluation.experiment import RUN_SETTINGS, Experiment
from attention.evaluation.progress import GridProgress
from attention.evaluation.reproduce import determined
from attention.evaluation.scored_run import RunResult, RunSpec, Scoring, TrainSettings, attempts

EPOCHS = 2  # a node is removed after epoch 1, so the retried run has one epoch left to resume
TRAIN = TrainSettings(data="d.yaml", epochs=1, imgsz=64, batch_size=8, workers=0)
SCORING = Scoring("coco", 300)


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
    assert "yolov5n seed 0: its worker process died (killed by SIGKILL); it goes back to the queue and resumes" in out
    # only the run whose process died starts again: its neighbour is not disturbed, nor charged an attempt
    assert out.count("started on cpu cores") == 3 and out.count("yolov5n-se seed 0: its worker") == 0
    assert "2/2 runs done, 0 running, 0 waiting; all finished" in out
    found, expected = determined(root), determined(sequential)
    assert found.keys() == expected.keys() and len([k for k in found if k.endswith("results.csv")]) == 2
    assert found == expected
    assert "resuming an interrupted run" in (run / "run.log").read_text()
    neighbour = root / "yolov5n-se" / "seed0"
    assert (neighbour / "run.log").read_text().count(f"training {EPOCHS} epochs") == 1
    for variant in ("yolov5n", "yolov5n-se"):  # a run away from the console logs to its folder, every attempt kept
        log = (root / variant / "seed0" / "run.log").read_text()
        assert log.count(f"training {EPOCHS} epochs") == 1 and "scoring full 64" in log
        assert json.loads((root / variant / "seed0" / "status.json").read_text())["state"] == "done"
        assert not (root / variant / "seed0" / "lock.json").exists()

    # Each attempt ran in a fresh process of its own, pinned to its slot: one core each on the 2-core machine,
    # one torch thread, and attempts of different runs that overlapped in time on disjoint cores.
    tries = {v: attempts(root / v / "seed0") for v in ("yolov5n", "yolov5n-se")}
    assert [a["state"] for a in tries["yolov5n"]] == ["started", "done"] and len(tries["yolov5n-se"]) == 1
    assert len({a["pid"] for t in tries.values() for a in t}) == 3  # three attempts, three processes
    spans = [(v, a, a["began"], _ended(a, t)) for v, t in tries.items() for a in t]
    overlapping = [(a, b) for v, a, s0, e0 in spans for w, b, s1, e1 in spans if v < w and s0 < e1 and s1 < e0]
    assert overlapping, "the two runs never trained at the same time"
    for a, b in overlapping:
        assert a["cores"] and b["cores"] and not set(a["cores"]) & set(b["cores"]), (a, b)
    for a in tries["yolov5n-se"] + tries["yolov5n"][1:]:
        assert a["state"] == "done" and a["torch_threads"] == 1 and len(a["cores"]) == 1

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
    tries = attempts(run)
    assert len(tries) == 2 and tries[0]["ray_node"] != tries[1]["ray_node"]  # two nodes
    assert tries[0]["state"] == "started" and tries[1]["state"] == "done"  # the first died with its node
    log = (run / "run.log").read_text()
    assert log.count(f"training {EPOCHS} epochs") == 1  # the retry did not start from scratch: it resumed epoch 2
    assert "resuming an interrupted run" in log or "interrupted before the end; finished now" in log
    with (run / "results.csv").open() as fh:
        assert [int(float(r["epoch"])) for r in csv.DictReader(fh, skipinitialspace=True)] == [1, 2]
    assert determined(tmp_path / "ray") == determined(sequential)
    assert "Ray tasks (0 GPU, 1 CPU each" in out and "2/2 runs done" in out


TESTS = Path(__file__).resolve().parent
DRIVER = """
import sys
from pathlib import Path

sys.path.insert(0, {tests!r})
import fake_units
from attention.evaluation.executors import Local
from attention.evaluation.progress import GridProgress
from attention.evaluation.scored_run import RunSpec, Scoring, TrainSettings
from attention.evaluation.workers import stop_on_sigterm

if __name__ == "__main__":  # (spawned children import this file too: they must keep SIGINT ignored)
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)  # as a shell starts a foreground command
    root, jobs, device, runs = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    train = TrainSettings(data="d.yaml", epochs=1, imgsz=64, batch_size=8, workers=0)
    scoring = Scoring("coco", 300)
    specs = [RunSpec(root / f"v{{k}}" / "seed0", f"v{{k}}.yaml", 0, train, (), scoring) for k in range(runs)]
    try:
        with stop_on_sigterm():
            list(Local(jobs, device, unit=fake_units.{unit}).run(specs, GridProgress(runs, jobs, "AP")))
    except KeyboardInterrupt as e:
        print(f"driver stopped: {{str(e) or 'Ctrl-C'}}")
        sys.exit(130)
"""


def drive(tmp_path: Path, unit: str, jobs: int, device: str, runs: int, env: dict | None = None) -> subprocess.Popen:
    """A driver process running `runs` runs of fake_units.<unit> through Local(jobs, device), in its own session."""
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(tests=str(TESTS), unit=unit))
    return subprocess.Popen([sys.executable, str(script), str(tmp_path / "runs"), str(jobs), device, str(runs)],
                            cwd=tmp_path, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


@pytest.mark.core  # ultralytics 8.3 writes CUDA_VISIBLE_DEVICES in select_device, 8.4 does not: both must hold
def test_each_run_computes_on_its_slots_gpu_in_a_fresh_process(tmp_path):
    # Two fake GPUs (tests/fake_gpus: CUDA reads CUDA_VISIBLE_DEVICES once per process, as the real one does).
    # Three runs over --device 0,1 --jobs 2: each goes to the slot that is free, in a process of its own that sees
    # only that slot's GPU; ultralytics' select_device, given the slot's device, must land on that physical GPU.
    fake = str(TESTS / "fake_gpus")
    path = os.pathsep.join(filter(None, [fake, os.environ.get("PYTHONPATH")]))
    proc = drive(tmp_path, "where_it_trains", 2, "0,1", 3, env={"PYTHONPATH": path})
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    where = {k: json.loads((tmp_path / "runs" / f"v{k}" / "seed0" / "where.json").read_text()) for k in range(3)}
    for w in where.values():
        sent_to = w["slot"].removeprefix("GPU ")  # the slot the driver sent the run to
        assert w["visible_at_start"] == sent_to  # the process was born seeing that GPU alone
        assert w["gpu"]["uuid"] == f"GPU-fake-{sent_to}", w  # and computes on it
        assert w["torch_device"] == "cuda:0"
    assert {w["slot"] for w in where.values()} == {"GPU 0", "GPU 1"}  # both GPUs had runs, one of them two
    assert len({w["pid"] for w in where.values()}) == 3  # a fresh process for every run
    assert "started on GPU 0" in out and "started on GPU 1" in out


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_a_stopped_comparison_stops_every_worker_within_seconds(tmp_path, how):
    proc = drive(tmp_path, "sleepy", 2, "cpu", 2)
    runs = [tmp_path / "runs" / f"v{k}" / "seed0" for k in range(2)]
    deadline = time.time() + 300
    while not all((r / "pid").is_file() for r in runs) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    pids = [int((r / "pid").read_text()) for r in runs]
    began = time.time()
    if how == "ctrl-c":  # a terminal sends Ctrl-C to its whole foreground process group
        os.killpg(proc.pid, signal.SIGINT)
    else:  # a scheduler's stop: the driver alone
        proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    took = time.time() - began
    assert proc.returncode == 130, err[-3000:]
    assert took < executors.workers.GRACE, f"the workers took {took:.1f} s: killed after the grace, not stopped"
    assert f"driver stopped: {'SIGTERM' if how == 'sigterm' else 'Ctrl-C'}" in out
    for run, pid in zip(runs, pids):  # each worker was told (SIGTERM), stopped between two instructions, and is gone
        assert (run / "stopped").read_text() == "SIGTERM"
        assert not alive(pid)


def kill_the_driver_mid_run(project: Path, args: list[str]) -> list[Path]:
    """Start a --jobs 2 compare, SIGKILL its driver once both runs are under way, and check that no worker trains on:
    each noticed, stopped its run (its saved epochs kept) and gave its folder up. Returns the run folders."""
    proc = run_compare(args, cwd=project, wait=False)
    runs = [project / args[args.index("--name") + 1] / v / "seed0" for v in ("yolov5n", "yolov5n-se")]
    deadline = time.time() + 300
    while not all(attempts(r) for r in runs) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    pids = [attempts(r)[-1]["pid"] for r in runs]
    proc.kill()  # SIGKILL: the driver cannot tell anyone
    proc.communicate()
    deadline = time.time() + executors.workers.GRACE + 5
    while any(alive(pid) for pid in pids) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in pids), "a worker trains on without its driver"
    for run in runs:
        info = json.loads((run / "status.json").read_text())
        assert info["state"] == "stopped" and info["why"] == executors.workers.DRIVER_GONE, info
        assert not (run / "lock.json").exists()
    return runs


def test_a_killed_driver_leaves_no_training_behind(tiny_data, tmp_path):
    kill_the_driver_mid_run(tmp_path, compare_args(tiny_data, tmp_path, "killed") + ["--jobs", "2"])


@pytest.mark.slow
def test_after_a_killed_driver_the_same_command_resumes_to_the_same_numbers(sequential, tiny_data):
    project = sequential.parent
    args = compare_args(tiny_data, project, "killed") + ["--jobs", "2"]
    kill_the_driver_mid_run(project, args)
    again = run_compare(args, cwd=project)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2/2 runs done" in again.stdout
    assert determined(project / "killed") == determined(sequential)  # the same numbers as never interrupted


def _ended(attempt: dict, of_run: list[dict]) -> float:
    """When an attempt ended: its last record, or (killed without a word) when the run's next attempt began."""
    if attempt["state"] != "started":
        return attempt["time"]
    later = [a["began"] for a in of_run if a["began"] > attempt["began"]]
    return min(later, default=time.time())


def _epochs_saved(run: Path) -> int:
    """Completed epochs in a run folder (results.csv rows), 0 before the first."""
    try:
        return max(0, len((run / "results.csv").read_text().strip().splitlines()) - 1)
    except OSError:
        return 0


def test_a_node_that_cannot_see_the_project_folder_says_so(tmp_path):
    spec = RunSpec(tmp_path / "a" / "seed0", "yolov5n.yaml", 0, TRAIN, (), SCORING)
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
    # a GPU slot is a process that sees its GPU alone, as device 0: two runs per GPU here
    assert [(s.visible, s.device) for s in executors.local_slots("0,1", 4)] == [("0", "0"), ("1", "0"),
                                                                                 ("0", "0"), ("1", "0")]
    assert [s.visible for s in executors.local_slots("cuda:2", 2)] == ["2", "2"] and str(slots[0]) == "cpu cores 0,1"
    assert str(executors.local_slots("3", 1)[0]) == "GPU 3"
    assert [s.cores for s in executors.local_slots("cpu", 16)][8] == (0,)  # more runs than cores: they share


def _result(variant: str, seed: int, seconds: float, score: float = 0.5) -> RunResult:
    return RunResult(variant, seed, Path(f"/r/{variant}/seed{seed}"), {"full:64": {"AP_small": score}},
                     {}, seconds, True)


def test_progress_counts_runs_and_estimates_the_time_left():
    lines: list[str] = []
    progress = GridProgress(total=6, width=2, metric="AP_small", say=lines.append)
    specs = [RunSpec(Path(f"/r/v{k}/seed0"), f"v{k}.yaml", 0, TRAIN, (), SCORING, f"[run {k + 1}/6] ")
             for k in range(6)]
    progress.started(specs[0], "cpu cores 0")
    progress.started(specs[1], "cpu cores 1")
    assert lines[-1] == "[run 2/6] started on cpu cores 1   (0/6 runs done, 2 running, 4 waiting)"
    progress.finished(_result("v0", 0, 600.0, 0.4125))
    # 4 waiting + half of the 1 running = 4.5 runs over 2 at once: 3 rounds of the median 10 min
    assert lines[-1] == "v0 seed 0: AP_small 0.412 (full 64) in 10 min   (1/6 runs done, 1 running, 4 waiting; " \
                        "about 30 min left)"
    progress.failed(specs[1], UserError("bad data\nmore"))
    assert lines[-1].startswith("v1 seed 0: FAILED (bad data); see /r/v1/seed0/run.log") and "1 failed" in lines[-1]
    assert progress.failed_runs == [(specs[1], "bad data")]
    reused = RunResult("v2", 0, Path("/r/v2/seed0"), {"full:64": {"AP_small": -1.0}}, {}, 0.0, False)
    progress.finished(reused)  # no ground truth of that size: n/a, as in the table
    assert lines[-1].startswith("v2 seed 0: AP_small n/a (full 64) reused")


def test_experiment_settings_are_one_typed_object():
    exp = Experiment.from_mapping({"cfg": ["a.yaml", "b.yaml"], "seeds": 2, "margin": 0, "infer": "full:320"})
    assert exp.seed_list == [0, 1] and exp.margin == 0.0 and exp.infer == ["full:320"] and exp.start_as == "paper"
    assert set(exp.run_settings()) == {"data", "hyp", "weights", "epochs", "imgsz", "batch_size", "workers",
                                       "attn_init", "finetune", "base", "plan"} == set(RUN_SETTINGS)
    with pytest.raises(UserError, match=r"compare: unknown setting\(s\) epoch;"):
        Experiment.from_mapping({"cfg": ["a", "b"], "epoch": 3})
    with pytest.raises(UserError, match=r"setting 'epochs' must be int, got '3'"):
        Experiment.from_mapping({"cfg": ["a", "b"], "epochs": "3"})
    with pytest.raises(UserError, match="give one of them"):
        Experiment.from_mapping({"cfg": ["a", "b"], "jobs": 2, "ray": "auto"})
    with pytest.raises(UserError, match="--jobs must be at least 1"):
        Experiment.from_mapping({"cfg": ["a", "b"], "jobs": 0})
