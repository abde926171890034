"""Our trainers: one that starts from the model it is given, and one whose checkpoints survive a crash.

AttentionTrainer is what every run uses. It trains the model the job built (weights transferred by role,
blocks wrapped for identity start) instead of rebuilding one from the YAML, and, being importable, it is
what DDP workers unpickle: that import loads ``attention``, which registers the blocks in the worker.

ResumableTrainer adds crash safety where the release has what it needs (compat feature "exact_resume").
Stock ultralytics falls short in four ways, each fixed here at the smallest point of a trainer subclass:

- ``save_model`` writes last.pt/best.pt in place, so a kill mid-write leaves a truncated file where the good
  one was. We capture the bytes it would write and publish them with write-to-temp + ``os.replace``.
- Resume restarts the live weights from the fp16 EMA and the optimizer from an fp16 copy, and loses the
  gradients accumulated towards the next step and the step cadence. Our last.pt keeps the optimizer in fp32
  and carries the rest of the exact state (``RESUME_KEY``); both are stripped when the run finishes.
- No RNG state is saved and one dataloader iterator (with its workers' RNG) lives for the whole run. We
  reseed python, numpy, torch and the loader's generator from (seed, epoch, rank) at every epoch start and
  start a fresh iterator, so an epoch's shuffle and augmentation depend on nothing before it.
- results.csv is appended to on resume; rows written after the checkpoint (a kill between the CSV write and
  the checkpoint write) would repeat. They are dropped.

Guarantee: on one device, a run killed at any moment and resumed from its last.pt reaches the same weights and
results.csv rows as the uninterrupted run with the same seed (tests/test_resume.py: equal to the bit on CPU).
"""

from __future__ import annotations

import io
import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from ultralytics.engine import trainer as trainer_module
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.nn import tasks
from ultralytics.utils import LOGGER, RANK, torch_utils
from ultralytics.utils.torch_utils import strip_optimizer

from attention.adapter import compat
from attention.adapter.safe_load import UnsafeCheckpointError

# unwrap_model (8.3.1xx on) strips DDP and compile wrappers; older releases call it de_parallel.
unwrap_model = getattr(torch_utils, "unwrap_model", None) or torch_utils.de_parallel

RESUME_KEY = "attention_resume"  # last.pt's extra entry: the exact state ultralytics does not keep


def epoch_seed(seed: int, epoch: int, rank: int = RANK) -> int:
    """One 63-bit seed per (seed, epoch, rank): an epoch's randomness owes nothing to the epochs before it."""
    return int(np.random.SeedSequence([seed, epoch, rank + 1]).generate_state(1, np.uint64)[0] >> 1)


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
        raise FileNotFoundError(f"--resume: checkpoint not found: {path}")
    try:
        ckpt, _ = tasks.torch_safe_load(path)  # as ultralytics will load it, ULTRALYTICS_SAFE_LOAD included
    except UnsafeCheckpointError:
        raise  # already one line naming the file and the refused global
    except Exception as e:  # a truncated zip, bytes that are no pickle, ...
        cause = e.__cause__ or e  # ultralytics wraps the loader's error in a long TypeError
        detail = str(cause).strip().splitlines()[0].split(". ")[0] if str(cause).strip() else ""  # torch's gist
        raise ValueError(f"--resume: {path} is not a readable checkpoint (truncated or corrupt?): "
                         f"{type(cause).__name__}: {detail}") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("train_args"), dict) or "epoch" not in ckpt:
        raise ValueError(f"--resume: {path} is not an ultralytics training checkpoint")
    if ckpt.get("optimizer") is None or ckpt["epoch"] < 0:
        raise ValueError(f"--resume: {path} is the stripped checkpoint of a finished run, nothing to resume; "
                         f"start a new run from it with --weights {path}")
    epochs = ckpt["train_args"].get("epochs")
    if isinstance(epochs, int) and ckpt["epoch"] + 1 >= epochs:
        raise ValueError(f"--resume: {path} has finished all {epochs} epochs, nothing to resume")
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


class _Captured:
    """Stands in for a checkpoint path inside BaseTrainer.save_model: keeps the bytes instead of writing them."""

    def __init__(self) -> None:
        self.data: bytes | None = None

    def write_bytes(self, data: bytes) -> int:
        self.data = data
        return len(data)


