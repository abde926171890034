"""Which lever helps small objects: every variant trained alike over several seeds, each run scored every way asked.

yolov5-attention compare --cfg yolov5n.yaml yolov5n-cbam.yaml --seeds 3 --epochs 30
yolov5-attention compare --cfg yolov5n.yaml yolov5n-p2.yaml --infer full:1920 sliced:640 --finetune --base-epochs 30
yolov5-attention compare compare-large.yaml          # the same, from an experiment YAML (shipped in configs/)
yolov5-attention compare compare-large.yaml --jobs 4 --device 0,1   # four runs at once, two per GPU
yolov5-attention compare compare-large.yaml --ray auto              # every run a task on a Ray cluster

A lever is a model YAML (a block, P2, both) together with a way of inferring (the whole image at a size, or
sliced with a tile size). Runs live in runs/compare/NAME/<variant>/seed<k>; each is scored for every --infer
mode on the same val split, so all levers are paired by seed. The first --cfg with the first --infer is the
baseline. Running the same command again reuses every finished run and score and resumes an interrupted run
exactly; adding an --infer mode or changing the size bins or the detection budget only scores again.

The unit of work is one run (attention.evaluation.scored_run); attention.evaluation.executors runs the grid of
them in this process, in a pool of processes or on Ray, with the same numbers either way.

--finetune: one base is trained once (the first --cfg, seed 0, --base-epochs on --base-data at --base-imgsz, by
default the comparison's own data and size) or given with --weights, and every variant, the baseline included, is
fine-tuned from it with the same settings, inserted blocks starting as the identity (--attn-init identity).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from attention.adapter.api import YOLO
from attention.adapter.weights import resolve_weights
from attention.data.coco_format import yolo_to_coco
from attention.data.listing import class_names, load_split
from attention.data.prepare import prepare_data
from attention.errors import UserError
from attention.evaluation.coco import budget_note, check_max_det, crowded_warning
from attention.evaluation.coco import size_bins as parse_bins
from attention.evaluation.executors import Local, OnRay, Sequential
from attention.evaluation.experiment import RUN_SETTINGS, Experiment
from attention.evaluation.latency import ms_per_image
from attention.evaluation.progress import GridProgress
from attention.evaluation.runs import variant_of
from attention.evaluation.plots import comparison_plot
from attention.evaluation.scored_run import Mode, RunResult, RunSpec, collect, is_complete, mode_key, status
from attention.evaluation.sequential import Plan
from attention.evaluation.stats import DEFAULT_MARGIN
from attention.evaluation.summary import closing_line, how_to_read, plan_seeds, summarize
from attention.evaluation.tables import format_table, write_table
from attention.training import variants

__all__ = ["RUN_SETTINGS", "Experiment", "compare", "parse_infer"]


def parse_infer(specs: Sequence[str] | None, imgsz: int) -> list[Mode]:
    """['full:1920', 'sliced:640'] -> [('full', 1920), ('sliced', 640)]; default: the whole image at imgsz."""
    out = []
    for spec in specs or [f"full:{imgsz}"]:
        mode, _, size = str(spec).partition(":")
        if mode not in ("full", "sliced") or not size.isdigit() or int(size) < 32:
            raise UserError(f"--infer takes full:SIZE (whole image at SIZE px) or sliced:TILE, got {spec!r}")
        out.append((mode, int(size)))
    if len(set(out)) < len(out):
        raise UserError(f"--infer names a mode twice: {' '.join(map(str, specs))}")
    return out


def default_metric(bins: dict) -> str:
    """The smallest objects' AP: AP_tiny with the tiny bins, AP_small with COCO's, else the first bin's."""
    return "AP_tiny" if "tiny" in bins else "AP_small" if "small" in bins else f"AP_{next(iter(bins))}"


def lever(variant: str, mode: Mode, modes: list[Mode]) -> str:
    """'yolov5n-cbam' or, with several ways of inferring, 'yolov5n-cbam, sliced 640'."""
    return variant if len(modes) == 1 else f"{variant}, {mode[0]} {mode[1]}"


def executor_for(exp: Experiment):
    """Sequential by default; a local pool with --jobs N > 1; Ray tasks with --ray ADDRESS."""
    if exp.ray:
        return OnRay(exp.ray, exp.root, gpus=exp.ray_gpus, cpus=exp.ray_cpus)
    if exp.jobs > 1:
        return Local(exp.jobs, exp.device)
    return Sequential(exp.device)


