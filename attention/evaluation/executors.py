"""Who executes a comparison's runs: this process one after another, a pool of processes, or Ray tasks.

All three call attention.evaluation.scored_run.execute(spec, slot) on the same specs, so they give the same
numbers; they differ only in where and how many at once.

- Sequential (the default): in this process, on --device, output to the console.
- Local(jobs): `jobs` runs at once on this machine, each in its own process and pinned to its share: with
  GPUs, the runs take the listed devices in turn (--device 0,1 --jobs 4: two runs per GPU); on the CPU, each
  run gets its own cores and as many threads. Each run writes its output to run.log in its folder.
- OnRay(address): every run is a Ray task on a running cluster, asking for ray_gpus GPUs and ray_cpus CPUs.
  Run folders live on a filesystem every node mounts (--project), so a task Ray retries after losing a node
  resumes the run from its last saved epoch. We connect to a cluster and never start one.
"""

from __future__ import annotations

import concurrent.futures as futures
import multiprocessing
import os
import socket
import time
from collections import Counter
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Callable, Iterator, Sequence

from attention.errors import UserError
from attention.evaluation.progress import GridProgress
from attention.evaluation.scored_run import RunResult, RunSpec, Slot, execute, pinned, status

RETRIES = 3  # attempts after a lost worker process or Ray node; a user error is never retried
ATTEMPTS = "ray-attempts.txt"  # in a run folder: one line per Ray attempt at the run


class Sequential:
    """One run after another in this process (the embedded default: nothing to start, nothing to install)."""

    name = "in this process"
    width = 1

    def __init__(self, device: str = "") -> None:
        self.slot = Slot(device=device)

    def run(self, specs: Sequence[RunSpec], progress: GridProgress) -> Iterator[RunResult]:
        for spec in specs:
            progress.started(spec, self.slot, announce=False)
            result = execute(spec, self.slot)
            progress.finished(result)
            yield result

    def call(self, fn: Callable, *args):
        """fn(*args, device=...) here, on --device (e.g. the latency of every variant, side by side)."""
        return fn(*args, device=self.slot.device or None)


