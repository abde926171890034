"""Who executes a comparison's runs: this process one after another, a fresh process per run, or Ray tasks.

All three call a unit, attention.evaluation.scored_run.execute(spec, slot), on the same specs, so they give the
same numbers; they differ only in where and how many at once. They share one failure policy: a run that fails
is reported (progress.failed, with its log) and the others carry on; the caller decides what a failure means.

- Sequential (the default): in this process, on --device, output to the console.
- Local(jobs): `jobs` runs at once on this machine, each in a fresh process born into its slot
  (attention.evaluation.workers): with GPUs, the runs take the listed devices in turn, each process seeing only
  its own (--device 0,1 --jobs 4: two runs per GPU); on the CPU, each run gets its own cores and as many threads.
  Each run writes its output to run.log in its folder. A process that dies under its run (killed, out of memory)
  costs that run one of its RETRIES; its neighbours are not disturbed.
- OnRay(address): every run is a Ray task on a running cluster, asking for ray_gpus GPUs and ray_cpus CPUs, in
  a fresh Ray worker process. Run folders live on a filesystem every node mounts (--project), so a task Ray
  retries after losing a node resumes the run from its last saved epoch. We connect to a cluster and never start one.
"""

from __future__ import annotations

import os
import socket
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Iterator, Sequence

from attention.errors import UserError
from attention.evaluation import workers
from attention.evaluation.progress import GridProgress
from attention.evaluation.scored_run import RunResult, RunSpec, Slot, execute, mark, pinned, status

RETRIES = 3  # attempts after a lost worker process or Ray node; a failure of the run itself is never retried
Unit = Callable[[RunSpec, Slot], RunResult]


class Sequential:
    """One run after another in this process (the embedded default: nothing to start, nothing to install)."""

    name = "in this process"
    width = 1

    def __init__(self, device: str = "", unit: Unit = execute) -> None:
        self.slot, self.unit = Slot(device=device), unit

    def run(self, specs: Sequence[RunSpec], progress: GridProgress) -> Iterator[RunResult]:
        for spec in specs:
            progress.started(spec, self.slot, announce=False)
            try:
                result = self.unit(spec, self.slot)
            except Exception as e:  # the other runs go on (Ctrl-C, a KeyboardInterrupt, stops them all)
                progress.failed(spec, e)
                continue
            progress.finished(result)
            yield result

    def call(self, fn: Callable, *args):
        """fn(*args, device=...) here, on --device (e.g. the latency of every variant, side by side)."""
        return fn(*args, device=self.slot.device or None)


