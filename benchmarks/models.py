"""Whole-model cost of each attention variant relative to the base YOLOv5, measured side by side, against the targets.

Inference: median latency of one forward at --imgsz (eval, Conv+BN fused as ultralytics' predictor
does, no_grad), and its ratio to the base model. Training: images per second of full training
steps (forward, ultralytics' detection loss on a fixed synthetic batch of boxes, backward, SGD
step; fp16 is autocast with a GradScaler, as ultralytics trains), and the ratio to the base. All
variants share the backbone and neck weights of the base model, so only the blocks differ.

Targets, for every yolov5s variant at 640, batch 1, on a CPU in fp32: latency within 3 % of the base
(ratio <= 1.03) and training images per second within 5 % (ratio >= 0.95). A verdict line per variant
and target says met or missed; under other settings the verdicts are marked indicative.

    python benchmarks/models.py                          # the targets' settings; training batch 2
    python benchmarks/models.py --scale n --imgsz 320 --repeats 3 --train-repeats 3   # a smoke run
    python benchmarks/models.py --no-train               # inference only
    python benchmarks/models.py --device cuda --dtype fp16                            # on a GPU
"""

from __future__ import annotations

import argparse

from _common import add_common_args, fmt_ms, machine, setup, summarize, table, time_samples

import torch
from torch.utils.flop_counter import FlopCounterMode
from ultralytics import YOLO
from ultralytics.cfg import get_cfg

import attention  # noqa: F401

# The variants with a speed target: a block on each neck output, CBAM inside the neck's C3s, weighted fusion in the
# neck. (The rest of the zoo adds compute by design; benchmarks/zoo.py measures it.)
VARIANTS = ("se", "eca", "ca", "cbam", "c3cbam", "fusion")
LATENCY_TARGET = 1.03  # variant latency / base latency, at most
TRAIN_TARGET = 0.95  # variant training images/s / base images/s, at least
TARGET_SETTINGS = dict(scale="s", imgsz=640, batch=1, device="cpu", dtype="fp32")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", default="s", choices=list("nsmlx"))
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--batch", type=int, default=1, help="inference batch")
    p.add_argument("--train-batch", type=int, default=2)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), help="models/yolov5-<variant>.yaml names")
    p.add_argument("--repeats", type=int, default=7, help="interleaved samples per model (median)")
    p.add_argument("--train-repeats", type=int, default=5)
    p.add_argument("--no-train", action="store_true")
    p.add_argument("--dtype", choices=["fp32", "fp16"], default="fp32",
                   help="fp16: inference in half precision, training under autocast (needs a GPU)")
    args = add_common_args(p).parse_args()
    if args.dtype == "fp16" and not args.device.startswith("cuda"):
        p.error("--dtype fp16 needs --device cuda (fp16 convolutions on a CPU measure nothing a user runs)")
    return args


def build(name: str, device: torch.device, base_state: dict | None) -> torch.nn.Module:
    model = YOLO(f"{name}.yaml").model.to(device)
    if base_state is not None:  # same backbone and neck weights as the base (Detect too where shapes fit)
        own = model.state_dict()
        model.load_state_dict({k: v for k, v in base_state.items() if k in own and own[k].shape == v.shape}, strict=False)
    return model


def synthetic_batch(n: int, imgsz: int, device: torch.device, objects: int = 8) -> dict:
    g = torch.Generator().manual_seed(0)
    m = n * objects
    xy = torch.rand(m, 2, generator=g) * 0.8 + 0.1
    wh = torch.rand(m, 2, generator=g) * 0.08 + 0.01  # small objects
    return {
        "img": torch.rand(n, 3, imgsz, imgsz, generator=g).to(device),
        "cls": torch.randint(0, 80, (m, 1), generator=g).float().to(device),
        "bboxes": torch.cat([xy, wh], 1).to(device),
        "batch_idx": torch.arange(n).repeat_interleave(objects).float().to(device),
    }


