"""Per-block latency against the memory-bandwidth floor, the shipped block beside its oracle.

For each YOLOv5s neck shape at 640, batch size and thread setting, times side by side in one run:
  floor   one elementwise multiply over the same tensor (x * 0.5), the least any block can cost;
  oracle  the block's literal definition (tests/oracles.py: adaptive pooling, explicit broadcasts),
          on the block's weights;
  block   the block's own forward (attention.blocks);
forward in eval mode under no_grad, and forward+backward in train mode (gradients of input and
parameters). Prints Markdown tables: median ms, ratios to the floor, and oracle/block. Ratios are
medians of per-repeat ratios (samples of one repeat are taken within a few milliseconds). For
information: the targets are on whole models (benchmarks/models.py).

    python benchmarks/blocks.py                   # 1 thread and the default threads; batch 1 and 16
    python benchmarks/blocks.py --batch 1 --no-backward --blocks CA CBAM --threads 1
    python benchmarks/blocks.py --batch 1 --no-backward --compile   # also the block under torch.compile
    python benchmarks/blocks.py --device cuda --dtype fp16          # on a GPU
"""

from __future__ import annotations

import argparse
import copy
import sys

from _common import REPO, add_common_args, fmt_ms, machine, set_threads, setup, summarize, table, time_samples

import torch

import attention  # noqa: F401
from attention.blocks.registry import get
from flops import count_flops

sys.path.insert(0, str(REPO / "tests"))  # the oracles live with the tests that hold the blocks to them
from oracles import Oracle  # noqa: E402

# YOLOv5s neck outputs (P3/8, P4/16, P5/32) at imgsz 640: (C, H, W)
SHAPES = {"P3": (128, 80, 80), "P4": (256, 40, 40), "P5": (512, 20, 20)}
BLOCKS = ("SE", "ECA", "CA", "CBAM")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--blocks", nargs="+", default=list(BLOCKS), choices=BLOCKS)
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--batch", nargs="+", type=int, default=[1, 16])
    p.add_argument("--repeats", type=int, default=15, help="interleaved samples per function (median)")
    p.add_argument("--sample-ms", type=float, default=4.0, help="about how long one sample runs")
    p.add_argument("--no-backward", action="store_true", help="forward only")
    p.add_argument("--no-oracle", action="store_true", help="skip the oracles")
    p.add_argument("--dtype", choices=["fp32", "fp16"], default="fp32",
                   help="fp16: blocks, oracles and inputs in half precision (for a GPU)")
    p.add_argument("--compile", action="store_true",
                   help="add the block under torch.compile (Inductor; forward only; compiles per shape)")
    return add_common_args(p, threads=("1", "default")).parse_args()


def forward_fn(m, x):
    def f():
        with torch.no_grad():
            return m(x)
    return f


def backward_fn(m, x, g):
    params = [p for p in m.parameters() if p.requires_grad] if isinstance(m, torch.nn.Module) else []

    def f():
        xr = x.detach().requires_grad_()
        return torch.autograd.grad(m(xr), [xr, *params], g)
    return f


def run_table(args, device, dtype, mode: str, n: int) -> str:
    rows = []
    for sname in args.shapes:
        c, h, w = SHAPES[sname]
        x = torch.randn(n, c, h, w, device=device, dtype=dtype)
        g = torch.randn_like(x)
        for name in args.blocks:
            block = get(name)(c).to(device, dtype).train(mode != "forward")
            mods = [block] + ([] if args.no_oracle else [Oracle(copy.deepcopy(block))])
            if mode == "forward":
                fns = [forward_fn(lambda t: t * 0.5, x)] + [forward_fn(m, x) for m in mods]
                if args.compile:
                    fns.append(forward_fn(torch.compile(block, dynamic=False), x))
            else:
                fns = [backward_fn(lambda t: t * 0.5, x, g)] + [backward_fn(m, x, g) for m in mods]
            samples = time_samples(fns, device, args.repeats, args.sample_ms / 1e3)
            t, r = summarize(samples, args.stat)  # times, and ratios to the floor
            params = sum(p.numel() for p in block.parameters())
            mm, ew = count_flops(copy.deepcopy(block).float().cpu().eval(), x[:1].float().cpu())
            row = [f"{sname} {c}x{h}x{w}", name, f"{params:,}", f"{(mm + ew) * n / 1e6:.2f}", fmt_ms(t[0]),
                   fmt_ms(t[1]), f"{r[1]:.2f}"]
            if not args.no_oracle:
                row += [fmt_ms(t[2]), f"{r[2]:.2f}", f"{summarize([samples[1], samples[2]], args.stat)[1][1]:.2f}"]
            if args.compile:
                row += [fmt_ms(t[-1]), f"{r[-1]:.2f}"] if mode == "forward" else ["", ""]
            rows.append(row)
    headers = ["shape", "block", "params", "MFLOPs", "floor ms", "block ms", "block/floor"]
    if not args.no_oracle:
        headers += ["oracle ms", "oracle/floor", "oracle/block"]
    if args.compile:
        headers += ["compiled ms", "compiled/floor"]
    return table(headers, rows)


def main() -> None:
    args = parse()
    device = setup(args)
    dtype = torch.float16 if args.dtype == "fp16" else torch.float32
    modes = ["forward"] + ([] if args.no_backward else ["forward+backward"])
    for threads in args.threads:
        set_threads(args, device, threads)
        print(f"machine: {machine(device, args.malloc, args.clock_used)}; {args.dtype}\n")
        for mode in modes:
            for n in args.batch:
                print(f"### {mode}, batch {n}, {threads} thread(s) ({args.stat} of {args.repeats})\n")
                print(run_table(args, device, dtype, mode, n) + "\n", flush=True)


if __name__ == "__main__":
    main()