def local_slots(device: str, jobs: int) -> list[Slot]:
    """Where each of `jobs` runs at once computes: GPUs in turn, or disjoint shares of this process's CPU cores."""
    import torch

    d = str(device or "").strip().lower().replace("cuda:", "")
    ids = [] if d in ("cpu", "mps") else [x.strip() for x in d.split(",") if x.strip()]
    if not ids and not d and torch.cuda.is_available():
        ids = [str(i) for i in range(torch.cuda.device_count())]
    if ids:
        return [Slot(device=ids[k % len(ids)], quiet=True) for k in range(jobs)]
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    if jobs > len(cores):
        print(f"--jobs {jobs} on {len(cores)} CPU cores: runs share cores, each with one thread")
    share = max(1, len(cores) // jobs)
    return [Slot(device="cpu", cores=tuple(cores[(k * share + i) % len(cores)] for i in range(share)), quiet=True)
            for k in range(jobs)]


class Local:
    """`jobs` runs at once on this machine, each in a process of its own, pinned to its slot."""

    def __init__(self, jobs: int, device: str = "") -> None:
        self.slots = local_slots(device, jobs)
        self.width = len(self.slots)
        self.name = f"{self.width} at once on this machine ({'; '.join(sorted(set(map(str, self.slots))))})"

    def run(self, specs: Sequence[RunSpec], progress: GridProgress) -> Iterator[RunResult]:
        waiting, free = list(specs), list(self.slots)
        running: dict[futures.Future, tuple[RunSpec, Slot]] = {}
        failed: list[tuple[RunSpec, BaseException]] = []
        lost: Counter[Path] = Counter()  # times a run's worker process died under it
        pool: futures.ProcessPoolExecutor | None = None
        try:
            while waiting or running:
                if pool is None and not running:  # the first, or a fresh one once a broken pool's runs are back
                    pool = _spawn_pool(self.width)
                while waiting and free and pool is not None:
                    spec, slot = waiting.pop(0), free.pop(0)
                    running[pool.submit(execute, spec, slot)] = (spec, slot)
                    progress.started(spec, slot)
                done, _ = futures.wait(running, return_when=futures.FIRST_COMPLETED)
                for fut in done:
                    spec, slot = running.pop(fut)
                    free.append(slot)
                    try:
                        result = fut.result()
                    except BrokenProcessPool as e:
                        # A worker died (killed, out of memory): the pool stops every worker with it. Each run it
                        # held goes back to the queue and resumes from its last saved epoch, as Ray retries a task.
                        lost[spec.folder] += 1
                        if lost[spec.folder] <= RETRIES:
                            progress.retrying(spec, "its worker process died")
                            waiting.insert(0, spec)
                        else:
                            progress.failed(spec, e)
                            failed.append((spec, e))
                        if pool is not None:
                            pool.shutdown(wait=True)
                            pool = None
                        continue
                    except Exception as e:  # the other runs go on; their work is kept either way
                        progress.failed(spec, e)
                        failed.append((spec, e))
                        continue
                    progress.finished(result)
                    yield result
        finally:
            if pool is not None:
                pool.shutdown(wait=True)
        _raise_first(failed, len(specs))

    def call(self, fn: Callable, *args):
        """fn(*args, device=...) in a worker process on the first slot, alone on the machine by then."""
        pool = _spawn_pool(1)
        try:
            return pool.submit(_in_slot, self.slots[0], fn, *args).result()
        finally:
            pool.shutdown(wait=True)


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
        self._task = ray.remote(num_gpus=self.gpus, num_cpus=self.cpus, max_retries=RETRIES,
                                retry_exceptions=False)(_ray_execute)

    def run(self, specs: Sequence[RunSpec], progress: GridProgress) -> Iterator[RunResult]:
        ray = self.ray
        pending = {self._task.remote(spec, str(self.root), self.gpus, self.cpus): spec for spec in specs}
        seen: set[Path] = set()
        since = time.time()
        failed: list[tuple[RunSpec, BaseException]] = []
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
                except Exception as e:
                    cause = getattr(e, "cause", None)
                    progress.failed(spec, cause or e)
                    failed.append((spec, cause if isinstance(cause, Exception) else e))
                    continue
                progress.finished(result)
                yield result
        _raise_first(failed, len(specs))

    def call(self, fn: Callable, *args):
        remote = self.ray.remote(num_gpus=self.gpus, num_cpus=self.cpus, max_retries=RETRIES)(_in_slot)
        slot = Slot(device="0" if self.gpus else "cpu", threads=0 if self.gpus else max(1, int(self.cpus)))
        return self.ray.get(remote.remote(slot, fn, *args))


def _spawn_pool(workers: int) -> futures.ProcessPoolExecutor:
    # spawn: a fresh interpreter per worker (fork would copy this process's torch threads and CUDA state)
    return futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


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
    spec.folder.mkdir(parents=True, exist_ok=True)
    with open(spec.folder / ATTEMPTS, "a") as log:  # which node ran each attempt (Ray retries after a lost node)
        log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} node {ray.get_runtime_context().get_node_id()} "
                  f"host {socket.gethostname()} pid {os.getpid()}\n")
    # Ray confines the task to its GPUs through CUDA_VISIBLE_DEVICES: the first visible one is ours
    slot = Slot(device="0" if gpus else "cpu", quiet=True, threads=0 if gpus else max(1, int(cpus)))
    return execute(spec, slot)


def _in_slot(slot: Slot, fn: Callable, *args):
    with pinned(slot):
        return fn(*args, device=slot.device or None)


def _raise_first(failed: list[tuple[RunSpec, BaseException]], total: int) -> None:
    if not failed:
        return
    spec, error = failed[0]
    note = (f"{len(failed)} of {total} runs failed, the first: {spec.variant} seed {spec.seed} ({spec.folder}): "
            f"{str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__}; finished runs "
            "are kept, and the same command carries on from them")
    if isinstance(error, UserError):
        raise UserError(note) from error
    raise RuntimeError(note) from error
