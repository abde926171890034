"""Our trainers: one that starts from the model it is given, and one whose checkpoints survive a crash.

AttentionTrainer is what every run uses. It trains the model the job built (weights transferred by role,
blocks wrapped for identity start) instead of rebuilding one from the YAML, and, being importable, it is
what DDP workers unpickle: that import loads ``attention``, which registers the blocks in the worker. At train
start it gives the model the loss its YAML's ``loss:`` mapping chooses (NWD, attention/adapter/loss.py).

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
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from ultralytics.engine import trainer as trainer_module
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils import RANK
from ultralytics.utils.torch_utils import strip_optimizer

from attention.adapter import compat
from attention.adapter.checkpoints import (RESUME_KEY, Captured, atomic_write, remove_stale_temps, strip_atomically,
                                           truncate_results)
from attention.adapter.loss import criterion_detached, use_model_loss

unwrap_model = compat.model_unwrapper()  # the model inside DDP and compile wrappers


def epoch_seed(seed: int, epoch: int, rank: int = RANK) -> int:
    """One 63-bit seed per (seed, epoch, rank): an epoch's randomness owes nothing to the epochs before it."""
    return int(np.random.SeedSequence([seed, epoch, rank + 1]).generate_state(1, np.uint64)[0] >> 1)


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

    def run_callbacks(self, event: str) -> None:
        if event == "on_train_start":  # model, EMA and args are set up (a resumed run's too): the YAML's loss choice
            use_model_loss(self)
        super().run_callbacks(event)

    def save_model(self) -> Any:
        with criterion_detached(self.ema.ema):  # no loss of ours in a checkpoint (8.3.5 - 8.4.0 pickle it)
            return super().save_model()


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
        self.last, self.best = captured_last, captured_best = Captured(), Captured()
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
        trainer_module.strip_optimizer = strip_atomically
        try:
            super().final_eval()
        finally:
            trainer_module.strip_optimizer = strip_optimizer
