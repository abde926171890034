"""The unit of a comparison: one variant x seed trained (or reused, or resumed) in its folder, then scored.

Whatever executes a comparison's grid (a loop in this process, a pool of processes, Ray tasks on a cluster)
calls execute(spec, slot) and nothing else, so every executor gives the same numbers: a run is determined by
its folder and seed, and the slot only says where it computes (a device, a share of the CPU cores).

A run folder holds, besides ultralytics' files: score-<mode>.json per way of inferring (written last, so
its presence marks the scoring done), size.json (params, GFLOPs), status.json (running or done, where and
how long) and, when run away from the console, run.log (everything the run printed).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from attention.adapter.api import YOLO
from attention.adapter.checkpoints import atomic_write, is_finished
from attention.adapter.devices import pin_cpu_threads
from attention.adapter.validator import validate
from attention.data.coco_format import yolo_to_coco
from attention.data.listing import class_names, load_split
from attention.data.prepare import prepare_data
from attention.evaluation.coco import evaluate
from attention.evaluation.runs import train_in, variant_of
from attention.evaluation.tables import model_size

Mode = tuple[str, int]  # ("full", 1920) or ("sliced", 640)


@dataclass(frozen=True)
class RunSpec:
    """Everything one run needs, picklable (it travels to worker processes and Ray tasks)."""

    folder: Path
    cfg: str  # model YAML
    seed: int
    train: dict[str, Any]  # train_in's arguments but the device: data, epochs, imgsz, batch_size, hyp, weights, ...
    modes: tuple[Mode, ...]  # ways of inferring to score with
    size_bins: str
    max_det: int
    tag: str = ""

    @property
    def variant(self) -> str:
        return variant_of(self.cfg)


@dataclass(frozen=True)
class Slot:
    """Where a run computes: a device string for ultralytics, and on the CPU the cores it may use."""

    device: str = ""
    cores: tuple[int, ...] = ()  # empty: leave the process's CPU affinity as it is
    threads: int = 0  # torch threads on the CPU; 0: one per core in cores, else ultralytics' own count
    quiet: bool = False  # send the run's output to run.log in its folder instead of the console

    def __str__(self) -> str:
        if self.cores:
            return f"cpu cores {','.join(map(str, self.cores))}"
        if self.threads:
            return f"cpu, {self.threads} threads"
        return f"device {self.device}" if self.device else "the default device"


@dataclass
class RunResult:
    """What the grid's driver needs of a finished run: its scores per mode and the model's size."""

    variant: str
    seed: int
    folder: Path
    scores: dict[str, dict[str, float]]  # "full:1920" -> COCO metrics
    size: dict[str, float]
    seconds: float  # time this call took (0 for a run reused whole)
    trained: bool  # trained or resumed in this call
    host: str = field(default_factory=socket.gethostname)


def mode_key(mode: Mode) -> str:
    return f"{mode[0]}:{mode[1]}"


def score_file(folder: Path, mode: Mode) -> Path:
    return folder / f"score-{mode[0]}{mode[1]}.json"


def is_scored(folder: Path, mode: Mode, size_bins: str, max_det: int) -> bool:
    """Scored with these bins and this detection budget (an older score file without a budget is stale)."""
    file = score_file(folder, mode)
    if not file.is_file():
        return False
    saved = json.loads(file.read_text())
    return saved.get("size_bins") == size_bins and saved.get("max_det") == max_det


def is_complete(spec: RunSpec) -> bool:
    """Trained, scored every asked way and measured: nothing for an executor to do."""
    return ((spec.folder / "size.json").is_file() and (spec.folder / "weights" / "best.pt").is_file()
            and is_finished(spec.folder) and all(is_scored(spec.folder, m, spec.size_bins, spec.max_det)
                                                 for m in spec.modes))


def collect(spec: RunSpec) -> RunResult:
    """A complete run's results, read from its folder."""
    return RunResult(spec.variant, spec.seed, spec.folder, _read_scores(spec), _read_json(spec.folder / "size.json"),
                     0.0, False)


