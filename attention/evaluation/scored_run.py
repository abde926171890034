"""The unit of a comparison: one variant x seed trained (or reused, or resumed) in its folder, then scored.

Whatever executes a comparison's grid (a loop in this process, a fresh process per run, Ray tasks on a cluster)
calls execute(spec, slot) and nothing else, so every executor gives the same numbers: a run is determined by
its folder, its settings and its seed, and the slot only says where it computes (a device, a share of the cores).

A run folder holds, besides ultralytics' files: score-<mode>.json per way of inferring (written last, so its
presence marks the scoring done; it names what it was scored with, Scoring.key), size.json (params, GFLOPs),
status.json (running, done, failed or stopped; where and how long), attempts.jsonl (one line as each attempt
starts and one as it ends: host, pid, device, CUDA_VISIBLE_DEVICES, GPU, the cores its threads may use, torch
threads), lock.json while a process trains it (attention.evaluation.locks) and run.log (everything the run
printed when run away from the console; a failure's traceback in every case).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from attention.adapter.api import YOLO
from attention.adapter.checkpoints import atomic_write, is_finished
from attention.adapter.devices import pin_cpu_threads
from attention.adapter.validator import validate
from attention.data.coco_format import yolo_to_coco
from attention.data.listing import class_names, load_split
from attention.data.prepare import prepare_data
from attention.errors import UserError
from attention.evaluation.coco import evaluate
from attention.evaluation.locks import RunLock
from attention.evaluation.runs import train_in, variant_of
from attention.evaluation.tables import model_size

Mode = tuple[str, int]  # ("full", 1920) or ("sliced", 640)
ATTEMPTS = "attempts.jsonl"


@dataclass(frozen=True)
class TrainSettings:
    """How a run trains: train_in's arguments but the device. A comparison's runs share one (the base has its own)."""

    data: str
    epochs: int
    imgsz: int
    batch_size: int
    workers: int  # data-loader processes: they decide the augmentation order, so they are part of the run
    hyp: str | None = None
    weights: str | None = None  # the checkpoint the run starts from, moved in by role
    attn_init: str = "paper"

    def kwargs(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Scoring:
    """How a run's predictions are made and scored; a score file made otherwise is scored again."""

    size_bins: str
    max_det: int
    conf: float = 0.001  # every candidate down to this score: AP integrates over the whole ranking
    iou: float = 0.6  # NMS IoU of the predictions scored
    overlap: float = 0.2  # sliced inference: the tiles' overlap

    def key(self, mode: Mode) -> dict[str, Any]:
        """What a score file of mode must have been made with to be reused (the overlap only matters sliced)."""
        key = {"size_bins": self.size_bins, "max_det": self.max_det, "conf": self.conf, "iou": self.iou}
        return key | ({"overlap": self.overlap} if mode[0] == "sliced" else {})


@dataclass(frozen=True)
class RunSpec:
    """Everything one run needs, picklable (it travels to worker processes and Ray tasks)."""

    folder: Path
    cfg: str  # model YAML
    seed: int
    train: TrainSettings
    modes: tuple[Mode, ...]  # ways of inferring to score with
    scoring: Scoring
    tag: str = ""
    owner: str = ""  # the comparison sending the run (its lock's owner; attention.evaluation.locks)

    @property
    def variant(self) -> str:
        return variant_of(self.cfg)

    @property
    def log(self) -> Path:
        return self.folder / "run.log"


@dataclass(frozen=True)
class Slot:
    """Where a run computes: a device string for ultralytics, and on the CPU the cores it may use.

    visible: the GPU(s) a process of its own is given through CUDA_VISIBLE_DEVICES, device then naming them as
    that process counts ("0"); attention.evaluation.workers starts such a process with it.
    """

    device: str = ""
    cores: tuple[int, ...] = ()  # empty: leave the process's CPU affinity as it is
    threads: int = 0  # torch threads on the CPU; 0: one per core in cores, else ultralytics' own count
    quiet: bool = False  # send the run's output to run.log in its folder instead of the console
    visible: str = ""  # CUDA_VISIBLE_DEVICES of a process of its own ("" leaves it as it is)
    node: str = ""  # the Ray node it runs on, if any

    def __str__(self) -> str:
        if self.cores:
            return f"cpu cores {','.join(map(str, self.cores))}"
        if self.threads:
            return f"cpu, {self.threads} threads"
        if self.visible:
            return f"GPU {self.visible}"
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


