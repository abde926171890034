"""Plugin overhead: the base YOLOv5 built through our parser hook vs the same YAML in plain ultralytics.

Builds ultralytics' own yolov5{scale}.yaml before `import attention` (plain parser), then our
models/yolov5{scale}.yaml through the hook, copies the plain model's weights into ours, and checks
that the two have the same layers, parameter count and outputs. Then times them side by side
(eval, fused, no_grad). An A/A row, the plain model against a copy of itself, shows the noise.

    python benchmarks/overhead.py                    # yolov5s at 640
    python benchmarks/overhead.py --scale n --imgsz 320
"""

from __future__ import annotations

import argparse
import copy

from _common import REPO, add_common_args, fmt_ms, machine, setup, summarize, table, time_samples

import torch
from ultralytics import YOLO
from ultralytics.nn import tasks


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", default="s", choices=list("nsmlx"))
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=11)
    return add_common_args(p).parse_args()


def main() -> None:
    args = parse()
    device = setup(args)
    assert not getattr(tasks.parse_model, "_attention_hook", False), "attention was imported too early"
    plain = YOLO(f"yolov5{args.scale}.yaml").model  # ultralytics' packaged YAML, its own parser

    import attention  # noqa: F401  (installs the hook from here on)

    ours = YOLO(str(REPO / "models" / f"yolov5{args.scale}.yaml")).model
    assert [type(m) for m in ours.model] == [type(m) for m in plain.model], "different layers"
    ours.load_state_dict(plain.state_dict())  # strict: same names and shapes
    n_plain = sum(p.numel() for p in plain.parameters())
    n_ours = sum(p.numel() for p in ours.parameters())

    plain, ours = plain.to(device).eval().fuse(verbose=False), ours.to(device).eval().fuse(verbose=False)
    twin = copy.deepcopy(plain)
    x = torch.rand(args.batch, 3, args.imgsz, args.imgsz, device=device)
    with torch.no_grad():
        same = torch.equal(plain(x)[0], ours(x)[0])

    def run(m):
        def f():
            with torch.no_grad():
                return m(x)
        return f

    samples = time_samples([run(plain), run(ours), run(twin)], device, args.repeats, 0.0, 1)
    (t_plain, t_ours, t_twin), (_, r_ours, r_twin) = summarize(samples, args.stat)
    print(f"machine: {machine(device, args.malloc, args.clock_used)}")
    print(f"yolov5{args.scale} at {args.imgsz}, batch {args.batch}; identical outputs: {same}\n")
    print(table(
        ["build", "params", "latency ms", "vs plain"],
        [
            ["plain ultralytics", f"{n_plain:,}", fmt_ms(t_plain), "1.000"],
            ["through our hook", f"{n_ours:,}", fmt_ms(t_ours), f"{r_ours:.3f}"],
            ["plain again (A/A noise)", f"{n_plain:,}", fmt_ms(t_twin), f"{r_twin:.3f}"],
        ],
    ))
    if n_plain != n_ours or not same:
        raise SystemExit("the hook changed the base model")


if __name__ == "__main__":
    main()