class Grid:
    """The comparison's runs: which exist, which to execute, and their results as they come back."""

    def __init__(self, exp: Experiment, cfgs: list[str], modes: list[Mode], metric: str, max_det: int,
                 start_from: str | None) -> None:
        self.exp, self.cfgs, self.modes, self.metric, self.max_det = exp, cfgs, modes, metric, max_det
        self.train = dict(data=exp.data, epochs=exp.epochs, batch_size=exp.batch_size, imgsz=exp.imgsz,
                          workers=exp.workers, hyp=exp.hyp or None, weights=start_from, attn_init=exp.start_as)
        self.results: dict[tuple[str, int], RunResult] = {}

    def spec(self, cfg: str, seed: int, tag: str = "") -> RunSpec:
        return RunSpec(self.exp.root / variant_of(cfg) / f"seed{seed}", cfg, seed, self.train, tuple(self.modes),
                       self.exp.size_bins, self.max_det, tag)

    def run(self, executor, wanted: dict[str, list[int]]) -> None:
        """Make sure every variant has a result for each seed in wanted[variant]; reuse what is done."""
        todo = [(c, s) for c in self.cfgs for s in wanted.get(variant_of(c), []) if (variant_of(c), s) not in self.results]
        specs = [self.spec(c, s, f"[run {k}/{len(todo)}] {variant_of(c)} seed {s}: ") for k, (c, s) in enumerate(todo, 1)]
        complete = [sp for sp in specs if is_complete(sp)]
        progress = GridProgress(len(specs), executor.width, self.metric)
        for sp in complete:  # read from their folders: nothing to start for them
            print(f"{sp.tag}finished and scored earlier, reused")
            progress.finished(self._keep(collect(sp)))
        for result in executor.run([sp for sp in specs if sp not in complete], progress):
            self._keep(result)

    def _keep(self, result: RunResult) -> RunResult:
        self.results[(result.variant, result.seed)] = result
        return result

    def scores(self) -> dict[tuple[str, Mode, int], dict[str, float]]:
        return {(v, m, s): r.scores[mode_key(m)] for (v, s), r in self.results.items() for m in self.modes}

    def seeds_of(self, variant: str) -> list[int]:
        return sorted(s for v, s in self.results if v == variant)


def _check_settings(root: Path, settings: dict[str, Any]) -> None:
    saved = root / "settings.json"
    if saved.is_file():
        old = json.loads(saved.read_text())
        diff = ", ".join(f"{k} {old.get(k)!r} -> {v!r}" for k, v in settings.items() if old.get(k) != v)
        if diff:
            raise UserError(f"{root} holds a comparison with other settings ({diff}); pass another --name")
    root.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(settings, indent=1))


def compare(experiment: Experiment | None = None, **settings: Any) -> list[dict[str, Any]]:
    """Train (or reuse) every variant x seed, score each run for every --infer mode, tabulate levers with intervals.

    Takes an Experiment or its fields as keyword arguments (cfg=[...], seeds=3, ...).
    """
    exp = experiment if experiment is not None else Experiment.from_mapping(settings)
    cfgs = [variants.model_yaml(c) for c in exp.cfg]  # a spec (yolov5s+CBAM@neck) checked here
    if len({variant_of(c) for c in cfgs}) < len(cfgs):
        raise UserError(f"--cfg names a model twice: {' '.join(map(str, exp.cfg))}")
    modes = parse_infer(exp.infer, exp.imgsz)
    bins = parse_bins(exp.size_bins)
    metric = exp.metric or default_metric(bins)
    max_det = check_max_det(exp.max_det)
    root = exp.root
    _check_settings(root, exp.run_settings())

    data_yaml = prepare_data(exp.data)  # an embedded set is drawn here, once, before any worker wants it
    split_cfg, images = load_split(data_yaml, "val")
    crowded = crowded_warning(yolo_to_coco(images, class_names(split_cfg)), max_det)
    if crowded:
        print(crowded)
    executor = executor_for(exp)
    print(f"Runs of {root}: {executor.name}")
    start_from = resolve_weights(exp.weights) if exp.weights else None
    if exp.base is not None:
        start_from = str(_train_base(exp, cfgs[0], executor, metric, max_det))
    if exp.start_as != "paper" and not start_from:
        raise UserError(f"--attn-init {exp.start_as} makes a variant start as its base: it needs --weights or "
                        "--finetune")

    levers = [(variant_of(c), m) for c in cfgs for m in modes]
    margin = DEFAULT_MARGIN if exp.margin is None else exp.margin
    plan = Plan(len(exp.seed_list), exp.max_seeds, margin=margin) if exp.max_seeds else None
    grid = Grid(exp, cfgs, modes, metric, max_det, start_from)
    seeds = _run_seeds(grid, executor, levers, plan)

    latency = executor.call(_latencies, root, [variant_of(c) for c in cfgs], modes, images)
    sizes = {v: grid.results[(v, seeds[0])].size for v in (variant_of(c) for c in cfgs)}
    rows, stats = summarize(levers, seeds, grid.scores(), metric, sizes, latency,
                            names={lv: lever(lv[0], lv[1], modes) for lv in levers}, margin=margin, plan=plan)
    write_table(rows, root / "summary")
    comparison_plot(stats, metric, root / "compare.png", margin=margin)
    verdict = closing_line(stats, metric, len(seeds), latency[levers[0]], margin=margin)
    reading = how_to_read(metric, margin, plan, levers=len(levers) - 1)
    notes = (f"{reading}\nDetection budget: {budget_note(max_det)}, the prediction cap "
             f"and COCO's maxDets alike.{' ' + crowded if crowded else ''}\nFigure: {root / 'compare.png'}")
    (root / "summary.md").write_text((root / "summary.md").read_text() + f"\n{notes}\n\n{verdict}\n")
    how = f"fine-tuned from {'the given base' if exp.weights else 'one base'}" if exp.finetune or exp.weights \
        else "from scratch"
    counts = sorted({len(grid.seeds_of(v)) for v, _ in levers})
    per = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]} to {counts[-1]}"
    print(f"\n{per} seed(s) per variant, {exp.epochs} epochs {how}, same data and settings ({root}):\n"
          f"{format_table(rows)}\n{notes}\n{verdict}")
    return rows