def rescore_because(folder: Path, mode: Mode, scoring: Scoring) -> str | None:
    """Why the run must be scored mode again (no score file, or one made with another setting); None if not."""
    file = score_file(folder, mode)
    if not file.is_file():
        return "not scored yet"
    saved = json.loads(file.read_text())
    changed = [f"{k} {saved.get(k, 'unrecorded')} -> {v}" for k, v in scoring.key(mode).items() if saved.get(k) != v]
    return f"scored earlier with other settings ({', '.join(changed)})" if changed else None


def is_scored(folder: Path, mode: Mode, scoring: Scoring) -> bool:
    return rescore_because(folder, mode, scoring) is None


def is_complete(spec: RunSpec) -> bool:
    """Trained, scored every asked way and measured: nothing for an executor to do."""
    return ((spec.folder / "size.json").is_file() and (spec.folder / "weights" / "best.pt").is_file()
            and is_finished(spec.folder) and all(is_scored(spec.folder, m, spec.scoring) for m in spec.modes))


def collect(spec: RunSpec) -> RunResult:
    """A complete run's results, read from its folder."""
    return RunResult(spec.variant, spec.seed, spec.folder, _read_scores(spec), _read_json(spec.folder / "size.json"),
                     0.0, False)


def predictions(model: YOLO, data_yaml: str, images: list[Path], mode: Mode, out: Path, batch: int,
                device: str | None, scoring: Scoring) -> list[dict]:
    """COCO-form detections of the val split: ultralytics' validator, or sliced inference."""
    kind, size = mode
    if kind == "full":
        return validate(model, data_yaml, "val", out, imgsz=size, batch=batch, conf=scoring.conf, iou=scoring.iou,
                        device=device, plots=False, verbose=False, max_det=scoring.max_det)[1]
    from attention.inference.slicing import SlicedPredictor, coco_detections

    # every tile of one image goes through the model in one batch (sahi's batch_size)
    predictor = SlicedPredictor(model, slice_size=size, overlap=scoring.overlap, conf=scoring.conf, iou=scoring.iou,
                                device=device, max_det=scoring.max_det, batch=batch)
    return [d for path in images for d in coco_detections(path, predictor(path))]


def execute(spec: RunSpec, slot: Slot = Slot()) -> RunResult:
    """Train (or reuse, or resume) the run in its folder and score it every way asked; see the module docstring.

    The folder is locked for the whole call (a folder held by a live process elsewhere is a UserError naming it),
    and status.json and attempts.jsonl say how the attempt ended: done, failed (the traceback goes to run.log) or
    stopped (Ctrl-C, SIGTERM, a lost driver: every saved epoch is kept).
    """
    start, began = time.perf_counter(), time.time()
    with RunLock(spec.folder, spec.owner or f"{socket.gethostname()}:{os.getpid()}") as lock, pinned(slot), \
            _logged(spec.log if slot.quiet else None):
        _attempt(spec.folder, began, "started", slot)
        _status(spec.folder, "running", slot)
        try:
            trained = _train_and_score(spec, slot)
        except KeyboardInterrupt as e:  # Ctrl-C, SIGTERM (workers.Stopped), or another process took the folder
            if lock.lost:  # the folder is someone else's now: write nothing more there
                raise UserError(lock.lost) from None
            why = str(e) or "interrupted"
            _attempt(spec.folder, began, "stopped", slot, why)
            _status(spec.folder, "stopped", slot, time.perf_counter() - start, why)
            raise
        except Exception as e:
            why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            text = f"{spec.tag}failed: {why}\n" if isinstance(e, UserError) else traceback.format_exc()
            if slot.quiet:
                sys.stderr.write(text)  # run.log
            else:  # the console shows the progress line; the run folder keeps the detail
                with spec.log.open("a") as log:
                    log.write(text)
            _attempt(spec.folder, began, "failed", slot, why)
            _status(spec.folder, "failed", slot, time.perf_counter() - start, why)
            raise
        seconds = time.perf_counter() - start
        _attempt(spec.folder, began, "done", slot)
        _status(spec.folder, "done", slot, seconds)
    return RunResult(spec.variant, spec.seed, spec.folder, _read_scores(spec), _read_json(spec.folder / "size.json"),
                     seconds, trained)