def _strip_atomically(f: str | Path, s: str = "", updates: dict | None = None) -> dict:
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


class AttentionTrainer(DetectionTrainer):
    """DetectionTrainer that trains the model it is handed as it is (importable, so DDP workers register our blocks).

    ultralytics rebuilds a model from its YAML and copies weights in by key whenever it loads one (a checkpoint
    to fine-tune or resume). A model whose blocks are wrapped for identity start has keys no fresh build has, so
    that copy would drop the wrappers; a checkpoint of the same architecture and class count is used as it is.
    """

    def get_model(self, cfg: Any = None, weights: nn.Module | None = None, verbose: bool = True) -> nn.Module:
        yaml = getattr(weights, "yaml", None)
        if isinstance(weights, nn.Module) and isinstance(cfg, dict) and yaml == cfg and yaml.get("nc") == self.data["nc"]:
            return weights
        return super().get_model(cfg=cfg, weights=weights, verbose=verbose)


def hand_over(trainer: AttentionTrainer, model: nn.Module) -> Path:
    """Make model what every DDP worker starts from: saved as weights/start.pt and named as the run's model.

    Releases before 8.4.1xx give DDP workers only the run's arguments, from which each worker rebuilds the
    model from its YAML, losing transferred weights and identity gates; a checkpoint path in args.model is
    loaded instead (and AttentionTrainer.get_model keeps it as it is). Newer releases pickle the model itself.
    """
    path = Path(trainer.wdir) / "start.pt"
    buffer = io.BytesIO()
    torch.save({"model": model, "train_args": vars(trainer.args), "epoch": -1}, buffer)
    atomic_write(path, buffer.getvalue())
    trainer.args.model = str(path)
    return path


def trainer_class() -> type[AttentionTrainer]:
    """ResumableTrainer where the installed ultralytics allows it, else AttentionTrainer (with one warning)."""
    return ResumableTrainer if compat.enabled("exact_resume") else AttentionTrainer