def _run_seeds(grid: Grid, executor, levers: list[tuple[str, Mode]], plan: Plan | None) -> list[int]:
    """The first seeds for every variant; with a plan, more seeds only where a lever is still undecided.

    Returns every seed any variant has. Each round asks the plan (attention.evaluation.sequential) how many
    seeds each variant needs; --max-hours stops adding once the runs so far took that long in all.
    """
    exp = grid.exp
    first = exp.seed_list
    grid.run(executor, {v: first for v in {v for v, _ in levers}})
    every = first + [max(first) + k for k in range(1, (plan.cap if plan else 0) - len(first) + 1)]
    while plan is not None:
        wants = plan_seeds(levers, every, grid.scores(), grid.metric, plan)
        more = {v: every[:n] for v, n in wants.items() if n > len(grid.seeds_of(v))}
        if not more:
            break
        spent = sum(status(r.folder).get("seconds", 0.0) for r in grid.results.values()) / 3600
        if exp.max_hours and spent >= exp.max_hours:
            print(f"--max-hours {exp.max_hours:g}: the runs took {spent:.1f} h in all; no more seeds are added")
            break
        print(f"\nUndecided levers want more seeds: " + ", ".join(
            f"{v} {len(grid.seeds_of(v))} -> {len(s)}" for v, s in sorted(more.items())))
        grid.run(executor, more)
    return sorted({s for _, s in grid.results})


def _train_base(exp: Experiment, cfg: str, executor, metric: str, max_det: int) -> Path:
    """The one base every variant is fine-tuned from (--finetune without --weights), through the same executor."""
    base = exp.base
    spec = RunSpec(exp.root / "base", cfg, 0, dict(data=base["data"], epochs=base["epochs"], imgsz=base["imgsz"],
                                                    batch_size=exp.batch_size, workers=exp.workers,
                                                    hyp=base["hyp"] or None),
                   (), exp.size_bins, max_det, "[base] ")
    if not is_complete(spec):
        list(executor.run([spec], GridProgress(1, 1, metric)))
    return spec.folder / "weights" / "best.pt"


def _latencies(root: Path, variants: list[str], modes: list[Mode], images: list[Path],
               device: str | None = None) -> dict[tuple[str, Mode], float]:
    """Median ms per val image of every variant and mode (conf 0.25, as deployed), each measured once and kept."""
    out = {}
    for variant in variants:
        file = root / variant / "latency.json"
        known = json.loads(file.read_text()) if file.is_file() else {}
        for mode in modes:
            key = mode_key(mode)
            if key not in known:
                weights = sorted((root / variant).glob("seed*/weights/best.pt"))[0]
                known[key] = ms_per_image(YOLO(str(weights)), images, mode, device)
                print(f"{variant}, {mode[0]} {mode[1]}: {known[key]:.1f} ms per image")
                file.write_text(json.dumps(known, indent=1))
            out[(variant, mode)] = known[key]
    return out
