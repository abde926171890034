"""Which lever helps small objects: every variant trained alike over several seeds, each run scored every way asked.

yolov5-attention compare --cfg yolov5n.yaml yolov5n-cbam.yaml --seeds 3 --epochs 30
yolov5-attention compare --cfg yolov5n.yaml yolov5n-p2.yaml --infer full:1920 sliced:640 --finetune --base-epochs 30
yolov5-attention compare compare-large.yaml          # the same, from an experiment YAML (shipped in configs/)

A lever is a model YAML (a block, P2, both) together with a way of inferring (the whole image at a size, or
sliced with a tile size). Runs live in runs/compare/NAME/<variant>/seed<k>; each is scored for every --infer
mode on the same val split, so all levers are paired by seed. The first --cfg with the first --infer is the
baseline. Running the same command again reuses every finished run and score and resumes an interrupted run
exactly; adding an --infer mode or changing the size bins only scores again.

--finetune: one base is trained once (the first --cfg, seed 0, --base-epochs on --base-data at --base-imgsz, by
default the comparison's own data and size) or given with --weights, and every variant, the baseline included, is
fine-tuned from it with the same settings, inserted blocks starting as the identity (--attn-init identity).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

from attention import cfg as shipped
from attention.adapter.api import YOLO
from attention.adapter.validator import validate
from attention.adapter.weights import resolve_weights
from attention.data.coco_format import yolo_to_coco
from attention.data.listing import class_names, load_split
from attention.data.prepare import EMBEDDED_DATA, prepare_data
from attention.evaluation.coco import evaluate
from attention.evaluation.coco import size_bins as parse_bins
from attention.evaluation.latency import ms_per_image
from attention.evaluation.runs import train_in, variant_of
from attention.evaluation.summary import closing_line, summarize
from attention.evaluation.tables import format_table, model_size, write_table

# What must be equal for two invocations to share runs (scoring options may change: they only rescore).
RUN_SETTINGS = ("data", "hyp", "weights", "epochs", "imgsz", "batch_size", "attn_init", "finetune", "base")


def parse_infer(specs: Sequence[str] | None, imgsz: int) -> list[tuple[str, int]]:
    """['full:1920', 'sliced:640'] -> [('full', 1920), ('sliced', 640)]; default: the whole image at imgsz."""
    out = []
    for spec in specs or [f"full:{imgsz}"]:
        mode, _, size = str(spec).partition(":")
        if mode not in ("full", "sliced") or not size.isdigit() or int(size) < 32:
            raise ValueError(f"--infer takes full:SIZE (whole image at SIZE px) or sliced:TILE, got {spec!r}")
        out.append((mode, int(size)))
    if len(set(out)) < len(out):
        raise ValueError(f"--infer names a mode twice: {' '.join(map(str, specs))}")
    return out


def default_metric(bins: dict) -> str:
    """The smallest objects' AP: AP_tiny with the tiny bins, AP_small with COCO's, else the first bin's."""
    return "AP_tiny" if "tiny" in bins else "AP_small" if "small" in bins else f"AP_{next(iter(bins))}"


def lever(variant: str, mode: tuple[str, int], modes: list[tuple[str, int]]) -> str:
    """'yolov5n-cbam' or, with several ways of inferring, 'yolov5n-cbam, sliced 640'."""
    return variant if len(modes) == 1 else f"{variant}, {mode[0]} {mode[1]}"


def predictions(model: YOLO, data_yaml: str, images: list[Path], mode: tuple[str, int], out: Path, batch: int,
                device: str | None) -> list[dict]:
    """COCO-form detections of the val split at conf 0.001: ultralytics' validator, or sliced inference."""
    kind, size = mode
    if kind == "full":
        return validate(model, data_yaml, "val", out, imgsz=size, batch=batch, conf=0.001, iou=0.6, device=device,
                        plots=False, verbose=False)[1]
    from attention.inference.slicing import SlicedPredictor, coco_detections

    predictor = SlicedPredictor(model, slice_size=size, overlap=0.2, conf=0.001, iou=0.6, device=device)
    return [d for path in images for d in coco_detections(path, predictor(path))]


def _check_settings(root: Path, settings: dict[str, Any]) -> None:
    saved = root / "settings.json"
    if saved.is_file():
        old = json.loads(saved.read_text())
        diff = ", ".join(f"{k} {old.get(k)!r} -> {v!r}" for k, v in settings.items() if old.get(k) != v)
        if diff:
            raise ValueError(f"{root} holds a comparison with other settings ({diff}); pass another --name")
    root.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(settings, indent=1))


