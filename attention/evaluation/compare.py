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
them in this process, a fresh process per run or on Ray, with the same numbers either way. Every setting is
checked before the first run trains (the data listed, every variant built once on the CPU, the metric named by
the size bins); a run that fails does not stop the others, and the summary is written from the runs that
finished before compare says which failed (RunsFailed).

--finetune: one base is trained once (the first --cfg, seed 0, --base-epochs on --base-data at --base-imgsz, by
default the comparison's own data and size) or given with --weights, and every variant, the baseline included, is
fine-tuned from it with the same settings, inserted blocks starting as the identity (--attn-init identity).
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from attention.adapter.api import YOLO
from attention.adapter.weights import resolve_weights
from attention.data.coco_format import yolo_to_coco
from attention.data.listing import class_names, load_split
from attention.data.prepare import prepare_data
from attention.errors import UserError
from attention.evaluation.coco import budget_note, check_max_det, crowded_warning, metric_names
from attention.evaluation.coco import size_bins as parse_bins
from attention.evaluation.executors import Local, OnRay, Sequential
from attention.evaluation.experiment import RUN_SETTINGS, Experiment
from attention.evaluation.latency import ms_per_image
from attention.evaluation.locks import busy, refusal
from attention.evaluation.progress import GridProgress
from attention.evaluation.runs import variant_of
from attention.evaluation.plots import comparison_plot
from attention.evaluation.scored_run import (Mode, RunResult, RunSpec, Scoring, TrainSettings, collect, is_complete,
                                             mode_key, status)
from attention.evaluation.sequential import Plan
from attention.evaluation.stats import DEFAULT_MARGIN
from attention.evaluation.summary import closing_line, how_to_read, plan_seeds, summarize
from attention.evaluation.tables import format_table, write_table
from attention.losses.choice import LossChoice
from attention.training import variants
from attention.training.build import build
from attention.training.job import load_hyp

__all__ = ["RUN_SETTINGS", "Experiment", "RunsFailed", "compare", "parse_infer"]


class RunsFailed(UserError):
    """Some runs of a comparison failed; the others finished and the summary was written from them."""

    exit_status = 1


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
    """The comparison's runs: which exist, which to execute, and their results (or failures) as they come back."""

    def __init__(self, exp: Experiment, cfgs: list[str], modes: list[Mode], metric: str, scoring: Scoring,
                 start_from: str | None, owner: str = "") -> None:
        self.exp, self.cfgs, self.modes, self.metric, self.scoring = exp, cfgs, modes, metric, scoring
        self.train = TrainSettings(data=exp.data, epochs=exp.epochs, imgsz=exp.imgsz, batch_size=exp.batch_size,
                                   workers=exp.workers, hyp=exp.hyp or None, weights=start_from,
                                   attn_init=exp.start_as)
        self.owner = owner
        self.results: dict[tuple[str, int], RunResult] = {}
        self.failed: dict[tuple[str, int], tuple[RunSpec, str]] = {}
        self.wanted: set[tuple[str, int]] = set()

    def spec(self, cfg: str, seed: int, tag: str = "") -> RunSpec:
        return RunSpec(self.exp.root / variant_of(cfg) / f"seed{seed}", cfg, seed, self.train, tuple(self.modes),
                       self.scoring, tag, self.owner)

    def run(self, executor, wanted: dict[str, list[int]]) -> None:
        """Make sure every variant has a result for each seed in wanted[variant]; reuse what is done."""
        todo = [(c, s) for c in self.cfgs for s in wanted.get(variant_of(c), []) if (variant_of(c), s) not in self.results]
        self.wanted.update((variant_of(c), s) for c, s in todo)
        specs = [self.spec(c, s, f"[run {k}/{len(todo)}] {variant_of(c)} seed {s}: ") for k, (c, s) in enumerate(todo, 1)]
        complete = [sp for sp in specs if is_complete(sp)]
        progress = GridProgress(len(specs), executor.width, self.metric)
        for sp in complete:  # read from their folders: nothing to start for them
            print(f"{sp.tag}finished and scored earlier, reused")
            progress.finished(self._keep(collect(sp)))
        for result in executor.run([sp for sp in specs if sp not in complete], progress):
            self._keep(result)
        for spec, why in progress.failed_runs:
            self.failed[(spec.variant, spec.seed)] = (spec, why)

    def _keep(self, result: RunResult) -> RunResult:
        self.results[(result.variant, result.seed)] = result
        self.failed.pop((result.variant, result.seed), None)
        return result

    def scores(self) -> dict[tuple[str, Mode, int], dict[str, float]]:
        """Every wanted run's scores per mode; a run that failed scores NaN (the summary leaves it out and says so)."""
        none = dict.fromkeys(metric_names(parse_bins(self.scoring.size_bins)), math.nan)
        out = {(v, m, s): none for v, s in self.wanted for m in self.modes}
        return out | {(v, m, s): r.scores[mode_key(m)] for (v, s), r in self.results.items() for m in self.modes}

    def seeds_of(self, variant: str) -> list[int]:
        return sorted(s for v, s in self.results if v == variant)


def _check_settings(root: Path, settings: dict[str, Any]) -> None:
    """Refuse a comparison folder made with other run settings (one line naming each); else record them."""
    saved = root / "settings.json"
    if saved.is_file():
        old = json.loads(saved.read_text())
        changed = [k for k, v in settings.items() if k in old and old[k] != v]
        if changed:
            why = "; a seed plan's looks are fixed before its first seed" if "plan" in changed else ""
            raise UserError(f"{root} holds a comparison with other settings "
                            f"({', '.join(f'{k} {old[k]!r} -> {settings[k]!r}' for k in changed)}{why}); "
                            "pass another --name")
        unrecorded = [k for k in settings if k not in old]
        if unrecorded:  # made by an earlier release: what it did not record is taken to be as asked now
            print(f"{saved} did not record {', '.join(unrecorded)}; taken as asked now and recorded from here on")
    root.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(settings, indent=1))