def predictions(model: YOLO, data_yaml: str, images: list[Path], mode: Mode, out: Path, batch: int,
                device: str | None, max_det: int) -> list[dict]:
    """COCO-form detections of the val split at conf 0.001: ultralytics' validator, or sliced inference."""
    kind, size = mode
    if kind == "full":
        return validate(model, data_yaml, "val", out, imgsz=size, batch=batch, conf=0.001, iou=0.6, device=device,
                        plots=False, verbose=False, max_det=max_det)[1]
    from attention.inference.slicing import SlicedPredictor, coco_detections

    # every tile of one image goes through the model in one batch (sahi's batch_size)
    predictor = SlicedPredictor(model, slice_size=size, overlap=0.2, conf=0.001, iou=0.6, device=device,
                                max_det=max_det, batch=batch)
    return [d for path in images for d in coco_detections(path, predictor(path))]


def execute(spec: RunSpec, slot: Slot = Slot()) -> RunResult:
    """Train (or reuse, or resume) the run in its folder and score it every way asked; see the module docstring."""
    start = time.perf_counter()
    spec.folder.mkdir(parents=True, exist_ok=True)
    with pinned(slot), _logged(spec.folder / "run.log" if slot.quiet else None):
        _status(spec.folder, "running", slot)
        todo = [m for m in spec.modes if not is_scored(spec.folder, m, spec.size_bins, spec.max_det)]
        best = spec.folder / "weights" / "best.pt"
        trained = not is_finished(spec.folder)
        if trained or todo:  # train_in reuses a finished run and resumes an interrupted one
            train_in(spec.folder, spec.cfg, spec.seed, tag=spec.tag, device=slot.device or None, **spec.train)
        else:
            print(f"{spec.tag}finished and scored earlier, reused")
        model = YOLO(str(best)) if todo or not (spec.folder / "size.json").is_file() else None
        if model is not None and not (spec.folder / "size.json").is_file():
            atomic_write(spec.folder / "size.json", json.dumps(model_size(model.model, spec.train["imgsz"])).encode())
        if todo:
            data_yaml = prepare_data(spec.train["data"])
            split_cfg, images = load_split(data_yaml, "val")
            gt = yolo_to_coco(images, class_names(split_cfg))
            for m in todo:
                print(f"{spec.tag}scoring {m[0]} {m[1]}")
                found = predictions(model, data_yaml, images, m, spec.folder / f"val-{m[0]}{m[1]}",
                                    spec.train["batch_size"], slot.device or None, spec.max_det)
                coco = evaluate(gt, found, spec.size_bins, max_det=spec.max_det)
                atomic_write(score_file(spec.folder, m), json.dumps(
                    {"size_bins": spec.size_bins, "max_det": spec.max_det, **coco}, indent=1).encode())
        seconds = time.perf_counter() - start
        _status(spec.folder, "done", slot, seconds)
    return RunResult(spec.variant, spec.seed, spec.folder, _read_scores(spec), _read_json(spec.folder / "size.json"),
                     seconds, trained)


def status(folder: Path) -> dict[str, Any]:
    """A run folder's status.json ({} before its first start)."""
    file = folder / "status.json"
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError):
        return {}


def _read_scores(spec: RunSpec) -> dict[str, dict[str, float]]:
    return {mode_key(m): _read_json(score_file(spec.folder, m)) for m in spec.modes}


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _status(folder: Path, state: str, slot: Slot, seconds: float | None = None) -> None:
    info = {"state": state, "host": socket.gethostname(), "pid": os.getpid(), "slot": str(slot), "time": time.time()}
    if seconds is not None:
        info["seconds"] = round(seconds, 1)
    atomic_write(folder / "status.json", json.dumps(info).encode())


@contextlib.contextmanager
def pinned(slot: Slot) -> Iterator[None]:
    """Confine this process to the slot's CPU cores and threads (ultralytics' own thread count too), then restore."""
    threads = slot.threads or len(slot.cores)
    before = os.sched_getaffinity(0) if slot.cores and hasattr(os, "sched_getaffinity") else None
    if before is not None:
        os.sched_setaffinity(0, slot.cores)
    try:
        with pin_cpu_threads(threads) if threads else contextlib.nullcontext():
            yield
    finally:
        if before is not None:
            os.sched_setaffinity(0, before)


@contextlib.contextmanager
def _logged(path: Path | None) -> Iterator[None]:
    """Send everything this process writes to stdout and stderr (ultralytics' logger too) to path, then restore.

    At the file-descriptor level: ultralytics' log handler holds the original stream object.
    """
    if path is None:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
