"""yolov5-attention compare: every variant trained alike over several seeds, paired differences with intervals."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

HELP = "compare levers (variants x ways of inferring) over seeds: paired intervals against the baseline, 95%% jointly"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment", nargs="?", help="experiment YAML (e.g. compare-n.yaml); flags override it")
    p.add_argument("--cfg", nargs="+", help="model YAMLs or variant specs (yolov5s+CBAM@neck, yolov5n+nwd: "
                   "docs/placements.md), the baseline first")
    p.add_argument("--seeds", type=int, help="number of seeds (0, 1, ...), default 3")
    p.add_argument("--epochs", type=int)
    p.add_argument("--data")
    p.add_argument("--hyp")
    p.add_argument("--weights", help="base checkpoint every variant starts from (transferred by layer role)")
    p.add_argument("--finetune", action="store_true", default=None,
                   help="train one base (the first --cfg, seed 0) or take --weights, and fine-tune every variant from it")
    p.add_argument("--base-epochs", type=int, help="epochs of the base with --finetune (default 30)")
    p.add_argument("--base-hyp", help="hyperparameter YAML of the base (default: --hyp)")
    p.add_argument("--base-data", help="dataset YAML the base trains on (default: --data)")
    p.add_argument("--base-imgsz", type=int, help="image size the base trains at (default: --imgsz)")
    p.add_argument("--infer", nargs="+", help="ways of inferring to score each run with: full:SIZE (whole image at "
                   "SIZE px) and/or sliced:TILE; default full:IMGSZ")
    p.add_argument("--imgsz", "--img", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device", help="cuda device(s) like 0 or 0,1,2,3, or cpu; with --jobs the runs share them out")
    p.add_argument("--workers", type=int)
    p.add_argument("--attn-init", choices=["paper", "identity"])
    p.add_argument("--size-bins", help="coco, tiny, or edges in px like 0,16,32,inf")
    p.add_argument("--max-det", type=int, help="detection budget per image: the prediction cap and COCO maxDets "
                   "(default: ultralytics' 300; VisDrone's protocol: 500)")
    p.add_argument("--metric", help="the metric the verdicts are on (default: AP_small, or AP_tiny with tiny bins)")
    p.add_argument("--margin", type=float, help="differences within +-margin of the metric count as equivalent")
    p.add_argument("--max-seeds", type=int, help="after --seeds, add seeds to levers still undecided, up to this many")
    p.add_argument("--max-hours", type=float, help="with --max-seeds: add no more seeds once the runs took this long")
    p.add_argument("--jobs", "-j", type=int, help="runs at once on this machine, each in its own process: one per "
                   "GPU of --device in turn (several per GPU if more), or each with its share of the CPU cores")
    p.add_argument("--ray", metavar="ADDRESS", help="run every run as a task on a running Ray cluster: auto, or its "
                   "address; --project must be on a filesystem every node mounts")
    p.add_argument("--ray-gpus", type=float, help="GPUs each Ray task asks for (default 1 if the cluster has GPUs)")
    p.add_argument("--ray-cpus", type=float, help="CPUs each Ray task asks for (default 1; its threads on the CPU)")
    p.add_argument("--project")
    p.add_argument("--name", help="comparison folder under --project (default: the experiment YAML's name, or exp)")


def run(args: argparse.Namespace) -> object:
    from attention import cfg as shipped
    from attention.evaluation.compare import compare
    from attention.evaluation.experiment import Experiment

    given = {k: v for k, v in vars(args).items() if v is not None}
    settings: dict[str, Any] = {}
    if "experiment" in given:
        path = shipped.resolve("configs", given.pop("experiment"), "experiment YAML")
        settings = Experiment.coerce(shipped.load_mapping(path, "experiment YAML"), where=f"experiment YAML {path}")
        settings.setdefault("name", Path(path).stem)
    settings.update(given)
    return compare(Experiment.from_mapping(settings))
