"""One writer per run folder: a lock file naming the process that trains the run, refreshed while it does.

lock.json in a run folder names its holder: host, pid (with the process's start time where the system says it,
so that a recycled pid is not taken for the holder), the comparison that sent the run (owner) and since when.
The holder touches the file every HEARTBEAT seconds. A process that reaches a held folder:

- takes it over quietly when the holder was sent by the same comparison (the same owner): the executor that sends
  a run again (the pool after its worker died, Ray after it lost the node) has given the earlier attempt up;
- takes it over with a warning when the holder is gone: on this host, its process no longer runs; on another host,
  the lock has not been touched for STALE seconds (a lost node: its pid means nothing here);
- refuses otherwise, with one line naming the holder.

A holder whose lock no longer names it (taken over while it was cut off from the shared filesystem) stops its run
at its next heartbeat: two processes never go on writing one folder. The lock is made with a hard link of a
complete file, which is atomic on local filesystems and on NFS, so a reader never sees half a lock.
"""

from __future__ import annotations

import _thread
import ctypes
import json
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from attention.errors import UserError

LOCK = "lock.json"
HEARTBEAT = 30.0  # seconds between the holder's touches
STALE = 300.0  # seconds without a touch after which a holder on another host counts as lost (clock skew included)


def process_start(pid: int) -> str | None:
    """When process pid started, as the system counts it (Linux: clock ticks since boot); None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after "pid (name)"


def alive(pid: int, start: str | None = None) -> bool:
    """Whether process pid on this host runs (and, given its start time, is still that process, not a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True  # no /proc: os.kill said it exists
    return state != "Z" and (start is None or process_start(pid) == start)


@dataclass(frozen=True)
class Holder:
    """Who holds a run folder: what lock.json says."""

    host: str
    pid: int
    start: str | None  # the process's start time (process_start), to tell a recycled pid
    owner: str  # the comparison that sent the run (one per invocation of compare)
    since: float

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host} since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.since))}"

    @classmethod
    def me(cls, owner: str) -> "Holder":
        return cls(socket.gethostname(), os.getpid(), process_start(os.getpid()), owner, time.time())


def read_holder(folder: Path) -> tuple[Holder, float] | None:
    """The holder of folder's lock and when the lock was last touched; None if nobody holds it."""
    path = Path(folder) / LOCK
    try:
        touched = path.stat().st_mtime
        return Holder(**json.loads(path.read_text())), touched
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError):  # not ours, or damaged: name the file rather than guess
        raise UserError(f"{path} is not a lock this project wrote; remove it if no process trains that run") from None


def gone_because(holder: Holder, touched: float) -> str | None:
    """Why holder no longer holds its folder (its process ended, its node was lost), or None if it may be at work."""
    if holder.host == socket.gethostname():
        return None if alive(holder.pid, holder.start) else "its process is gone"
    idle = time.time() - touched
    return f"its lock was last touched {idle / 60:.0f} min ago (a lost node?)" if idle > STALE else None


def busy(folder: Path) -> Holder | None:
    """The holder of folder if a process may still be training it (a stale lock counts as free)."""
    found = read_holder(folder)
    if found is None or gone_because(*found) is not None:
        return None
    return found[0]


def refusal(folder: Path, holder: Holder) -> str:
    return (f"{folder} is being trained by {holder} (lock {Path(folder) / LOCK}): wait for that run or stop it; "
            "the same command then carries on from its saved epochs")


class RunLock:
    """The lock of one run folder, held by this process inside `with`, its heartbeat a daemon thread.

    owner: the comparison sending the run (see the module docstring). If another process takes the folder over
    while this one holds it, `lost` names the new holder and the main thread is interrupted (KeyboardInterrupt);
    attention.evaluation.scored_run.execute turns that into one line.
    """

    def __init__(self, folder: Path, owner: str, heartbeat: float = HEARTBEAT) -> None:
        self.folder, self.path, self.heartbeat = Path(folder), Path(folder) / LOCK, heartbeat
        self.me = Holder.me(owner)
        self.lost: str | None = None
        self._done = threading.Event()
        self._mutex = threading.Lock()  # no interrupt once the `with` is left
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        self._thread = threading.Thread(target=self._beat, name=f"lock {self.folder}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._mutex:
            self._done.set()
        self.release()

    def acquire(self) -> None:
        """Hold the folder, taking a lock over as the module docstring says; else a UserError naming the holder."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(5):  # each pass either holds the lock, refuses, or lost a race to another taker
            if self._create():
                return
            found = read_holder(self.folder)
            if found is None:
                continue  # released meanwhile
            holder, touched = found
            why = "sent again by the same comparison" if holder.owner == self.me.owner else gone_because(holder,
                                                                                                         touched)
            if why is None:
                raise UserError(refusal(self.folder, holder))
            aside = self.path.with_name(f".{LOCK}.{os.getpid()}.stale")
            try:
                os.rename(self.path, aside)  # only one taker can move this lock aside
            except FileNotFoundError:
                continue
            aside.unlink(missing_ok=True)
            if holder.owner != self.me.owner:
                print(f"WARNING: {self.folder}: taking over the lock of {holder} ({why})", file=sys.stderr)
        raise UserError(f"{self.path}: could not take the lock (other processes keep taking it)")

    def _create(self) -> bool:
        tmp = self.path.with_name(f".{LOCK}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(self.me)))
        try:
            os.link(tmp, self.path)  # fails if the lock exists; the lock appears whole
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def holds(self) -> bool:
        """Whether the lock still names this process (and touch it: the heartbeat)."""
        try:
            os.utime(self.path)
        except FileNotFoundError:
            return False
        found = read_holder(self.folder)
        return found is not None and found[0] == self.me

    def check(self) -> bool:
        """One heartbeat: True while held; else records who took the folder in `lost` and returns False."""
        try:
            if self.holds():
                return True
            found = read_holder(self.folder)
        except UserError as e:  # the lock file was replaced by something else
            self.lost = f"{e}; this attempt stopped"
            return False
        self.lost = (f"{self.folder} was taken over by {found[0]} while this run trained it; this attempt stopped"
                     if found else f"{self.path} disappeared while this run trained; this attempt stopped")
        return False

    def release(self) -> None:
        """Remove the lock if it still names this process."""
        try:
            found = read_holder(self.folder)
        except UserError:
            return  # replaced by something that is not our lock: not ours to remove
        if found is not None and found[0] == self.me:
            self.path.unlink(missing_ok=True)

    def _beat(self) -> None:
        while not self._done.wait(self.heartbeat):
            if not self.check():
                with self._mutex:
                    if not self._done.is_set():
                        interrupt_main()  # the run stops in its main thread; execute() says why
                return


def interrupt_main() -> None:
    """Raise KeyboardInterrupt in the main thread, from another thread.

    _thread.interrupt_main goes through the SIGINT handler, and a --jobs child ignores SIGINT (Ctrl-C is the
    driver's to handle), so there, and under any handler of someone else's, the exception is set on the main thread
    directly; it is raised at the thread's next Python instruction.
    """
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        _thread.interrupt_main()
    else:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(threading.main_thread().ident),
                                                   ctypes.py_object(KeyboardInterrupt))