def _check_inputs(exp: Experiment, cfgs: list[str]) -> tuple[str, list[Path], list[str]]:
    """Every file the runs will read, read once now: datasets (both splits), hyperparameters, base weights, and
    every variant built on the CPU (but one that trained in this folder before); one line naming the first problem,
    within seconds, before any run starts. Returns the data YAML, its val images and its class names."""
    for hyp in {exp.hyp, exp.base_hyp} - {""}:
        load_hyp(hyp)
    if exp.weights:
        resolve_weights(exp.weights)
    for data in {exp.data, exp.base_data} - {""}:
        for split in ("train", "val"):
            load_split(prepare_data(data), split)  # an embedded set is drawn here, once, before any worker wants it
    data_yaml = prepare_data(exp.data)
    split_cfg, images = load_split(data_yaml, "val")
    for cfg in cfgs:
        if any((exp.root / variant_of(cfg)).glob("seed*/weights/best.pt")):
            continue  # built and trained here before
        try:
            with torch.no_grad():
                model = build(cfg)  # the YAML's own class count: the check is of the blocks and shapes, quietly
            LossChoice.from_yaml(model.yaml.get("loss"), where=f"--cfg {cfg}")  # a loss: mapping's values too
        except UserError:
            raise
        except Exception as e:  # a YAML the parser cannot build: the user's to fix, in one line
            detail = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise UserError(f"--cfg {cfg}: cannot build this model ({type(e).__name__}: {detail})") from e
    return data_yaml, images, class_names(split_cfg)


def _check_not_busy(root: Path) -> None:
    """Refuse a comparison folder another compare is training in (a lock held by a live process)."""
    for lock in sorted(root.glob("*/lock.json")) + sorted(root.glob("*/*/lock.json")):
        holder = busy(lock.parent)
        if holder is not None:
            raise UserError(refusal(lock.parent, holder))


