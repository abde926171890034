"""yolov5-attention compare: every variant trained alike over several seeds, paired differences with intervals."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

HELP = "compare levers (variants x ways of inferring) over seeds: paired 95%% intervals against the baseline"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment", nargs="?", help="experiment YAML (e.g. compare-n.yaml); flags override it")
    p.add_argument("--cfg", nargs="+", help="model YAMLs, the baseline first")
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
    p.add_argument("--device")
    p.add_argument("--workers", type=int)
    p.add_argument("--attn-init", choices=["paper", "identity"])
    p.add_argument("--size-bins", help="coco, tiny, or edges in px like 0,16,32,inf")
    p.add_argument("--metric", help="the metric the verdicts are on (default: AP_small, or AP_tiny with tiny bins)")
    p.add_argument("--project")
    p.add_argument("--name", help="comparison folder under --project (default: the experiment YAML's name, or exp)")


def run(args: argparse.Namespace) -> object:
    from attention import cfg as shipped
    from attention.evaluation.compare import compare

    given = {k: v for k, v in vars(args).items() if v is not None}
    settings: dict[str, Any] = {}
    if "experiment" in given:
        path = shipped.resolve("configs", given.pop("experiment"), "experiment YAML")
        settings = shipped.load_mapping(path, "experiment YAML")
        settings.setdefault("name", Path(path).stem)
        known = compare.__code__.co_varnames[: compare.__code__.co_argcount]
        unknown = set(settings) - set(known)
        if unknown:
            raise ValueError(f"experiment YAML {path}: unknown setting(s) {', '.join(sorted(unknown))}")
    settings.update(given)
    if "cfg" not in settings:
        raise ValueError("name the variants with --cfg (the baseline first) or an experiment YAML")
    return compare(**settings)
