"""A call in a fresh process of its own, born into its slot and stopped with the comparison: the machinery of --jobs.

Why a fresh process per run: what a run leaves in its process does not follow the next run's slot. ultralytics
8.3's select_device writes CUDA_VISIBLE_DEVICES, which CUDA reads once per process; torch's threads keep the CPU
affinity of the moment they were made; a BLAS library starts its threads as it is loaded. So every run (and the
latency measurement) gets a new interpreter, started with spawn, that ends with its run.

Born into its slot: the child's environment (CUDA_VISIBLE_DEVICES for a GPU slot; OMP, MKL and OpenBLAS thread
counts for a share of the CPU) and its CPU affinity are set on the driver's own thread for the instant the child
is started, and the child has them from its first instruction: before it imports torch. (An initializer in the
child would come too late: spawn imports the package, and with it torch, before any code of ours runs there.)
A GPU child then starts CUDA at once (attention.adapter.devices.hold_visible_devices).

Stops: the child ignores SIGINT, so Ctrl-C reaches the driver alone, which stops every child; SIGTERM raises
Stopped in the child's main thread, so the run ends between two instructions with its saved epochs on disk
(checkpoints are written atomically) and its lock released; a thread in the child waits on the driver and stops
the run the same way if the driver dies (SIGKILL, a lost session). A child still there GRACE seconds after being
told is killed.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import threading
import time
import traceback
from typing import Any, Callable, Iterator, Sequence

from attention.evaluation.scored_run import Slot

GRACE = 10.0  # seconds a told child has to end before it is killed
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
DRIVER_GONE = "the comparison's driver is gone"


class Stopped(KeyboardInterrupt):
    """A stop asked for from outside the run (SIGTERM, a lost driver): like Ctrl-C, no `except Exception` takes it."""


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Inside the block SIGTERM raises Stopped in this (the main) thread, as Ctrl-C raises KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGTERM, _raise_stopped)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


_stop_reason = "SIGTERM"  # what Stopped says in this process (the watchdog sets DRIVER_GONE)


def _raise_stopped(signum: int, frame: Any) -> None:
    raise Stopped(_stop_reason)


def slot_environment(slot: Slot) -> dict[str, str]:
    """The environment variables a process of its own needs for slot: its GPUs, or its share of threads."""
    env = {"CUDA_VISIBLE_DEVICES": slot.visible} if slot.visible else {}
    threads = slot.threads or len(slot.cores)
    return env | ({name: str(threads) for name in THREAD_VARS} if threads else {})


@contextlib.contextmanager
def _born_into(slot: Slot) -> Iterator[None]:
    """For the instant a child is started: this thread's environment, CPU affinity and SIGINT are the child's."""
    env = slot_environment(slot)
    saved = {name: os.environ.get(name) for name in env}
    affinity = os.sched_getaffinity(0) if slot.cores and hasattr(os, "sched_setaffinity") else None
    sigint = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
    try:  # everything inside: whatever fails, this process gets its own SIGINT, environment and cores back
        if sigint is not None:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # an ignored signal stays so after exec
        os.environ.update(env)
        if affinity is not None:
            os.sched_setaffinity(0, slot.cores)
        yield
    finally:
        if affinity is not None:
            os.sched_setaffinity(0, affinity)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if sigint is not None:
            signal.signal(signal.SIGINT, sigint)


class Call:
    """fn(*args) in a fresh process born into slot; outcome() once it has ended.

    An outcome is ("ok", result), ("error", exception, traceback text), ("stopped", why) or ("died", exit code):
    died means the process ended without a word (killed, out of memory).
    """

    def __init__(self, slot: Slot, fn: Callable, *args: Any) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child_end = ctx.Pipe(duplex=False)
        # not a daemon: a run's data-loader processes are its children
        self.process = ctx.Process(target=_child, args=(child_end, slot, fn, args), name=f"run on {slot}")
        with _born_into(slot):
            self.process.start()
        child_end.close()
        self._outcome: tuple | None = None

    @property
    def handles(self) -> list[Any]:
        return [self._conn, self.process.sentinel]

    def outcome(self) -> tuple:
        if self._outcome is None:
            message = None
            try:
                if self._conn.poll(GRACE if self.process.is_alive() else 0):
                    message = self._conn.recv()
            except (EOFError, OSError, pickle.UnpicklingError, AttributeError, ImportError, TypeError):
                message = None  # the process ended mid-message, or sent something this side cannot rebuild
            self.process.join(GRACE)  # it has said its last word: it ends now, or is made to
            if self.process.is_alive():
                self.process.kill()
                self.process.join()
            self._outcome = message or ("died", self.process.exitcode)
            self._conn.close()
        return self._outcome


def ended(calls: Sequence[Call], timeout: float | None = None) -> list[Call]:
    """The calls that have sent their outcome or ended (waits for the first, at most timeout seconds)."""
    ready = multiprocessing.connection.wait([h for c in calls for h in c.handles], timeout)
    return [c for c in calls if any(h in ready for h in c.handles)]


def stop(calls: Sequence[Call], grace: float = GRACE) -> None:
    """Tell every call's process to stop (SIGTERM), wait up to grace seconds in all, kill what is left."""
    for c in calls:
        if c.process.is_alive():
            c.process.terminate()
    deadline = time.monotonic() + grace
    for c in calls:
        c.process.join(max(0.0, deadline - time.monotonic()))
    for c in calls:
        if c.process.is_alive():
            c.process.kill()
            c.process.join()


def call_in(slot: Slot, fn: Callable, *args: Any) -> Any:
    """fn(*args) in a fresh process born into slot, waited for; its exception raised here."""
    call = Call(slot, fn, *args)
    try:
        ended([call])
        kind, *rest = call.outcome()
    finally:
        stop([call])
    if kind == "ok":
        return rest[0]
    if kind == "error":
        raise rest[0]
    if kind == "stopped":
        raise Stopped(rest[0])
    raise RuntimeError(f"the worker process died ({exit_text(rest[0])})")


def exit_text(code: int | None) -> str:
    """'killed by SIGKILL' or 'exit status 1'."""
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def _child(conn: Any, slot: Slot, fn: Callable, args: tuple) -> None:
    """The child's main: stop handling and the driver watch first, then CUDA, then the call; one message back."""
    signal.signal(signal.SIGTERM, _raise_stopped)
    threading.Thread(target=_watch_driver, name="driver watch", daemon=True).start()
    try:
        if slot.visible:
            from attention.adapter.devices import hold_visible_devices

            hold_visible_devices()
        message: tuple = ("ok", fn(*args))
    except KeyboardInterrupt as e:
        message = ("stopped", str(e) or "interrupted")
    except BaseException as e:  # noqa: BLE001 (the driver decides; a SystemExit of the run's code included)
        message = ("error", _portable(e), traceback.format_exc())
    try:
        conn.send(message)
    except OSError:
        pass  # the driver is gone: nobody to tell
    finally:
        conn.close()


def _watch_driver() -> None:
    """Wait for the driver to end; if it ends first (killed), stop the run as SIGTERM would, then exit for sure."""
    global _stop_reason
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    parent.join()  # returns once the driver's end of the start-up pipe is closed: the driver has ended
    _stop_reason = DRIVER_GONE
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(GRACE)
    os._exit(1)  # the run did not stop in time (stuck in native code): its saved epochs are on disk either way


def _portable(error: BaseException) -> BaseException:
    """error if it survives pickling (the driver re-raises it as it is), else a RuntimeError saying what it was."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001
        return RuntimeError(f"{type(error).__name__}: {error}")