def compare(experiment: Experiment | None = None, **settings: Any) -> list[dict[str, Any]]:
    """Train (or reuse) every variant x seed, score each run for every --infer mode, tabulate levers with intervals.

    Takes an Experiment or its fields as keyword arguments (cfg=[...], seeds=3, ...). Raises RunsFailed after
    writing the summary from the runs that finished when some failed.
    """
    exp = experiment if experiment is not None else Experiment.from_mapping(settings)
    cfgs = [variants.model_yaml(c) for c in exp.cfg]  # a spec (yolov5s+CBAM@neck) checked here
    if len({variant_of(c) for c in cfgs}) < len(cfgs):
        raise UserError(f"--cfg names a model twice: {' '.join(map(str, exp.cfg))}")
    modes = parse_infer(exp.infer, exp.imgsz)
    metric = exp.metric or default_metric(parse_bins(exp.size_bins))
    scoring = Scoring(exp.size_bins, check_max_det(exp.max_det))
    margin = DEFAULT_MARGIN if exp.margin is None else exp.margin
    root = exp.root
    data_yaml, images, names = _check_inputs(exp, cfgs)
    _check_not_busy(root)
    _check_settings(root, exp.run_settings(exp.plan_settings(metric, margin)))

    crowded = crowded_warning(yolo_to_coco(images, names), scoring.max_det)
    if crowded:
        print(crowded)
    executor = executor_for(exp)
    print(f"Runs of {root}: {executor.name}")
    owner = f"{socket.gethostname()}:{os.getpid()}:{time.time():.0f}"  # this invocation, as the runs' locks name it
    start_from = resolve_weights(exp.weights) if exp.weights else None
    if exp.base is not None:
        start_from = str(_train_base(exp, cfgs[0], executor, metric, scoring, owner))
    if exp.start_as != "paper" and not start_from:
        raise UserError(f"--attn-init {exp.start_as} makes a variant start as its base: it needs --weights or "
                        "--finetune")

    levers = [(variant_of(c), m) for c in cfgs for m in modes]
    plan = Plan(len(exp.seed_list), exp.max_seeds, margin=margin) if exp.max_seeds else None
    grid = Grid(exp, cfgs, modes, metric, scoring, start_from, owner)
    _run_seeds(grid, executor, levers, plan)
    if not grid.results:
        raise RunsFailed(f"all {len(grid.failed)} runs failed ({_failures(grid)}); nothing to summarize")
    seeds = sorted({s for _, s in grid.wanted})

    names = [variant_of(c) for c in cfgs]
    latency = executor.call(_latencies, root, names, modes, images)
    nothing = {"params(M)": math.nan}
    sizes = {v: next((r.size for (w, _), r in grid.results.items() if w == v), nothing) for v in names}
    rows, stats = summarize(levers, seeds, grid.scores(), metric, sizes, latency,
                            names={lv: lever(lv[0], lv[1], modes) for lv in levers}, margin=margin, plan=plan)
    write_table(rows, root / "summary")
    comparison_plot(stats, metric, root / "compare.png", margin=margin)
    verdict = closing_line(stats, metric, len(seeds), latency[levers[0]], margin=margin)
    reading = how_to_read(metric, margin, plan, levers=len(levers) - 1)
    notes = (f"{reading}\nDetection budget: {budget_note(scoring.max_det)}, the prediction "
             f"cap and COCO's maxDets alike.{' ' + crowded if crowded else ''}\nFigure: {root / 'compare.png'}")
    failed = (f"\nRuns that failed (left out of the table, named in its verdicts): {_failures(grid)}"
              if grid.failed else "")
    (root / "summary.md").write_text((root / "summary.md").read_text() + f"\n{notes}{failed}\n\n{verdict}\n")
    how = f"fine-tuned from {'the given base' if exp.weights else 'one base'}" if exp.finetune or exp.weights \
        else "from scratch"
    counts = sorted({len(grid.seeds_of(v)) for v, _ in levers})
    per = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]} to {counts[-1]}"
    print(f"\n{per} seed(s) per variant, {exp.epochs} epochs {how}, same data and settings ({root}):\n"
          f"{format_table(rows)}\n{notes}\n{verdict}")
    if grid.failed:
        print(f"\n{len(grid.failed)} run(s) failed:")
        for spec, why in grid.failed.values():
            print(f"  {spec.variant} seed {spec.seed}: {why} (log: {spec.log})")
        raise RunsFailed(f"{len(grid.failed)} of {len(grid.wanted)} runs failed (listed above with their logs); the "
                         f"summary holds the {len(grid.results)} that finished; the same command runs the failed "
                         "ones again")
    return rows


