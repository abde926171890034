"""Progress of a comparison's grid: runs done / running / waiting, an estimate of the time left, a line per run.

The same lines whichever executor runs the grid; the estimate is the median time of the runs trained so far in
this call, times the runs left, over how many run at once.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any, Callable

from attention.evaluation.scored_run import RunResult, RunSpec


def duration(seconds: float) -> str:
    """'45 s', '12 min', '3.4 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class GridProgress:
    """Counts and prints; started() and finished() are called by the executor, in the driver process."""

    def __init__(self, total: int, width: int, metric: str, say: Callable[[str], Any] = print) -> None:
        self.total, self.width, self.metric, self.say = total, max(1, width), metric, say
        self.done = self.failures = 0
        self.failed_runs: list[tuple[RunSpec, str]] = []  # (run, the first line of why), in the order they failed
        self.running: set[Any] = set()
        self.times: list[float] = []
        self.began = time.perf_counter()

    @property
    def waiting(self) -> int:
        return self.total - self.done - self.failures - len(self.running)

    def counts(self) -> str:
        failed = f", {self.failures} failed" if self.failures else ""
        return (f"{self.done}/{self.total} runs done, {len(self.running)} running, {self.waiting} waiting{failed}"
                f"{self.eta()}")

    def eta(self) -> str:
        left = self.total - self.done - self.failures
        if not left:
            return f"; all finished in {duration(time.perf_counter() - self.began)}"
        if not self.times:
            return ""
        # the running runs are about half way through on average
        rounds = math.ceil(max(self.waiting + 0.5 * len(self.running), 0.5) / self.width)
        return f"; about {duration(rounds * statistics.median(self.times))} left"

    def started(self, spec: RunSpec, where: Any, announce: bool = True) -> None:
        self.running.add(spec.folder)
        if announce:
            self.say(f"{spec.tag}started on {where}   ({self.counts()})")

    def finished(self, result: RunResult) -> None:
        self.running.discard(result.folder)
        self.done += 1
        if result.trained:
            self.times.append(result.seconds)
        scores = ", ".join(f"{_score(s.get(self.metric, math.nan))} ({mode.replace(':', ' ')})"
                           for mode, s in result.scores.items())
        how = f"in {duration(result.seconds)}" if result.trained else "reused" if not result.seconds else \
            f"scored in {duration(result.seconds)}"
        self.say(f"{result.variant} seed {result.seed}: {self.metric} {scores} {how}   ({self.counts()})")

    def retrying(self, spec: RunSpec, why: str) -> None:
        self.running.discard(spec.folder)
        self.say(f"{spec.variant} seed {spec.seed}: {why}; it goes back to the queue and resumes from its last saved "
                 f"epoch   ({self.counts()})")

    def failed(self, spec: RunSpec, error: BaseException) -> None:
        self.running.discard(spec.folder)
        self.failures += 1
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        self.failed_runs.append((spec, message))
        self.say(f"{spec.variant} seed {spec.seed}: FAILED ({message}); see {spec.log}   ({self.counts()})")


def _score(value: float) -> str:
    return "n/a" if value < 0 else f"{value:.3f}"  # pycocotools' -1: no ground truth of that size
