"""The benchmark scripts keep running as the blocks change (smallest settings: a smoke test, not a measurement)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.parametrize(
    "script, args, expect",
    [
        ("blocks.py", ["--batch", "1", "--shapes", "P5", "--blocks", "SE", "CBAM", "--repeats", "1"],
         ["### forward, batch 1, 1 thread(s)", "### forward+backward, batch 1", "oracle ms"]),
        ("overhead.py", ["--scale", "n", "--imgsz", "64", "--repeats", "1"], ["A/A noise"]),
        ("models.py", ["--scale", "n", "--imgsz", "64", "--variants", "CA", "c3cbam", "--repeats", "1", "--train-repeats", "1",
                       "--train-batch", "1"], ["yolov5n-ca", "yolov5n-c3cbam", "latency", "train img/s", "[indicative: scale n"]),
    ],
)
def test_benchmark_scripts_run(script: str, args: list[str], expect: list[str]) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "YOLO_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    # blocks.py reports at 1 thread and at the default threads in one run: a machine line for each.
    assert proc.stdout.count("machine: ") == (2 if script == "blocks.py" else 1)
    for text in expect:
        assert text in proc.stdout, text