def main() -> None:
    args = parse()
    device = setup(args)
    print(f"machine: {machine(device, args.malloc, args.clock_used)}")
    print(f"models: yolov5{args.scale} variants at {args.imgsz}, inference batch {args.batch}, "
          f"training batch {args.train_batch}\n")
    names = [f"yolov5{args.scale}"] + [f"yolov5{args.scale}-{v.lower()}" for v in args.variants]
    base = build(names[0], device, None)
    models = [base] + [build(n, device, base.state_dict()) for n in names[1:]]

    x = torch.rand(args.batch, 3, args.imgsz, args.imgsz, device=device)
    params = [sum(p.numel() for p in m.parameters()) for m in models]
    gflops = []
    for m in models:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            m.eval()(x[:1])
        gflops.append(counter.get_total_flops() / 1e9)

    half = args.dtype == "fp16"
    fused = [m.eval().fuse(verbose=False) for m in [build(n, device, base.state_dict()) for n in names]]
    if half:
        fused = [m.half() for m in fused]
        x = x.half()

    def infer(m):
        def f():
            with torch.no_grad():
                return m(x)
        return f

    lat_s = time_samples([infer(m) for m in fused], device, args.repeats, target_s=0.0, warmup=1)
    lat, lat_r = summarize(lat_s, args.stat)

    ips = None
    if not args.no_train:
        batch = synthetic_batch(args.train_batch, args.imgsz, device)
        steps = []
        for m in models:
            m.train()
            m.args = get_cfg()
            opt = torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9)
            scaler = torch.amp.GradScaler(device.type, enabled=half)

            def step(m=m, opt=opt, scaler=scaler):
                opt.zero_grad(set_to_none=True)
                with torch.autocast(device.type, dtype=torch.float16, enabled=half):
                    loss, _ = m.loss(batch)
                scaler.scale(loss.sum()).backward()
                scaler.step(opt)
                scaler.update()
            steps.append(step)
        step_s = time_samples(steps, device, args.train_repeats, target_s=0.0, warmup=1)
        step_t, step_r = summarize(step_s, args.stat)
        ips = [args.train_batch / t for t in step_t]
        ips_r = [1 / r for r in step_r]  # throughput ratio = inverse time ratio

    rows = []
    for i, name in enumerate(names):
        row = [name, f"{params[i] / 1e6:.3f}", f"{gflops[i]:.3f}", fmt_ms(lat[i]), f"{lat_r[i]:.3f}"]
        if ips is not None:
            row += [f"{ips[i]:.2f}", f"{ips_r[i]:.3f}"]
        rows.append(row)
    headers = ["model", "params (M)", "GFLOPs", "latency ms", "vs base"]
    if ips is not None:
        headers += ["train img/s", "vs base"]
    print(table(headers, rows))
    print("\nGFLOPs: convolutions and matrix products at batch 1 (as ultralytics reports them); latency: "
          "eval, fused, no_grad; train: forward + loss + backward + SGD step.\n")
    print_verdicts(args, names, lat_r, ips_r if ips is not None else None)


def print_verdicts(args: argparse.Namespace, names: list[str], lat_r: list[float], ips_r: list[float] | None) -> None:
    """One line per variant and target: met or missed (indicative when the settings are not the targets')."""
    settings = dict(scale=args.scale, imgsz=args.imgsz, batch=args.batch, device=args.device, dtype=args.dtype)
    differ = [f"{k} {settings[k]} (target: {v})" for k, v in TARGET_SETTINGS.items() if settings[k] != v]
    note = f"  [indicative: {', '.join(differ)}]" if differ else ""
    print(f"targets: latency <= {LATENCY_TARGET} x base, training images/s >= {TRAIN_TARGET} x base "
          f"(yolov5s at 640, batch 1, CPU, fp32)")
    for i, name in enumerate(names[1:], 1):
        ok = lat_r[i] <= LATENCY_TARGET
        print(f"  {name:14s} {'latency':11s} {lat_r[i]:.3f} {'<=' if ok else '>'} {LATENCY_TARGET}: {'met' if ok else 'missed'}{note}")
        if ips_r is not None:
            ok = ips_r[i] >= TRAIN_TARGET
            print(f"  {name:14s} {'train img/s':11s} {ips_r[i]:.3f} {'>=' if ok else '<'} {TRAIN_TARGET}: {'met' if ok else 'missed'}{note}")


if __name__ == "__main__":
    main()