def local_slots(device: str, jobs: int) -> list[Slot]:
    """Where each of `jobs` runs at once computes: GPUs in turn, or disjoint shares of this process's CPU cores.

    A GPU slot is a process that sees only its GPU (CUDA_VISIBLE_DEVICES) and calls it "0".
    """
    import torch

    d = str(device or "").strip().lower().replace("cuda:", "")
    ids = [] if d in ("cpu", "mps") else [x.strip() for x in d.split(",") if x.strip()]
    if not ids and not d and torch.cuda.is_available():
        ids = [str(i) for i in range(torch.cuda.device_count())]
    if ids:
        return [Slot(device="0", visible=ids[k % len(ids)], quiet=True) for k in range(jobs)]
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    if jobs > len(cores):
        print(f"--jobs {jobs} on {len(cores)} CPU cores: runs share cores, each with one thread")
    share = max(1, len(cores) // jobs)
    return [Slot(device="cpu", cores=tuple(cores[(k * share + i) % len(cores)] for i in range(share)), quiet=True)
            for k in range(jobs)]


class Local:
    """`jobs` runs at once on this machine, each in a fresh process of its own, born into its slot."""

    def __init__(self, jobs: int, device: str = "", unit: Unit = execute) -> None:
        self.slots, self.unit = local_slots(device, jobs), unit
        self.width = len(self.slots)
        self.name = f"{self.width} at once on this machine ({'; '.join(sorted(set(map(str, self.slots))))})"

    def run(self, specs: Sequence[RunSpec], progress: GridProgress) -> Iterator[RunResult]:
        waiting, free = list(specs), list(self.slots)
        running: dict[workers.Call, tuple[RunSpec, Slot]] = {}
        died: Counter[Path] = Counter()  # times a run's process died under it: only that run is charged
        try:
            while waiting or running:
                while waiting and free:
                    spec, slot = waiting.pop(0), free.pop(0)
                    running[workers.Call(slot, self.unit, spec, slot)] = (spec, slot)
                    progress.started(spec, slot)
                for call in workers.ended(list(running)):
                    spec, slot = running.pop(call)
                    free.append(slot)
                    kind, *detail = call.outcome()
                    if kind == "ok":
                        progress.finished(detail[0])
                        yield detail[0]
                    elif kind == "died":
                        died[spec.folder] += 1
                        why = f"its worker process died ({workers.exit_text(detail[0])})"
                        if died[spec.folder] <= RETRIES:
                            progress.retrying(spec, why)
                            waiting.insert(0, spec)  # it resumes from its last saved epoch
                        else:
                            mark(spec.folder, "failed", f"{why}, {died[spec.folder]} times")
                            progress.failed(spec, RuntimeError(f"{why}, {died[spec.folder]} times"))
                    elif kind == "stopped":  # told to stop by someone else than this driver
                        progress.failed(spec, workers.Stopped(f"stopped from outside ({detail[0]})"))
                    else:
                        progress.failed(spec, detail[0])
        finally:  # Ctrl-C, SIGTERM (workers.Stopped) or an error here: no run goes on without its driver
            workers.stop(list(running))

    def call(self, fn: Callable, *args):
        """fn(*args, device=...) in a fresh process on the first slot, alone on the machine by then."""
        return workers.call_in(self.slots[0], _in_slot, self.slots[0], fn, *args)


class OnRay:
    """Every run a Ray task on a running cluster (`ray start --head` on a private network, then --ray auto)."""

    def __init__(self, address: str, root: Path, gpus: float | None = None, cpus: float = 1.0) -> None:
        ray = import_ray()
        if str(address).strip().lower() in ("", "local"):
            raise UserError("--ray takes the address of a running cluster (auto, host:port or ray://host:port); "
                            "this project does not start one")
        if not ray.is_initialized():
            _answers(address)
            try:
                ray.init(address=address, log_to_driver=False, runtime_env={"env_vars": _worker_env()})
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise UserError(f"--ray {address}: cannot connect to a Ray cluster ({str(e).splitlines()[0]}); "
                                "start one with `ray start --head` and pass its address") from None
        resources = ray.cluster_resources()
        self.gpus = float(gpus if gpus is not None else (1 if resources.get("GPU", 0) else 0))
        self.cpus = float(cpus)
        if self.gpus > resources.get("GPU", 0) or self.cpus > resources.get("CPU", 0):
            raise UserError(f"--ray {address}: a run asks for {self.gpus:g} GPU and {self.cpus:g} CPU, the cluster "
                            f"has {resources.get('GPU', 0):g} GPU and {resources.get('CPU', 0):g} CPU in all")
        self.ray, self.root = ray, Path(root)
        self.width = max(1, int(min(resources.get("CPU", 1) // max(self.cpus, 1e-9),
                                    resources.get("GPU", 0) // self.gpus if self.gpus else 1e9)))
        self.name = f"Ray tasks ({self.gpus:g} GPU, {self.cpus:g} CPU each; room for {self.width} at once)"
        # max_calls=1: a fresh worker process per run, as with --jobs (Ray's own default for GPU tasks)
        self._task = ray.remote(num_gpus=self.gpus, num_cpus=self.cpus, max_retries=RETRIES, retry_exceptions=False,
                                max_calls=1)(_ray_execute)

    def run(self, specs: Sequence[RunSpec], progress: GridProgress) -> Iterator[RunResult]:
        ray = self.ray
        pending = {self._task.remote(spec, str(self.root), self.gpus, self.cpus): spec for spec in specs}
        seen: set[Path] = set()
        since = time.time()
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1, timeout=5.0)
                for spec in pending.values():  # a task has started once its run folder says so (shared filesystem)
                    info = status(spec.folder)
                    if spec.folder not in seen and info.get("state") == "running" and info.get("time", 0) >= since:
                        seen.add(spec.folder)
                        progress.started(spec, f"{info.get('host')} ({info.get('slot')})")
                for ref in done:
                    spec = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except Exception as e:  # the run's own error (Ray's wrapper holds it as its cause), or Ray gave up
                        cause = getattr(e, "cause", None)
                        progress.failed(spec, cause if isinstance(cause, BaseException) else e)
                        continue
                    progress.finished(result)
                    yield result
        finally:  # Ctrl-C or SIGTERM here: the tasks stop too (a dead driver's tasks Ray ends by itself)
            for ref in pending:
                ray.cancel(ref, force=True)

    def call(self, fn: Callable, *args):
        remote = self.ray.remote(num_gpus=self.gpus, num_cpus=self.cpus, max_retries=RETRIES, max_calls=1)(_in_slot)
        slot = Slot(device="0" if self.gpus else "cpu", threads=0 if self.gpus else max(1, int(self.cpus)))
        return self.ray.get(remote.remote(slot, fn, *args))


def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("--ray needs Ray on this machine and the cluster: pip install \"yolov5-attention[ray]\"") \
            from None
    return ray


def _answers(address: str) -> None:
    """A host:port address must answer within seconds (Ray itself would retry for minutes); auto is Ray's to find."""
    host, _, port = str(address).split("://")[-1].rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise UserError(f"--ray {address}: nothing answers there ({e}); is the cluster up, and is this the head's "
                        "address?") from None


def _worker_env() -> dict[str, str]:
    """What a Ray worker needs of this process's environment: the user's modules, and where to import them from."""
    from attention.adapter import ENV_MODULES

    env = {k: os.environ[k] for k in (ENV_MODULES, "YOLO_OFFLINE", "ULTRALYTICS_SAFE_LOAD") if os.environ.get(k)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    return env


def _ray_execute(spec: RunSpec, root: str, gpus: float, cpus: float) -> RunResult:
    """A Ray task: the run in its folder, which this node must see (--project on a shared filesystem)."""
    import ray

    if not (Path(root) / "settings.json").is_file():
        raise UserError(f"{socket.gethostname()} does not see {root}: with --ray, --project must be a folder every "
                        "node mounts at the same path")
    # Ray confines the task to its GPUs through CUDA_VISIBLE_DEVICES: the first visible one is ours, held before
    # ultralytics 8.3 could rewrite the variable (attention.adapter.devices)
    slot = Slot(device="0" if gpus else "cpu", quiet=True, threads=0 if gpus else max(1, int(cpus)),
                node=ray.get_runtime_context().get_node_id())
    if gpus:
        from attention.adapter.devices import hold_visible_devices

        hold_visible_devices()
    return execute(spec, slot)  # Ray's own signal handling stays: cancelling a task is Ray's business


def _in_slot(slot: Slot, fn: Callable, *args):
    with pinned(slot):
        return fn(*args, device=slot.device or None)
