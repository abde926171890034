"""Fair variant comparison: every variant trained with the same data, hyperparameters and seeds, then scored.

yolov5-attention compare --cfg yolov5n.yaml yolov5n-se.yaml yolov5n-cbam.yaml --seeds 3 --epochs 30
yolov5-attention compare compare-n.yaml            # the same, from an experiment YAML (shipped in configs/)

Runs live in runs/compare/NAME/<variant>/seed<k>. Running the same command again reuses every
finished run and resumes an interrupted one, so nothing is trained twice. The first --cfg is the
baseline: each other variant gets its per-seed paired difference to it, a 95% interval, and a
verdict (better / no detectable difference / worse).
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any, Sequence

from attention import cfg as shipped
from attention.adapter.api import YOLO
from attention.data.coco_format import yolo_to_coco
from attention.data.listing import class_names, load_split
from attention.data.prepare import EMBEDDED_DATA, prepare_data
from attention.evaluation.coco import size_bins as parse_bins
from attention.evaluation.runs import train_in, variant_of
from attention.evaluation.stats import paired_interval, verdict
from attention.evaluation.tables import format_table, model_size, write_table
from attention.evaluation.validate import score


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
    cfgs = [shipped.model_yaml(c) for c in cfg]
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
    gt = yolo_to_coco(images, class_names(split_cfg))
    runs = [(c, s) for c in cfgs for s in seeds]
    scores: dict[tuple[str, int], dict[str, float]] = {}
    for k, (c, s) in enumerate(runs, 1):
        tag = f"[run {k}/{len(runs)}] {variant_of(c)} seed {s}: "
        folder = root / variant_of(c) / f"seed{s}"
        result = folder / "score.json"
        if result.is_file():
            print(f"{tag}finished earlier, reused")
        else:
            run = train_in(folder, c, s, tag=tag, weights=weights or None, data=data, hyp=hyp or None, epochs=epochs,
                           batch_size=batch_size, imgsz=imgsz, device=device, workers=workers, attn_init=attn_init)
            print(f"{tag}scoring")
            model = YOLO(str(run.best))
            metrics, coco = score(model, data_yaml, gt, bins, "val", folder / "score", imgsz=imgsz,
                                  batch=batch_size, device=device or None, plots=False, verbose=False)
            row = {**model_size(model.model, imgsz), "mAP50": metrics.box.map50, "mAP50-95": metrics.box.map,
                   **{key: v for key, v in coco.items() if key.startswith("AP")}}
            result.write_text(json.dumps(row, indent=1))  # written last: its presence marks the run done
        scores[(c, s)] = json.loads(result.read_text())
        print(f"{tag}{metric} {scores[(c, s)][metric]:.3f}   ({k}/{len(runs)} runs done)")
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
        row: dict[str, Any] = {"variant": variant_of(c), "params(M)": first["params(M)"],
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