def compare(
    cfg: Sequence[str],
    seeds: int | Sequence[int] = 3,
    epochs: int = 30,
    data: str | Path = EMBEDDED_DATA,
    hyp: str = "",
    weights: str = "",
    finetune: bool = False,
    base_epochs: int = 30,
    base_hyp: str = "",
    base_data: str = "",
    base_imgsz: int = 0,
    imgsz: int = 640,
    batch_size: int = 16,
    device: str = "",
    workers: int = 8,
    attn_init: str | None = None,
    infer: Sequence[str] | None = None,
    size_bins: str = "coco",
    metric: str | None = None,
    project: str | Path = "runs/compare",
    name: str = "exp",
) -> list[dict[str, Any]]:
    """Train (or reuse) every variant x seed, score each run for every --infer mode, tabulate levers with intervals."""
    if len(cfg) < 2 and len(infer or []) < 2:
        raise ValueError("compare needs two levers: two --cfg (the baseline first) or two --infer modes")
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seeds:
        raise ValueError("--seeds must be at least 1")
    cfgs = [shipped.model_yaml(c) for c in cfg]
    modes = parse_infer(infer, imgsz)
    bins = parse_bins(size_bins)
    metric = metric or default_metric(bins)
    attn_init = attn_init or ("identity" if finetune else "paper")
    root = Path(project).resolve() / name
    trains_base = bool(finetune and not weights)
    base = dict(epochs=base_epochs, hyp=str(base_hyp or hyp), data=str(base_data or data),
                imgsz=base_imgsz or imgsz) if trains_base else None
    _check_settings(root, dict(data=str(data), hyp=str(hyp), weights=str(weights), epochs=epochs, imgsz=imgsz,
                               batch_size=batch_size, attn_init=attn_init, finetune=bool(finetune), base=base))

    data_yaml = prepare_data(data)
    split_cfg, images = load_split(data_yaml, "val")
    gt = yolo_to_coco(images, class_names(split_cfg))
    common = dict(data=data, epochs=epochs, batch_size=batch_size, imgsz=imgsz, device=device, workers=workers)
    start_from = resolve_weights(weights) if weights else None
    if base is not None:
        trained = train_in(root / "base", cfgs[0], 0, tag="[base] ", **{**common, **base, "hyp": base["hyp"] or None})
        start_from = str(trained.best)
    if attn_init != "paper" and not start_from:
        raise ValueError(f"--attn-init {attn_init} makes a variant start as its base: it needs --weights or --finetune")

    runs = [(c, s) for c in cfgs for s in seeds]
    scores: dict[tuple[str, tuple[str, int], int], dict[str, float]] = {}
    sizes: dict[str, dict[str, float]] = {}
    for k, (c, s) in enumerate(runs, 1):
        variant = variant_of(c)
        tag = f"[run {k}/{len(runs)}] {variant} seed {s}: "
        folder = root / variant / f"seed{s}"
        todo = [m for m in modes if not _scored(folder, m, size_bins)]
        run = train_in(folder, c, s, tag=tag, weights=start_from, hyp=hyp or None, attn_init=attn_init, **common) \
            if todo or not (folder / "weights" / "best.pt").is_file() else None
        model = YOLO(str(folder / "weights" / "best.pt")) if todo or variant not in sizes else None
        if model is not None:
            sizes.setdefault(variant, model_size(model.model, imgsz))
        for m in modes:
            file = _score_file(folder, m)
            if m in todo:
                print(f"{tag}scoring {m[0]} {m[1]}")
                coco = evaluate(gt, predictions(model, data_yaml, images, m, folder / f"val-{m[0]}{m[1]}", batch_size,
                                                device or None), bins)
                file.write_text(json.dumps({"size_bins": size_bins, **coco}, indent=1))  # last: marks it done
            scores[(variant, m, s)] = json.loads(file.read_text())
        if run is None:
            print(f"{tag}finished and scored earlier, reused")
        print(f"{tag}{metric} " + ", ".join(f"{scores[(variant, m, s)].get(metric, float('nan')):.3f} ({m[0]} {m[1]})"
                                            for m in modes) + f"   ({k}/{len(runs)} runs done)")

    latency = {(variant_of(c), m): _latency(root / variant_of(c), m, images, device or None) for c in cfgs
               for m in modes}
    levers = [(variant_of(c), m) for c in cfgs for m in modes]
    rows, stats = summarize(levers, seeds, scores, metric, sizes, latency,
                            names={lv: lever(lv[0], lv[1], modes) for lv in levers})
    write_table(rows, root / "summary")
    verdict = closing_line(stats, metric, len(seeds), latency[levers[0]])
    (root / "summary.md").write_text((root / "summary.md").read_text() + f"\n{verdict}\n")
    how = f"fine-tuned from {'the given base' if weights else 'one base'}" if finetune or weights else "from scratch"
    print(f"\n{len(seeds)} seed(s) per variant, {epochs} epochs {how}, same data and settings ({root}):\n"
          f"{format_table(rows)}\n{verdict}")
    return rows


def _score_file(folder: Path, mode: tuple[str, int]) -> Path:
    return folder / f"score-{mode[0]}{mode[1]}.json"


def _scored(folder: Path, mode: tuple[str, int], size_bins: str) -> bool:
    file = _score_file(folder, mode)
    return file.is_file() and json.loads(file.read_text()).get("size_bins") == size_bins


def _latency(variant_dir: Path, mode: tuple[str, int], images: list[Path], device: str | None) -> float:
    """Median ms per val image for a variant and mode (conf 0.25, as deployed), measured once and kept."""
    file = variant_dir / "latency.json"
    known = json.loads(file.read_text()) if file.is_file() else {}
    key = f"{mode[0]}:{mode[1]}"
    if key not in known:
        weights = sorted(variant_dir.glob("seed*/weights/best.pt"))[0]
        start = time.perf_counter()
        known[key] = ms_per_image(YOLO(str(weights)), images, mode, device)
        print(f"{variant_dir.name}, {mode[0]} {mode[1]}: {known[key]:.1f} ms per image "
              f"(measured in {time.perf_counter() - start:.0f} s)")
        file.write_text(json.dumps(known, indent=1))
    return known[key]
