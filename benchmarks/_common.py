"""What the benchmark scripts share: the machine line, thread setup and side-by-side timing.

Every ratio a script prints comes from functions timed in one run, interleaved: each repeat calls
every function once (in a rotating order), so a neighbour's load spike hits all of them alike, and
the median over repeats is reported (ratios: the median of per-repeat ratios). On a CPU with one
thread the clock is the thread's CPU time, which leaves out time the OS hands to other processes;
malloc keeps freed memory, so page faults of fresh allocations do not land on whichever call
happens to follow a large free. Flags: --threads (a count or "default", torch's own choice for
this machine), --clock, --stat, --system-malloc.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python benchmarks/x.py` from anywhere
    sys.path.insert(0, str(REPO))
os.environ.setdefault("YOLO_OFFLINE", "1")

import torch  # noqa: E402

DEFAULT_THREADS = torch.get_num_threads()  # torch's choice for this machine, before any script changes it


def threads_arg(value: str) -> int:
    """A --threads value: a positive count, or 'default' for DEFAULT_THREADS."""
    if value == "default":
        return DEFAULT_THREADS
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive count or 'default', got {value!r}")
    return int(value)


def add_common_args(p: argparse.ArgumentParser, threads: Sequence[str] = ("1",)) -> argparse.ArgumentParser:
    """The shared flags; ``threads`` is the --threads default, and with more than one value the flag takes a list."""
    several = len(threads) > 1
    p.add_argument("--threads", type=threads_arg, nargs="+" if several else None,
                   default=[threads_arg(t) for t in threads] if several else threads_arg(threads[0]),
                   help=f"torch.set_num_threads: a count or 'default' ({DEFAULT_THREADS} here); "
                        f"default {' and '.join(threads)}" + (" (each in turn)" if several else "")
                        + "; 1 gives steadier timings")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clock", choices=["auto", "wall", "cpu"], default="auto",
                   help="cpu: this thread's CPU time, which leaves out time the OS gives other processes; "
                        "auto: cpu on a CPU with 1 thread (where it equals an idle machine's wall time), else wall")
    p.add_argument("--stat", choices=["median", "min"], default="median",
                   help="statistic over repeats; min resists other processes on a loaded machine")
    p.add_argument("--system-malloc", action="store_true",
                   help="leave glibc malloc as it is (by default freed memory is kept for reuse, see keep_freed_memory)")
    return p


def keep_freed_memory() -> bool:
    """Make glibc malloc keep freed memory instead of returning it to the OS; True if it took effect.

    By default glibc serves blocks over a (moving) threshold with mmap, and trims the heap after
    large frees, so the next tensor of that size faults its pages in afresh. Which call pays those
    faults depends on what ran before it, not on the op being timed: one elementwise pass over a
    52 MB tensor measured 5x slower. With mmap off and trimming off, every allocation after warm-up
    reuses resident memory, as with the caching allocators (jemalloc, tcmalloc) used for serving.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))  # an int: 1 GiB


def setup(args: argparse.Namespace) -> torch.device:
    """Malloc, seed and device; threads and clock for the first --threads value (set_threads for the others)."""
    args.malloc = "glibc default" if args.system_malloc or not keep_freed_memory() else "freed memory kept"
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    set_threads(args, device, args.threads[0] if isinstance(args.threads, list) else args.threads)
    return device


def set_threads(args: argparse.Namespace, device: torch.device, n: int) -> None:
    """torch.set_num_threads(n) and the clock to go with it (--clock auto: thread CPU time only on 1 CPU thread)."""
    global CLOCK
    torch.set_num_threads(n)
    cpu_clock = args.clock == "cpu" or (args.clock == "auto" and device.type == "cpu" and n == 1)
    CLOCK = time.thread_time if cpu_clock else time.perf_counter
    args.clock_used = "thread CPU time" if cpu_clock else "wall"


CLOCK = time.perf_counter  # set_threads() may switch it to time.thread_time


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device, malloc: str = "", clock: str = "") -> str:
    """One line: CPU (or GPU), core and thread counts, torch version, malloc and clock settings."""
    where = f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} thread(s)"
    try:
        where += f", load average {os.getloadavg()[0]:.1f}"
    except OSError:
        pass
    if malloc:
        where += f", malloc: {malloc}"
    if clock:
        where += f", clock: {clock}"
    if device.type == "cuda":
        where = f"{torch.cuda.get_device_name(device)}; host {where}"
    return where


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_samples(
    fns: Sequence[Callable[[], object]],
    device: torch.device,
    repeats: int = 15,
    target_s: float = 0.004,
    warmup: int = 2,
) -> list[list[float]]:
    """Seconds per call of each fn, one sample per repeat, measured interleaved.

    Each fn is called ``inner`` times per sample, with ``inner`` chosen so a sample of the slowest
    function takes about ``target_s``; every repeat samples every fn once, in a rotated order, so
    sample r of every fn comes from the same short stretch of time.
    """
    for fn in fns:
        for _ in range(warmup):
            fn()
    sync(device)
    clock = CLOCK
    per_call = []  # calibrate on the slowest
    for fn in fns:
        t0 = clock()
        fn()
        sync(device)
        per_call.append(clock() - t0)
    inner = max(1, int(target_s / max(per_call)))
    samples: list[list[float]] = [[] for _ in fns]
    k = len(fns)
    for r in range(repeats):
        for j in range(k):
            i = (j + r) % k
            fn = fns[i]
            sync(device)
            t0 = clock()
            for _ in range(inner):
                fn()
            sync(device)
            samples[i].append((clock() - t0) / inner)
    return samples


def time_side_by_side(fns, device, repeats=15, target_s=0.004, warmup=2) -> list[float]:
    """Median seconds per call of each fn, measured interleaved (see time_samples)."""
    return [statistics.median(s) for s in time_samples(fns, device, repeats, target_s, warmup)]


def summarize(samples: Sequence[Sequence[float]], stat: str = "median") -> tuple[list[float], list[float]]:
    """(time per fn, ratio of each fn to fn 0): medians and paired ratios, or minima and their ratios."""
    if stat == "min":
        t = [min(s) for s in samples]
        return t, [x / t[0] for x in t]
    return [statistics.median(s) for s in samples], [paired_ratio(s, samples[0]) for s in samples]


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """Median over repeats of a[r] / b[r]: a load spike on the machine slows both samples of a repeat
    alike, so it cancels out of the ratio (a ratio of medians would keep it)."""
    return statistics.median(x / y for x, y in zip(a, b))


def fmt_ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (also readable as plain text)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 1) + ":" if i else "-" * (w + 2) for i, w in enumerate(widths)) + "|"
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])