def _failures(grid: Grid) -> str:
    return "; ".join(f"{spec.variant} seed {spec.seed}: {why} ({spec.log})" for spec, why in grid.failed.values())


def _run_seeds(grid: Grid, executor, levers: list[tuple[str, Mode]], plan: Plan | None) -> list[int]:
    """The first seeds for every variant; with a plan, more seeds only where a lever is still undecided.

    Returns every seed any variant has. Each round asks the plan (attention.evaluation.sequential) how many
    seeds each variant needs; --max-hours stops adding once the runs so far took that long in all. A round with a
    failed run adds no more: the plan's looks need every run of a look (the same command retries the failed ones).
    """
    exp = grid.exp
    first = exp.seed_list
    grid.run(executor, {v: first for v in {v for v, _ in levers}})
    every = first + [max(first) + k for k in range(1, (plan.cap if plan else 0) - len(first) + 1)]
    while plan is not None and not grid.failed:
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
    if plan is not None and grid.failed:
        print(f"{len(grid.failed)} run(s) failed: no more seeds are added until they finish")
    return sorted({s for _, s in grid.results})


def _train_base(exp: Experiment, cfg: str, executor, metric: str, scoring: Scoring, owner: str) -> Path:
    """The one base every variant is fine-tuned from (--finetune without --weights), through the same executor."""
    base = exp.base
    train = TrainSettings(data=base["data"], epochs=base["epochs"], imgsz=base["imgsz"], batch_size=exp.batch_size,
                          workers=exp.workers, hyp=base["hyp"] or None)
    spec = RunSpec(exp.root / "base", cfg, 0, train, (), scoring, "[base] ", owner)
    if not is_complete(spec):
        progress = GridProgress(1, 1, metric)
        list(executor.run([spec], progress))
        if progress.failed_runs:
            raise RunsFailed(f"the base run failed ({progress.failed_runs[0][1]}; log: {spec.log}); every variant "
                             "starts from it, so nothing else ran")
    return spec.folder / "weights" / "best.pt"


def measured_on(device: str | None) -> str:
    """What a latency was measured on, as latency.json keys it: host, device asked, visible GPUs, torch threads."""
    return (f"{socket.gethostname()}, device {device or 'default'}, CUDA_VISIBLE_DEVICES "
            f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}, {torch.get_num_threads()} threads")


def _latencies(root: Path, variants: list[str], modes: list[Mode], images: list[Path],
               device: str | None = None) -> dict[tuple[str, Mode], float]:
    """Median ms per val image of every variant and mode (conf 0.25, as deployed), kept in <variant>/latency.json
    under measured_on(); NaN for a variant without a finished run. The variants of a mode are timed side by side,
    so when one lacks a figure for this machine and device, all of that mode are measured again together."""
    where = measured_on(device)
    known, weights = {}, {}
    for variant in variants:
        file = root / variant / "latency.json"
        found = json.loads(file.read_text()) if file.is_file() else {}
        known[variant] = {k: v for k, v in found.items() if isinstance(v, dict)}  # an earlier release's: gone
        known[variant].setdefault(where, {})
        best = sorted((root / variant).glob("seed*/weights/best.pt"))
        if best:
            weights[variant] = best[0]
    for mode in modes:
        key = mode_key(mode)
        if any(key not in known[v][where] for v in weights):
            names = list(weights)
            figures = ms_per_image([YOLO(str(weights[v])) for v in names], images, mode, device)
            for v, ms in zip(names, figures):
                known[v][where][key] = ms
                print(f"{v}, {mode[0]} {mode[1]}: {ms:.1f} ms per image ({where}; side by side with "
                      f"{len(names) - 1} other variant(s))")
                (root / v / "latency.json").write_text(json.dumps(known[v], indent=1))
    return {(v, mode): known[v][where].get(mode_key(mode), math.nan) for v in variants for mode in modes}
