"""Fair variant comparison: every variant trained with the same data, hyperparameters and seeds, then scored.

python -m attention.compare --cfg yolov5n.yaml yolov5n-se.yaml yolov5n-cbam.yaml --seeds 3 --epochs 30
python -m attention.compare configs/compare-n.yaml            # the same, from an experiment YAML

Runs live in runs/compare/NAME/<variant>/seed<k>. Running the same command again reuses every
finished run and resumes an interrupted one, so nothing is trained twice. The first --cfg is the
baseline: each other variant gets its per-seed paired difference to it, a 95% interval, and a
verdict (better / no detectable difference / worse).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any, Sequence

from ultralytics import YOLO
from ultralytics.nn import tasks

from attention.cli import run as run_cli
from attention.coco import size_bins as parse_bins
from attention.config import load_mapping
from attention.dataset import EMBEDDED_DATA, prepare_data
from attention.paths import resolve_cfg
from attention.report import format_table, model_size, write_table
from attention.training import train
from attention.validation import load_split, score

# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (beyond: the normal 1.96).
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def paired_interval(diffs: Sequence[float]) -> tuple[float, float, float]:
    """Mean of per-seed differences and its 95% t-interval; (mean, nan, nan) from a single seed."""
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return mean, math.nan, math.nan
    half = (T975[len(diffs) - 2] if len(diffs) <= 31 else 1.96) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return mean, mean - half, mean + half


def verdict(low: float, high: float) -> str:
    if math.isnan(low):
        return "no detectable difference (one seed: no interval)"
    return "better" if low > 0 else "worse" if high < 0 else "no detectable difference"


def _finished(run: Path) -> bool:
    """ultralytics marks a completed run by stripping its last.pt (epoch -1)."""
    last = run / "weights" / "last.pt"
    # ultralytics' loader, so ULTRALYTICS_SAFE_LOAD=1 covers this read too
    return last.is_file() and tasks.torch_safe_load(last)[0].get("epoch", -1) == -1


def _settings(opt: dict[str, Any]) -> dict[str, Any]:
    """What must be equal for two comparisons to share runs."""
    keys = ("data", "hyp", "weights", "epochs", "imgsz", "batch_size", "attn_init", "size_bins")
    return {k: opt[k] for k in keys}


def compare(
    cfg: Sequence[str],
    seeds: int | Sequence[int] = 3,
    epochs: int = 30,
    data: str | Path = EMBEDDED_DATA,
    hyp: str = "",
    weights: str = "",
    imgsz: int = 640,
    batch_size: int = 16,
    device: str = "",
    workers: int = 8,
    attn_init: str = "paper",
    size_bins: str = "coco",
    metric: str = "mAP50-95",
    project: str | Path = "runs/compare",
    name: str = "exp",
) -> list[dict[str, Any]]:
    """Train (or reuse) every variant x seed, score each run, and tabulate mean ± std and verdicts."""
    if len(cfg) < 2:
        raise ValueError("compare needs at least two --cfg: the baseline first, then the variants")
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    cfgs = [resolve_cfg(c) for c in cfg]
    bins = parse_bins(size_bins)
    root = Path(project).resolve() / name
    opt = dict(data=str(data), hyp=str(hyp), weights=str(weights), epochs=epochs, imgsz=imgsz,
               batch_size=batch_size, attn_init=attn_init, size_bins=str(size_bins))
    saved = root / "settings.json"
    if saved.is_file() and json.loads(saved.read_text()) != _settings(opt):
        old = json.loads(saved.read_text())
        diff = ", ".join(f"{k} {old.get(k)!r} -> {v!r}" for k, v in _settings(opt).items() if old.get(k) != v)
        raise ValueError(f"{root} holds a comparison with other settings ({diff}); pass another --name")
    root.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(_settings(opt), indent=1))

    data_yaml = prepare_data(data)
    split_cfg, images = load_split(data_yaml, "val")
    names = [split_cfg["names"][i] for i in sorted(split_cfg["names"])]
    runs = [(c, s) for c in cfgs for s in seeds]
    scores: dict[tuple[str, int], dict[str, float]] = {}
    for k, (c, s) in enumerate(runs, 1):
        variant, run = Path(c).stem, root / Path(c).stem / f"seed{s}"
        tag = f"[run {k}/{len(runs)}] {variant} seed {s}"
        result = run / "score.json"
        if result.is_file():
            print(f"{tag}: finished earlier, reused")
        else:
            if (run / "weights" / "last.pt").is_file() and not _finished(run):
                print(f"{tag}: resuming an interrupted run")
                YOLO(str(run / "weights" / "last.pt")).train(resume=True)
            elif not _finished(run):
                print(f"{tag}: training {epochs} epochs")
                train(cfg=[c], weights=weights or None, data=data, hyp=hyp or None, epochs=epochs,
                      batch_size=batch_size, imgsz=imgsz, device=device, workers=workers, project=run.parent,
                      name=run.name, exist_ok=True, seed=s, attn_init=attn_init)
            print(f"{tag}: scoring")
            model = YOLO(str(run / "weights" / "best.pt"))
            metrics, coco = score(model, data_yaml, images, names, bins, "val", run / "score", imgsz=imgsz,
                                  batch=batch_size, device=device or None, plots=False, verbose=False)
            row = {**model_size(model.model, imgsz), "mAP50": metrics.box.map50, "mAP50-95": metrics.box.map,
                   **{key: v for key, v in coco.items() if key.startswith("AP")}}
            result.write_text(json.dumps(row, indent=1))  # written last: its presence marks the run done
        scores[(c, s)] = json.loads(result.read_text())
        print(f"{tag}: {metric} {scores[(c, s)][metric]:.3f}   ({k}/{len(runs)} runs done)")
    rows = summarize(cfgs, seeds, scores, metric)
    write_table(rows, root / "summary")
    print(f"\n{len(seeds)} seed(s) per variant, {epochs} epochs, same data and settings ({root}):\n"
          f"{format_table(rows)}")
    return rows


def summarize(cfgs: list[str], seeds: list[int], scores: dict, metric: str) -> list[dict[str, Any]]:
    """Mean ± std per variant, and each variant's paired difference to the first (the baseline)."""
    base = cfgs[0]
    columns = [m for m in scores[(base, seeds[0])] if m not in ("params(M)",) and not m.startswith("GFLOPs")]
    if metric not in columns:
        raise ValueError(f"--metric {metric!r} is not among the scores: {', '.join(columns)}")
    shown = [m for m in columns if m in ("mAP50", "mAP50-95") or m.startswith("AP_")]
    rows = []
    for c in cfgs:
        per_seed = [scores[(c, s)] for s in seeds]
        first = per_seed[0]
        row: dict[str, Any] = {"variant": Path(c).stem, "params(M)": first["params(M)"],
                               **{k: v for k, v in first.items() if k.startswith("GFLOPs")}}
        for m in shown:
            values = [r[m] for r in per_seed]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            row[m] = f"{statistics.fmean(values):.3f} ± {sd:.3f}"
        if c == base:
            row[f"Δ{metric} [95% CI]"], row["verdict"] = "baseline", ""
        else:
            mean, low, high = paired_interval([scores[(c, s)][metric] - scores[(base, s)][metric] for s in seeds])
            ci = "" if math.isnan(low) else f" [{low:+.3f}, {high:+.3f}]"
            row[f"Δ{metric} [95% CI]"], row["verdict"] = f"{mean:+.3f}{ci}", verdict(low, high)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m attention.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", nargs="?", help="experiment YAML (configs/compare-*.yaml); flags override it")
    p.add_argument("--cfg", nargs="+", help="model YAMLs, the baseline first")
    p.add_argument("--seeds", type=int, help="number of seeds (0, 1, ...), default 3")
    p.add_argument("--epochs", type=int)
    p.add_argument("--data")
    p.add_argument("--hyp")
    p.add_argument("--weights", help="base checkpoint every variant starts from (transferred by layer role)")
    p.add_argument("--imgsz", "--img", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device")
    p.add_argument("--workers", type=int)
    p.add_argument("--attn-init", choices=["paper", "identity"])
    p.add_argument("--size-bins", help="coco, tiny, or edges in px like 0,16,32,inf")
    p.add_argument("--metric", help="the metric the verdict is on (default mAP50-95; e.g. AP_small)")
    p.add_argument("--project")
    p.add_argument("--name", help="comparison folder under --project (default: the experiment YAML's name, or exp)")
    args = {k: v for k, v in vars(p.parse_args(argv)).items() if v is not None}
    settings: dict[str, Any] = {}
    if "experiment" in args:
        path = Path(args.pop("experiment"))
        settings = load_mapping(path, "experiment YAML")
        settings.setdefault("name", path.stem)
        unknown = set(settings) - set(compare.__code__.co_varnames[: compare.__code__.co_argcount])
        if unknown:
            raise ValueError(f"experiment YAML {path}: unknown setting(s) {', '.join(sorted(unknown))}")
    settings.update(args)
    if "cfg" not in settings:
        raise ValueError("name the variants with --cfg (the baseline first) or an experiment YAML")
    compare(**settings)


if __name__ == "__main__":
    sys.argv[0] = "attention.compare"
    run_cli(main)
