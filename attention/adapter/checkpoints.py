"""Checkpoint files: written atomically, checked before a resume, stripped at the end, and results.csv kept in step.

A kill at any moment leaves the previous complete file in place: bytes go to a hidden temporary file in the
same folder, are flushed to disk, and the temporary file is renamed over the old one.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ultralytics.nn import tasks
from ultralytics.utils import LOGGER
from ultralytics.utils.torch_utils import strip_optimizer

from attention.adapter.safe_load import UnsafeCheckpointError
from attention.errors import MissingFileError, UserError

RESUME_KEY = "attention_resume"  # last.pt's extra entry: the exact state ultralytics does not keep


def _temp(path: Path) -> Path:
    """A hidden sibling of path (same folder: os.replace must not cross filesystems); see remove_stale_temps."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def remove_stale_temps(folder: Path) -> None:
    """Delete the temp files a killed run left half-written in folder."""
    for stale in folder.glob(".*.tmp"):
        stale.unlink(missing_ok=True)


def _publish(tmp: Path, path: Path) -> None:
    """Rename a fully written tmp over path: after a crash, path holds the old bytes or the new, never a mix."""
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())  # the bytes are on disk before the name points at them
    os.replace(tmp, path)
    try:  # make the rename itself durable; not every platform can open a folder
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write data to path so that a reader (or a crash) sees the old file or the new one, never a mix."""
    path = Path(path)
    tmp = _temp(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        _publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def check_resumable(path: str | Path) -> dict[str, Any]:
    """The checkpoint at path if training can resume from it; else a one-line error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"--resume: checkpoint not found: {path}")
    try:
        ckpt, _ = tasks.torch_safe_load(path)  # as ultralytics will load it, ULTRALYTICS_SAFE_LOAD included
    except UnsafeCheckpointError:
        raise  # already one line naming the file and the refused global
    except Exception as e:  # a truncated zip, bytes that are no pickle, ...
        cause = e.__cause__ or e  # ultralytics wraps the loader's error in a long TypeError
        detail = str(cause).strip().splitlines()[0].split(". ")[0] if str(cause).strip() else ""  # torch's gist
        raise UserError(f"--resume: {path} is not a readable checkpoint (truncated or corrupt?): "
                        f"{type(cause).__name__}: {detail}") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("train_args"), dict) or "epoch" not in ckpt:
        raise UserError(f"--resume: {path} is not an ultralytics training checkpoint")
    if ckpt.get("optimizer") is None or ckpt["epoch"] < 0:
        raise UserError(f"--resume: {path} is the stripped checkpoint of a finished run, nothing to resume; "
                        f"start a new run from it with --weights {path}")
    epochs = ckpt["train_args"].get("epochs")
    if isinstance(epochs, int) and ckpt["epoch"] + 1 >= epochs:
        raise UserError(f"--resume: {path} has finished all {epochs} epochs, nothing to resume")
    if not ckpt.get(RESUME_KEY):
        LOGGER.warning(f"--resume: {path} lacks the exact training state (not a last.pt of this project's "
                       "train.py); training resumes from its fp16 EMA weights and will not repeat the "
                       "uninterrupted run exactly")
    return ckpt


def truncate_results(csv: Path, epoch: int) -> None:
    """Keep results.csv's header and rows up to epoch (1-based, as the CSV counts)."""
    if not csv.is_file():
        return
    lines = csv.read_text().splitlines(keepends=True)

    def kept(line: str) -> bool:
        try:
            return float(line.split(",", 1)[0]) <= epoch
        except ValueError:  # a half-written row of the epoch the crash interrupted
            return False

    rows = lines[:1] + [line for line in lines[1:] if line.endswith("\n") and kept(line)]
    if rows != lines:
        atomic_write(csv, "".join(rows).encode())


class Captured:
    """Stands in for a checkpoint path inside BaseTrainer.save_model: keeps the bytes instead of writing them."""

    def __init__(self) -> None:
        self.data: bytes | None = None

    def write_bytes(self, data: bytes) -> int:
        self.data = data
        return len(data)


def strip_atomically(f: str | Path, s: str = "", updates: dict | None = None) -> dict:
    """strip_optimizer through a temp file, and without our resume state (a finished run cannot resume)."""
    target = Path(s or f)
    tmp = _temp(target.with_name(f"{target.name}.strip"))
    level = LOGGER.level
    LOGGER.setLevel(logging.WARNING)  # its "saved as <temp name>" line would puzzle; ours follows
    try:
        ckpt = strip_optimizer(f, s=str(tmp), updates={**(updates or {}), RESUME_KEY: None})
        if tmp.is_file():
            _publish(tmp, target)
    finally:
        LOGGER.setLevel(level)
        tmp.unlink(missing_ok=True)
    if ckpt:
        LOGGER.info(f"Optimizer stripped from {target}, {target.stat().st_size / 1e6:.1f}MB")
    return ckpt


def finish_if_trained(folder: str | Path) -> bool:
    """Strip a run whose last epoch was saved but not yet stripped (killed before ultralytics' final step).

    Training is complete there, and nothing is left to resume: what the final step would have done to the
    checkpoints (drop the optimizer and our resume state) is done here. True if the folder now holds a finished run.
    """
    last = Path(folder) / "weights" / "last.pt"
    if not last.is_file():
        return False
    try:
        ckpt, _ = tasks.torch_safe_load(last)
    except Exception:
        return False  # unreadable: the resume path reports it
    epochs = ckpt.get("train_args", {}).get("epochs") if isinstance(ckpt, dict) else None
    if not isinstance(epochs, int) or ckpt.get("epoch", -1) < 0 or ckpt["epoch"] + 1 < epochs:
        return False
    for f in (last, last.with_name("best.pt")):
        if f.is_file():
            strip_atomically(f)
    return True


def is_finished(folder: str | Path) -> bool:
    """A run folder whose training completed: ultralytics strips a finished run's last.pt (epoch -1)."""
    last = Path(folder) / "weights" / "last.pt"
    # ultralytics' loader, so ULTRALYTICS_SAFE_LOAD=1 covers this read too
    return last.is_file() and tasks.torch_safe_load(last)[0].get("epoch", -1) == -1