def _train_and_score(spec: RunSpec, slot: Slot) -> bool:
    """The run's work in its folder: train if unfinished, measure, score what is missing; True if it trained."""
    todo = []
    for m in spec.modes:
        why = rescore_because(spec.folder, m, spec.scoring)
        if why is not None:
            todo.append(m)
            if why != "not scored yet":
                print(f"{spec.tag}{m[0]} {m[1]} {why}: scoring again")
    best = spec.folder / "weights" / "best.pt"
    trained = not is_finished(spec.folder)
    if trained or todo:  # train_in reuses a finished run and resumes an interrupted one
        train_in(spec.folder, spec.cfg, spec.seed, tag=spec.tag, device=slot.device or None, **spec.train.kwargs())
    else:
        print(f"{spec.tag}finished and scored earlier, reused")
    model = YOLO(str(best)) if todo or not (spec.folder / "size.json").is_file() else None
    if model is not None and not (spec.folder / "size.json").is_file():
        atomic_write(spec.folder / "size.json", json.dumps(model_size(model.model, spec.train.imgsz)).encode())
    if todo:
        data_yaml = prepare_data(spec.train.data)
        split_cfg, images = load_split(data_yaml, "val")
        gt = yolo_to_coco(images, class_names(split_cfg))
        for m in todo:
            print(f"{spec.tag}scoring {m[0]} {m[1]}")
            found = predictions(model, data_yaml, images, m, spec.folder / f"val-{m[0]}{m[1]}", spec.train.batch_size,
                                slot.device or None, spec.scoring)
            coco = evaluate(gt, found, spec.scoring.size_bins, max_det=spec.scoring.max_det)
            atomic_write(score_file(spec.folder, m), json.dumps({**spec.scoring.key(m), **coco}, indent=1).encode())
    return trained


def status(folder: Path) -> dict[str, Any]:
    """A run folder's status.json ({} before its first start)."""
    file = folder / "status.json"
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError):
        return {}


def mark(folder: Path, state: str, why: str) -> None:
    """Set status.json of a run whose own process could not (it died): state and why."""
    _status(Path(folder), state, Slot(), why=why)


def attempts(folder: Path) -> list[dict[str, Any]]:
    """Every attempt at the run, oldest first: where it started, and how and when it ended (if it did)."""
    out: dict[str, dict[str, Any]] = {}
    try:
        lines = (Path(folder) / ATTEMPTS).read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line cut short by a kill
        key = f"{event.get('host')}:{event.get('pid')}:{event.get('began')}"
        out.setdefault(key, {}).update(event)
    return list(out.values())


def placement(slot: Slot) -> dict[str, Any]:
    """Where this process computes for slot: host, pid, device, CUDA_VISIBLE_DEVICES, the GPU, cores and threads.

    The GPU is read only once CUDA runs here: asking earlier would start CUDA, and with it fix the visible GPUs
    before ultralytics 8.3 writes CUDA_VISIBLE_DEVICES for a --device of the sequential executor.
    """
    info: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid(), "slot": str(slot),
                            "device": slot.device or "default",
                            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                            "cores": thread_cores(), "torch_threads": torch.get_num_threads()}
    if slot.node:
        info["ray_node"] = slot.node
    if torch.cuda.is_initialized():
        index = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        info["gpu"] = {"index": index, "name": props.name, "uuid": str(getattr(props, "uuid", "")),
                       "pci_bus_id": getattr(props, "pci_bus_id", None)}
    return info


def thread_cores() -> list[int]:
    """The CPU cores any thread of this process may run on (torch's pool included), from /proc where it exists."""
    cores: set[int] = set()
    for task in Path("/proc/self/task").glob("*"):
        try:
            text = (task / "status").read_text()
        except OSError:
            continue
        allowed = next((line.split(":", 1)[1] for line in text.splitlines() if line.startswith("Cpus_allowed_list")),
                       "")
        for part in filter(None, allowed.strip().split(",")):
            low, _, high = part.partition("-")
            cores.update(range(int(low), int(high or low) + 1))
    if not cores and hasattr(os, "sched_getaffinity"):
        cores = set(os.sched_getaffinity(0))
    return sorted(cores)


def _attempt(folder: Path, began: float, state: str, slot: Slot, why: str | None = None) -> None:
    """One line of attempts.jsonl: where this attempt (begun at `began`) computes, as it starts and as it ends."""
    event = {"began": began, "state": state, "time": time.time(), **placement(slot)}
    if why:
        event["why"] = why
    with open(folder / ATTEMPTS, "a") as fh:  # one writer: the lock's holder
        fh.write(json.dumps(event) + "\n")


def _read_scores(spec: RunSpec) -> dict[str, dict[str, float]]:
    return {mode_key(m): _read_json(score_file(spec.folder, m)) for m in spec.modes}


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _status(folder: Path, state: str, slot: Slot, seconds: float | None = None, why: str | None = None) -> None:
    info = {"state": state, "host": socket.gethostname(), "pid": os.getpid(), "slot": str(slot), "time": time.time()}
    if seconds is not None:
        info["seconds"] = round(seconds, 1)
    if why:
        info["why"] = why
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
