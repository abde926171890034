"""Params, GFLOPs and CPU latency each attention variant adds to yolov5s at 640, batch 1.

Latency: whole-model forward, torch.set_num_threads(1); each repeat times every variant right next to
the base (alternating which goes first) and the median of those ratios is reported.
Usage: python benchmarks/zoo.py [--scale s] [--imgsz 640] [--repeats 9]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("YOLO_OFFLINE", "1")

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from ultralytics import YOLO  # noqa: E402

import attention  # noqa: E402,F401
from attention.evaluation.tables import model_size  # noqa: E402

VARIANTS = ["", "se", "eca", "ca", "cbam", "shuffleattention", "crisscrossattention", "s2attention", "simam",
            "skattention", "namattention", "soca", "gam", "mhsa"]


def cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--scale", default="s")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--variants", nargs="*", default=VARIANTS)
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.rand(1, 3, a.imgsz, a.imgsz)
    models, rows = {}, {}
    for v in a.variants:
        name = f"yolov5{a.scale}" + (f"-{v}" if v else "")
        m = YOLO(str(REPO / "models" / f"{name}.yaml"), verbose=False).model.eval()
        size = model_size(m, a.imgsz)  # thop, as model.info() reports it
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            m(x)
        rows[name] = {"params": size["params(M)"] * 1e6, "thop": size[f"GFLOPs@{a.imgsz}"],
                      "flops": fc.get_total_flops() / 1e9}
        models[name] = m
    names = list(models)
    base = names[0]
    # Paired and interleaved: every repeat times the base right next to each variant (alternating which goes
    # first), so a neighbour's load spike hits both sides of a ratio alike; the median ratio is reported.
    ratios = {n: [] for n in names}
    times = {n: [] for n in names}
    with torch.inference_mode():
        for n in names:  # warm-up
            models[n](x)
        for r in range(a.repeats):
            for n in names[1:]:
                pair = [base, n] if r % 2 == 0 else [n, base]
                t = {}
                for m in pair:
                    t0 = time.perf_counter()
                    models[m](x)
                    t[m] = time.perf_counter() - t0
                ratios[n].append(t[n] / t[base])
                times[n].append(t[n])
                times[base].append(t[base])
    ratios[base] = [1.0]
    med = {n: statistics.median(s) for n, s in times.items()}
    print(f"{cpu()}, {os.cpu_count()} cores, torch {torch.__version__}, 1 thread; yolov5{a.scale} at {a.imgsz}, "
          f"batch 1; latency x: median over {a.repeats} repeats of variant / base timed back to back")
    print(f"{'model':28s} {'params':>10s} {'+params':>9s} {'GFLOPs':>7s} {'+GFLOPs':>8s} {'+thop':>7s} "
          f"{'ms':>7s} {'latency x':>9s}")
    for n in names:
        d = rows[n]
        print(f"{n:28s} {d['params']:10.0f} {d['params'] - rows[base]['params']:+9.0f} {d['flops']:7.2f} "
              f"{d['flops'] - rows[base]['flops']:+8.2f} {d['thop'] - rows[base]['thop']:+7.2f} "
              f"{med[n] * 1e3:7.1f} {statistics.median(ratios[n]):9.3f}")


if __name__ == "__main__":
    main()
