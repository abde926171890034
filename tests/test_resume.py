"""A training run killed at any moment resumes, with train.py --resume, to the uninterrupted run's results."""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from attention.adapter.checkpoints import RESUME_KEY, atomic_write, check_resumable, truncate_results
from attention.training.job import latest_checkpoint

from conftest import REPO

ENV = {**os.environ, "YOLO_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
# nbs 20 at batch 4 accumulates gradients over 5 batches (no warm-up, whose cadence differs between releases;
# 4 batches per epoch), so the resumed epoch starts with gradients pending and part-way to its next step;
# close_mosaic 1 keeps mosaic (and its image cache) on in the epoch that is resumed and closes it in the last one;
# SGD's momentum is one of the states ultralytics saves in fp16 only. Leaving any one piece out of the resume
# state (pending gradients, step cadence, mosaic cache, fp32 optimizer, live weights) made this test fail when tried.
HYP = "nbs: 20\nclose_mosaic: 1\noptimizer: SGD\nwarmup_epochs: 0\n"


def train_args(data: Path, hyp: Path, epochs: int = 3) -> list[str]:
    return ["--cfg", "yolov5n-cbam.yaml", "--data", str(data), "--hyp", str(hyp), "--epochs", str(epochs),
            "--img", "160", "--batch-size", "4", "--workers", "0", "--seed", "3"]


def train(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def rows(run: Path) -> list[dict[str, str]]:
    """results.csv without its wall-clock column, which no two runs share."""
    with (run / "results.csv").open() as fh:
        return [{k.strip(): v.strip() for k, v in row.items() if k.strip() != "time"} for row in csv.DictReader(fh)]


def weights(path: Path) -> dict[str, torch.Tensor]:
    ckpt = load(path)
    return (ckpt.get("model") or ckpt["ema"]).float().state_dict()


def wait_for_checkpoint(proc: subprocess.Popen, last: Path, epoch: int, timeout: float = 300) -> None:
    """Block until last.pt holds the given (0-based) epoch; readable at every instant as it is replaced atomically."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "training ended before it could be killed"
        try:
            if load(last)["epoch"] >= epoch:
                return
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"no checkpoint of epoch {epoch} in {timeout} s")


@pytest.fixture(scope="module")
def hyp(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hyp") / "hyp.yaml"
    path.write_text(HYP)
    return path


@pytest.fixture(scope="module")
def reference(tiny_data, hyp, tmp_path_factory) -> Path:
    """The uninterrupted 3-epoch run: its folder."""
    work = tmp_path_factory.mktemp("reference")
    train(*train_args(tiny_data, hyp), cwd=work)
    return work / "runs" / "train" / "exp"


def test_sigkill_mid_epoch_then_resume_repeats_the_uninterrupted_run(reference, tiny_data, hyp, tmp_path):
    exp = tmp_path / "runs" / "train" / "exp"
    proc = subprocess.Popen([sys.executable, str(REPO / "train.py"), *train_args(tiny_data, hyp)], cwd=tmp_path,
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        wait_for_checkpoint(proc, exp / "weights" / "last.pt", epoch=0)
        time.sleep(0.3)  # into epoch 2
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    resumed_from = load(exp / "weights" / "last.pt")["epoch"]
    assert resumed_from in (0, 1), "the kill came after the last epoch's checkpoint"
    # The kill may also land after the epoch's CSV row and before its checkpoint: one row more, which resume drops.
    assert len(rows(exp)) in (resumed_from + 1, resumed_from + 2)
    assert load(exp / "weights" / "last.pt")[RESUME_KEY]["grads"], "no gradients were pending: a weaker test"

    # A kill between the CSV write and the checkpoint write leaves a row the checkpoint does not cover,
    # and a kill mid-write a temp file (see the next test).
    with (exp / "results.csv").open("a") as fh:
        fh.write(f"{len(rows(exp)) + 1},9.9,1,1,1,0,0,0,0,1,1,1,0.01,0.01,0.01\n")
    (exp / "weights" / ".last.pt.12345.tmp").write_bytes(b"half a checkpoint")

    train("--resume", str(exp / "weights" / "last.pt"), cwd=tmp_path)

    assert rows(exp) == rows(reference)  # every epoch once, with the uninterrupted run's losses and metrics
    assert [r["epoch"] for r in rows(exp)] == ["1", "2", "3"]
    for name in ("last.pt", "best.pt"):
        ours, theirs = weights(exp / "weights" / name), weights(reference / "weights" / name)
        assert ours.keys() == theirs.keys()
        unequal = [k for k in ours if not torch.equal(ours[k], theirs[k])]  # tolerance: none, bit for bit
        assert not unequal, f"{name}: {len(unequal)} tensors differ, e.g. {unequal[:3]}"
    final = load(exp / "weights" / "last.pt")
    assert final["epoch"] == -1 and final.get(RESUME_KEY) is None  # stripped: no resume state left behind
    assert not list((exp / "weights").glob(".*")), "temporary files left behind"


KILL_ON_SECOND_WRITE = """
import os, runpy, signal, sys
sys.argv = sys.argv[1:]  # as `python train.py ...` would see them
sys.path.insert(0, os.path.dirname(sys.argv[0]))
import attention.adapter.checkpoints as C

writes = []

class DiesHalfway:
    def __init__(self, fh):
        self.fh = fh
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        self.fh.close()
    def write(self, data):
        self.fh.write(data[: len(data) // 2])
        self.fh.flush()
        os.fsync(self.fh.fileno())
        os.kill(os.getpid(), signal.SIGKILL)

def open_(path, mode="r", *args, **kwargs):
    fh = open(path, mode, *args, **kwargs)
    if "w" in mode and ".last.pt." in str(path):
        writes.append(path)
        if len(writes) == 2:  # epoch 2's last.pt
            return DiesHalfway(fh)
    return fh

C.open = open_  # checkpoints.py's own name for open: only its writes die
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_kill_mid_checkpoint_write_keeps_the_previous_last_pt(tiny_data, hyp, tmp_path):
    exp = tmp_path / "runs" / "train" / "exp"
    proc = subprocess.run([sys.executable, "-c", KILL_ON_SECOND_WRITE, str(REPO / "train.py"),
                           *train_args(tiny_data, hyp, epochs=2)], cwd=tmp_path, env=ENV, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    half = list((exp / "weights").glob(".last.pt.*"))
    assert half and half[0].stat().st_size > 1e6, "the kill did not come mid-write"
    ckpt = check_resumable(exp / "weights" / "last.pt")  # the previous, complete checkpoint
    assert ckpt["epoch"] == 0 and ckpt[RESUME_KEY]["epoch"] == 0
    assert latest_checkpoint(tmp_path / "runs" / "train") == str(exp / "weights" / "last.pt")  # a bare --resume


def _write_killed_halfway(write, path: Path, data: bytes) -> None:
    """Run write(path, data) in a child that SIGKILLs itself half-way through its file write."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover  (child)
        import builtins

        real_open = builtins.open

        class DiesHalfway:
            def __init__(self, fh):
                self.fh = fh

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.fh.close()

            def write(self, data):
                self.fh.write(data[: len(data) // 2])
                self.fh.flush()
                os.kill(os.getpid(), signal.SIGKILL)

        def open_(file, mode="r", *args, **kwargs):
            fh = real_open(file, mode, *args, **kwargs)
            return DiesHalfway(fh) if "w" in mode else fh

        builtins.open = io.open = open_
        write(path, data)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


@pytest.mark.parametrize("writer, survives", [(atomic_write, True), (Path.write_bytes, False)])
def test_atomic_write_survives_a_kill_that_truncates_an_in_place_write(tmp_path, writer, survives):
    path = tmp_path / "last.pt"
    old, new = b"old checkpoint" * 1000, b"new checkpoint" * 2000
    path.write_bytes(old)
    _write_killed_halfway(writer, path, new)
    assert (path.read_bytes() == old) is survives  # ultralytics' in-place write_bytes truncates it


def test_resume_rows_beyond_the_checkpoint_are_dropped(tmp_path):
    csv_path = tmp_path / "results.csv"
    csv_path.write_text("epoch,time,loss\n1,0.5,3\n2,1.0,2\n3,1.5,1\n4,2")  # 4: cut off mid-row
    truncate_results(csv_path, 2)
    assert csv_path.read_text() == "epoch,time,loss\n1,0.5,3\n2,1.0,2\n"


def test_resume_errors_name_the_checkpoint(reference, tmp_path):
    finished = reference / "weights" / "last.pt"
    with pytest.raises(FileNotFoundError, match="--resume: checkpoint not found: .*missing.pt"):
        check_resumable(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match=r"--resume: .*last.pt is the stripped checkpoint of a finished run"):
        check_resumable(finished)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(finished.read_bytes()[:100_000])
    with pytest.raises(ValueError, match=r"--resume: .*truncated.pt is not a readable checkpoint"):
        check_resumable(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(1)}, foreign)
    with pytest.raises(ValueError, match=r"--resume: .*foreign.pt is not an ultralytics training checkpoint"):
        check_resumable(foreign)


def test_resume_error_is_one_line_with_exit_2(tmp_path):
    (tmp_path / "broken.pt").write_bytes(b"PK\x03\x04 not really a zip")
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), "--resume", "broken.pt"], cwd=tmp_path,
                          env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("train.py: error: --resume: broken.pt is not a readable checkpoint")


@pytest.mark.slow
def test_resume_with_dataloader_workers_repeats_the_uninterrupted_run(tiny_data, tmp_path):
    """Workers keep their own RNG state; a fresh iterator per epoch reseeds them.

    ultralytics forces workers=0 on the CPU, so a small subclass keeps 2 here, as a GPU run would. The default
    close_mosaic closes mosaic in epoch 1, so the resumed run closes it (and reseeds) once more than the reference.
    """
    script = tmp_path / "train_workers.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "import attention.training.job as T\n"
        "from attention.adapter.trainer import ResumableTrainer\n"
        "from attention.cli.main import main\n"
        "class Workers(ResumableTrainer):\n"
        "    def __init__(self, *a, **k):\n"
        "        super().__init__(*a, **k)\n"
        "        self.args.workers = 2\n"
        "T.trainer_class = lambda: Workers\n"
        "main(script='train.py')\n"
    )
    hyp = tmp_path / "hyp.yaml"
    hyp.write_text("nbs: 20\n")
    args = [sys.executable, str(script), *train_args(tiny_data, hyp)]
    args[args.index("--workers") + 1] = "2"
    subprocess.run([*args, "--name", "reference"], cwd=tmp_path, env=ENV, capture_output=True, check=True)
    exp = tmp_path / "runs" / "train" / "exp"
    proc = subprocess.Popen(args, cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_checkpoint(proc, exp / "weights" / "last.pt", epoch=0)
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    resumed = subprocess.run([sys.executable, str(script), "--resume", str(exp / "weights" / "last.pt")],
                             cwd=tmp_path, env=ENV, capture_output=True, text=True, check=True)
    assert "Using 2 dataloader workers" in resumed.stdout + resumed.stderr
    reference = tmp_path / "runs" / "train" / "reference"
    assert rows(exp) == rows(reference)
    ours, theirs = weights(exp / "weights" / "last.pt"), weights(reference / "weights" / "last.pt")
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_a_run_killed_between_its_last_epoch_and_the_final_strip_is_finished_not_retrained(reference, tmp_path):
    # Ray retries, or the user reruns compare, after a kill at that moment: all epochs are saved, nothing to resume
    from attention.adapter.checkpoints import is_finished
    from attention.evaluation.runs import train_in

    run = tmp_path / "run"
    (run / "weights").mkdir(parents=True)
    ckpt = load(reference / "weights" / "last.pt")
    ckpt.update(epoch=2, optimizer={"state": {}, "param_groups": []}, **{RESUME_KEY: {"pending": True}})
    for name in ("last.pt", "best.pt"):
        torch.save(ckpt, run / "weights" / name)
    assert not is_finished(run)
    with pytest.raises(ValueError, match="has finished all 3 epochs, nothing to resume"):
        check_resumable(run / "weights" / "last.pt")
    done = train_in(run, "yolov5n-cbam.yaml", 3, tag="[t] ", data="missing.yaml", epochs=3)  # would fail if it trained
    assert done.folder == run and is_finished(run)
    for name in ("last.pt", "best.pt"):
        stripped = load(run / "weights" / name)
        assert stripped["epoch"] == -1 and stripped["optimizer"] is None and stripped.get(RESUME_KEY) is None
