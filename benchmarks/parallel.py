"""The same small comparison one run at a time and --jobs N at a time: wall time, ratio, identical numbers.

    python benchmarks/parallel.py                       # 2 variants x 2 seeds, 2 epochs at 320 px, --jobs 2
    python benchmarks/parallel.py --jobs 4 --seeds 4 --device 0,1   # on a GPU machine

Both comparisons run from empty folders on the embedded dataset (drawn once, before either is timed), one after
the other, as `yolov5-attention compare` subprocesses. Prints each wall time, their ratio, and whether the score
files, per-epoch losses and summaries are identical (attention.evaluation.reproduce).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import machine  # puts the checkout on sys.path

from attention.data.prepare import prepare_data
from attention.evaluation.reproduce import differences


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cfg", nargs="+", default=["yolov5n.yaml", "yolov5n-se.yaml"])
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--img", type=int, default=320)  # at 160 px fixed costs (start, data, scoring) hide the gain
    p.add_argument("--data", default="tiny-objects.yaml")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--device", default="")
    args = p.parse_args()
    prepare_data(args.data)  # drawing the embedded set is not part of either timing
    common = ["--cfg", *args.cfg, "--seeds", str(args.seeds), "--epochs", str(args.epochs), "--img", str(args.img),
              "--data", args.data, "--batch-size", "16", "--workers", "0"] + (["--device", args.device] if args.device
                                                                              else [])
    print("machine: " + machine(torch.device("cuda" if args.device not in ("", "cpu") else "cpu")))
    with tempfile.TemporaryDirectory(prefix="parallel-") as tmp:
        times = {}
        for name, extra in (("sequential", []), (f"jobs{args.jobs}", ["--jobs", str(args.jobs)])):
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "attention", "compare", *common, *extra, "--project", tmp,
                                   "--name", name], capture_output=True, text=True, stdin=subprocess.DEVNULL)
            times[name] = time.perf_counter() - start
            if proc.returncode:
                sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
        seq, par = times.values()
        runs = len(args.cfg) * args.seeds
        print(f"\n{runs} runs ({len(args.cfg)} variants x {args.seeds} seeds, {args.epochs} epochs at {args.img} px):")
        print("| executor | wall s | vs sequential |\n|---|--:|--:|")
        for name, t in times.items():
            print(f"| {name} | {t:.0f} | {seq / t:.2f}x |")
        diff = differences(Path(tmp) / "sequential", Path(tmp) / f"jobs{args.jobs}")
        print(f"\nspeed-up {seq / par:.2f}x; score files, per-epoch losses and summary identical: "
              f"{'yes' if not diff else 'NO, ' + ', '.join(diff)}")


if __name__ == "__main__":
    main()
