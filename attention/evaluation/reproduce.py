"""What a seed determines in a comparison folder, to check that two executors (or two machines) agree.

Scores, per-epoch losses and metrics, and the summary's scores and verdicts are the run's; wall times (results.csv's
time column, the summary's ms/image) are the machine's and are left out.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

WALL_TIMES = ("time", "ms/image")


def determined(root: str | Path) -> dict[str, object]:
    """{path relative to root: content} for every score file, results.csv and summary.csv under a comparison root."""
    root = Path(root)
    out: dict[str, object] = {}
    for path in sorted(root.rglob("score-*.json")):
        out[str(path.relative_to(root))] = json.loads(path.read_text())
    for path in sorted(root.rglob("results.csv")) + sorted(root.glob("summary.csv")):
        with path.open() as fh:
            out[str(path.relative_to(root))] = [{k.strip(): v for k, v in row.items() if k.strip() not in WALL_TIMES}
                                                for row in csv.DictReader(fh)]
    return out


def differences(a: str | Path, b: str | Path) -> list[str]:
    """The files whose seed-determined content differs between two comparison roots (empty: identical)."""
    left, right = determined(a), determined(b)
    return sorted(k for k in left.keys() | right.keys() if left.get(k) != right.get(k))