class ResumableTrainer(AttentionTrainer):
    """AttentionTrainer whose checkpoints survive a kill and whose resume repeats the uninterrupted run."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._accumulate = 1
        self._step_offset = 0  # see the accumulate property
        self._batch_index = -1  # ni of the batch in progress, counted like BaseTrainer._do_train
        self._last_step = -1  # ni of the last optimizer step
        self._resumed: dict[str, Any] | None = None
        super().__init__(*args, **kwargs)

    # _do_train steps when `ni - last_opt_step >= self.accumulate`, with last_opt_step a local that starts at
    # -1, also on resume. Until the resumed run's first step, offsetting accumulate by (saved last step + 1)
    # makes that test read `ni - saved_last_step >= accumulate`, the test the uninterrupted run makes.
    @property
    def accumulate(self) -> int:
        return self._accumulate + self._step_offset

    @accumulate.setter
    def accumulate(self, value: int) -> None:
        self._accumulate = value

    def run_callbacks(self, event: str) -> None:
        # Our own hooks run first and are no user callbacks: nothing can remove them, and DDP pickles none.
        own = {"on_train_start": self._on_train_start, "on_train_epoch_start": self._on_train_epoch_start,
               "on_train_batch_start": self._on_train_batch_start}.get(event)
        if own is not None:
            own()
        super().run_callbacks(event)

    def _on_train_start(self) -> None:
        if self._resumed is not None:  # armed only now: _do_train read acc0 just before this event
            self._step_offset = self._resumed["last_step"] + 1

    def _on_train_epoch_start(self) -> None:
        self._batch_index = self.epoch * len(self.train_loader) - 1
        self._reseed()
        self.train_loader.reset()  # a fresh iterator draws its worker seeds from the generator just reseeded
        if self._resumed is not None:  # _do_train zeroed the gradients just before its first epoch
            params = dict(unwrap_model(self.model).named_parameters())
            for name, grad in self._resumed["grads"].items():
                params[name].grad = grad.to(params[name].device)
            self._resumed = None

    def _on_train_batch_start(self) -> None:
        self._batch_index += 1

    def _reseed(self) -> None:
        seed = epoch_seed(self.args.seed, self.epoch)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        self.train_loader.generator.manual_seed(seed)

    def _close_dataloader_mosaic(self) -> None:
        if getattr(self, "_in_resume", False) and self.epochs < self.args.close_mosaic:
            # Releases up to 8.4.1xx close mosaic on resume when close_mosaic exceeds epochs, though their
            # uninterrupted run (closing at epoch == epochs - close_mosaic) never does: keep it as that run had it.
            return
        super()._close_dataloader_mosaic()
        if hasattr(self, "epoch"):  # a resume that closes it before the epoch loop is reseeded by that loop
            self._reseed()  # in whichever epoch a (resumed) run closes mosaic, the epoch starts from the same RNG

    def _build_train_pipeline(self) -> None:
        self._step_offset = 0  # an OOM retry restarts the step count at -1 in _do_train too
        super()._build_train_pipeline()

    def optimizer_step(self) -> None:
        super().optimizer_step()
        self._last_step, self._step_offset = self._batch_index, 0

    def _resume_state(self) -> dict[str, Any]:
        """What an exact resume needs beyond ultralytics' checkpoint; serialized at once, so not copied."""
        model = unwrap_model(self.model)
        buffer = getattr(self.train_loader.dataset, "buffer", None)  # a list only while mosaic caches images
        return {
            "epoch": self.epoch,
            "model": model.state_dict(),  # the live fp32 weights (ultralytics keeps only the fp16 EMA)
            "ema": self.ema.ema.state_dict(),
            "last_step": self._last_step,
            "grads": {n: p.grad for n, p in model.named_parameters() if p.grad is not None},  # pending accumulation
            "mosaic_buffer": list(buffer) if isinstance(buffer, list) else [],
        }

    def save_model(self) -> bool:
        """BaseTrainer.save_model, with last.pt (plus the exact state) and best.pt published atomically."""
        last, best = self.last, self.best
        self.last, self.best = captured_last, captured_best = _Captured(), _Captured()
        try:
            saved = super().save_model()
        finally:
            self.last, self.best = last, best
        if captured_last.data is not None:
            # bytes ultralytics serialized a moment ago in this process, not a file from elsewhere
            ckpt = torch.load(io.BytesIO(captured_last.data), map_location="cpu", weights_only=False)
            ckpt["optimizer"] = self.optimizer.state_dict()  # fp32: ultralytics' fp16 copy does not resume exactly
            ckpt[RESUME_KEY] = self._resume_state()
            buffer = io.BytesIO()
            torch.save(ckpt, buffer)
            atomic_write(last, buffer.getvalue())
        if captured_best.data is not None:
            atomic_write(best, captured_best.data)
        return saved

    def resume_training(self, ckpt: dict | None) -> None:
        self._in_resume = True
        try:
            super().resume_training(ckpt)
        finally:
            self._in_resume = False
        if ckpt is None or not self.resume:
            return
        if RANK in {-1, 0}:
            truncate_results(self.csv, ckpt["epoch"] + 1)
            remove_stale_temps(self.wdir)
            remove_stale_temps(self.save_dir)
        state = ckpt.get(RESUME_KEY)
        if not state:
            return
        unwrap_model(self.model).load_state_dict(state["model"])
        self.ema.ema.load_state_dict(state["ema"])  # (the fp32 optimizer state came in ckpt["optimizer"])
        self._last_step = state["last_step"]
        dataset = self.train_loader.dataset
        if RANK in {-1, 0} and isinstance(getattr(dataset, "buffer", None), list):
            # Mosaic draws partners from the images the previous epoch left cached; reload them in order.
            # (Only rank 0's cache is saved: other DDP ranks restart theirs empty.)
            dataset.buffer.clear()
            for i in state["mosaic_buffer"]:
                dataset.ims[i] = None
                dataset.load_image(i)
        self._resumed = state

    def final_eval(self) -> None:
        # ultralytics rewrites last.pt and best.pt in place here; send that rewrite through a temp file too.
        trainer_module.strip_optimizer = _strip_atomically
        try:
            super().final_eval()
        finally:
            trainer_module.strip_optimizer = strip_optimizer


def is_finished(folder: str | Path) -> bool:
    """A run folder whose training completed: ultralytics strips a finished run's last.pt (epoch -1)."""
    last = Path(folder) / "weights" / "last.pt"
    # ultralytics' loader, so ULTRALYTICS_SAFE_LOAD=1 covers this read too
    return last.is_file() and tasks.torch_safe_load(last)[0].get("epoch", -1) == -1
