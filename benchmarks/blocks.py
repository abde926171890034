"""Per-block latency against the memory-bandwidth floor, fast form vs straightforward definition.

For each YOLOv5s neck shape at 640 and each batch size, times side by side in one run:
  floor  one elementwise multiply over the same tensor (x * 0.5), the least any block can cost;
  ref    the block's straightforward definition (attention.reference), on the block's weights;
  fast   the block's own forward (attention.blocks);
forward in eval mode under no_grad, and forward+backward in train mode (gradients of input and
parameters). Prints Markdown tables: median ms, ratio to the floor, and ref/fast speed-up. Ratios are
medians of per-repeat ratios (samples of one repeat are taken within a few milliseconds).

    python benchmarks/blocks.py                   # batch 1 and 16, forward and forward+backward
    python benchmarks/blocks.py --batch 1 --no-backward --blocks CA CBAM
    python benchmarks/blocks.py --threads 2       # default 1 thread: steadier on a shared machine
    python benchmarks/blocks.py --batch 1 --no-backward --compile   # also the fast form under torch.compile
"""

from __future__ import annotations

import argparse
import copy

from _common import add_common_args, fmt_ms, machine, setup, summarize, table, time_samples

import torch

import attention  # noqa: F401
from attention import fused, reference
from attention.blocks.registry import get
from flops import count_flops

# YOLOv5s neck outputs (P3/8, P4/16, P5/32) at imgsz 640: (C, H, W)
SHAPES = {"P3": (128, 80, 80), "P4": (256, 40, 40), "P5": (512, 20, 20)}
BLOCKS = ("SE", "ECA", "CA", "CBAM")
TARGET = {"SE": 2.5, "ECA": 2.5, "CA": 5.0, "CBAM": 5.0}  # forward, batch 1, CPU: max ratio to the floor


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--blocks", nargs="+", default=list(BLOCKS), choices=BLOCKS)
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--batch", nargs="+", type=int, default=[1, 16])
    p.add_argument("--repeats", type=int, default=15, help="interleaved samples per function (median)")
    p.add_argument("--sample-ms", type=float, default=4.0, help="about how long one sample runs")
    p.add_argument("--no-backward", action="store_true", help="forward only")
    p.add_argument("--no-ref", action="store_true", help="skip the straightforward definitions")
    p.add_argument("--dtype", choices=["fp32", "fp16"], default="fp32",
                   help="fp16: blocks, references and inputs in half precision (for a GPU)")
    p.add_argument("--compile", action="store_true",
                   help="add the fast form under torch.compile (Inductor; forward only; compiles per shape)")
    return add_common_args(p).parse_args()


def forward_fns(block, ref, x):
    def floor():
        with torch.no_grad():
            return x * 0.5

    def run(m):
        def f():
            with torch.no_grad():
                return m(x)
        return f

    return floor, run(block), run(ref) if ref is not None else None


def backward_fns(block, ref, x, g):
    def floor():
        xr = x.detach().requires_grad_()
        return torch.autograd.grad(xr * 0.5, [xr], g)

    def run(m):
        params = [p for p in m.parameters() if p.requires_grad]

        def f():
            xr = x.detach().requires_grad_()
            return torch.autograd.grad(m(xr), [xr, *params], g)
        return f

    return floor, run(block), run(ref) if ref is not None else None


def main() -> None:
    args = parse()
    device = setup(args)
    dtype = torch.float16 if args.dtype == "fp16" else torch.float32
    kernels = "fused CPU kernels " + ("on" if fused.library() is not None else "off (PyTorch forms)")
    print(f"machine: {machine(device, args.malloc)}; {args.dtype}; {kernels if device.type == 'cpu' else ''}\n")
    modes = ["forward"] + ([] if args.no_backward else ["forward+backward"])
    verdicts = []
    for mode in modes:
        for n in args.batch:
            rows = []
            for sname in args.shapes:
                c, h, w = SHAPES[sname]
                x = torch.randn(n, c, h, w, device=device, dtype=dtype)
                g = torch.randn_like(x)
                for name in args.blocks:
                    block = get(name)(c).to(device, dtype)
                    ref = None if args.no_ref else reference.Reference(copy.deepcopy(block))
                    if mode == "forward":
                        block.eval(), ref is None or ref.eval()
                        fns = forward_fns(block, ref, x)
                    else:
                        block.train(), ref is None or ref.train()
                        fns = backward_fns(block, ref, x, g)
                    fns = [f for f in fns if f is not None]
                    if args.compile and mode == "forward":
                        fns.append(forward_fns(torch.compile(block, dynamic=False), None, x)[1])
                    samples = time_samples(fns, device, args.repeats, args.sample_ms / 1e3)
                    t, r = summarize(samples, args.stat)  # times, and ratios to the floor
                    floor, fast = t[0], t[1]
                    params = sum(p.numel() for p in block.parameters())
                    mm, ew = count_flops(copy.deepcopy(block).float().cpu().eval(), x[:1].float().cpu())
                    row = [f"{sname} {c}x{h}x{w}", name, f"{params:,}", f"{(mm + ew) * n / 1e6:.2f}", fmt_ms(floor)]
                    if ref is not None:
                        row += [fmt_ms(t[2]), f"{r[2]:.2f}"]
                    row += [fmt_ms(fast), f"{r[1]:.2f}"]
                    if ref is not None:
                        row.append(f"{summarize([samples[1], samples[2]], args.stat)[1][1]:.2f}")
                    if args.compile:
                        row += [fmt_ms(t[-1]), f"{r[-1]:.2f}"] if mode == "forward" else ["", ""]
                    rows.append(row)
                    if mode == "forward" and n == 1 and device.type == "cpu" and dtype == torch.float32:
                        verdicts.append((name, sname, r[1], r[1] <= TARGET[name]))
            headers = ["shape", "block", "params", "MFLOPs", "floor ms"]
            if not args.no_ref:
                headers += ["ref ms", "ref/floor"]
            headers += ["fast ms", "fast/floor"]
            if not args.no_ref:
                headers.append("speed-up")
            if args.compile:
                headers += ["compiled ms", "compiled/floor"]
            print(f"### {mode}, batch {n} ({args.stat} of {args.repeats})\n")
            print(table(headers, rows) + "\n", flush=True)
    if verdicts:
        print("targets (CPU, forward, batch 1, fast/floor): SE, ECA <= 2.5; CA, CBAM <= 5")
        for name, sname, ratio, ok in verdicts:
            print(f"  {name:5s} {sname}: {ratio:.2f}  {'ok' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
