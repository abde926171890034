"""The comparison runner: levers paired by seed, intervals shared among levers, verdicts read off them, the closing
line, seeds to resolve, reuse, resume."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import statistics
import subprocess
import sys

import pytest

from attention.evaluation.compare import default_metric, parse_infer
from attention.evaluation.sequential import Plan
from attention.evaluation.stats import power, seeds_needed
from attention.evaluation.summary import SEEDS_COLUMN, closing_line, how_to_read, plan_seeds, summarize

ENV = {**os.environ, "YOLO_OFFLINE": "1"}
FULL, SLICED = ("full", 160), ("sliced", 96)
T3 = 7.6488  # t(2 df) at 1 - 0.05 / (2 * 3), tables: 3 levers share the 5% (Bonferroni), each interval at 98.33%
NOISE = {"base": (0.002, -0.001, -0.001, 0.0, 0.001, -0.002), "cbam": (-0.001, 0.003, 0.0, 0.002, -0.002, 0.001)}


def scores_with(lever_effect: dict, seeds=(0, 1, 2)) -> dict:
    """Synthetic scores: a seed effect shared by every lever (pairing removes it), a per-lever effect, and a little
    noise per variant and seed (so the differences have spread)."""
    out = {}
    for (variant, mode), effect in lever_effect.items():
        for s in seeds:
            value = 0.30 + 0.05 * s + effect + NOISE[variant][s] * (4.0 if mode == SLICED else 0.2)
            out[(variant, mode, s)] = {"AP": value, "AP50": 0.6, "AP_small": value, "AP_large": -1.0}
    return out


LEVERS = [("base", FULL), ("base", SLICED), ("cbam", FULL), ("cbam", SLICED)]
NAMES = {lv: f"{lv[0]}, {lv[1][0]}" for lv in LEVERS}
SIZES = {"base": {"params(M)": 1.0}, "cbam": {"params(M)": 1.1}}
LATENCY = {("base", FULL): 10.0, ("base", SLICED): 30.0, ("cbam", FULL): 12.0, ("cbam", SLICED): 33.0}
DELTA = "ΔAP_small [98.3% CI]"  # 3 levers: each interval at 1 - 5% / 3


def diffs_of(scores, lever, seeds=(0, 1, 2)):
    return [scores[(*lever, s)]["AP_small"] - scores[("base", FULL, s)]["AP_small"] for s in seeds]


def test_rows_show_the_interval_the_verdict_and_the_seeds_for_80_percent_power():
    scores = scores_with({LEVERS[0]: 0, LEVERS[1]: 0.05, LEVERS[2]: 0.004, LEVERS[3]: 0.012})
    rows, stats = summarize(LEVERS, [0, 1, 2], scores, "AP_small", SIZES, LATENCY, NAMES)
    assert list(rows[0])[:7] == ["lever", "params(M)", "ms/image", "AP_small", DELTA, SEEDS_COLUMN, "verdict"]
    assert SEEDS_COLUMN == "seeds for 80% power" and rows[0][DELTA] == "baseline"
    base = [scores[("base", FULL, s)]["AP_small"] for s in range(3)]
    assert rows[0]["AP_small"] == f"{statistics.fmean(base):.3f} ± {statistics.stdev(base):.3f}"
    assert rows[0]["AP_large"] == "n/a"  # no ground truth of that size: not -1.000 ± 0.000
    for row, lever in zip(rows[1:], LEVERS[1:]):
        d = diffs_of(scores, lever)
        half = T3 * statistics.stdev(d) / math.sqrt(3)
        mean = statistics.fmean(d)
        assert row[DELTA] == f"{mean:+.3f} [{mean - half:+.3f}, {mean + half:+.3f}]"
    assert rows[1]["verdict"] == "better, by more than 0.010" and rows[1][SEEDS_COLUMN] == ""
    assert rows[2]["verdict"] == "equivalent, within ±0.010"  # +0.004 on every seed, give or take 0.001
    d = diffs_of(scores, LEVERS[3])  # +0.012 with spread: might matter, 3 seeds cannot say
    assert rows[3]["verdict"] == "undecided"
    need = seeds_needed(statistics.fmean(d), statistics.stdev(d), 0.01, 0.05 / 3, start=4)  # at the shared level
    assert rows[3][SEEDS_COLUMN] == f"~{need}" and need > seeds_needed(statistics.fmean(d), statistics.stdev(d), 0.01)
    assert [lv.verdict.kind for lv in stats[1:]] == ["better", "equivalent", "undecided"] and stats[0].baseline


def test_the_closing_line_names_the_cheapest_better_lever_and_the_margin():
    # sliced adds 0.05, CBAM 0.02, CBAM + sliced 0.06: all better by more than the margin; CBAM full is cheapest.
    scores = scores_with({LEVERS[0]: 0, LEVERS[1]: 0.05, LEVERS[2]: 0.02, LEVERS[3]: 0.06})
    rows, stats = summarize(LEVERS, [0, 1, 2], scores, "AP_small", SIZES, LATENCY, NAMES)
    line = closing_line(stats, "AP_small", 3, LATENCY[LEVERS[0]])
    d = diffs_of(scores, LEVERS[2])
    mean, half = statistics.fmean(d), T3 * statistics.stdev(d) / math.sqrt(3)
    assert line == ("Cheapest lever better than the baseline on AP_small by more than the ±0.010 margin (its whole "
                    "interval lies above +0.010): cbam, full, "
                    f"{mean:+.3f} [{mean - half:+.3f}, {mean + half:+.3f}] over 3 seeds, at 12 ms per image "
                    "(1.20x the baseline's).")
    assert mean - half > 0.01


def test_the_closing_line_never_claims_more_than_the_verdict_it_rests_on():
    # CBAM full +0.011 with spread: better, but its interval reaches under the margin; sliced +0.05: by more than it
    scores = scores_with({LEVERS[0]: 0, LEVERS[1]: 0.05, LEVERS[2]: 0.011, LEVERS[3]: -0.2})
    for s in range(3):  # widen CBAM full's spread so its interval reaches into the band but stays above 0
        scores[("cbam", FULL, s)]["AP_small"] += (-0.0015, 0.0, 0.0015)[s]
    rows, stats = summarize(LEVERS, [0, 1, 2], scores, "AP_small", SIZES, LATENCY, NAMES)
    small, clear = stats[2].verdict, stats[1].verdict
    assert small.kind == clear.kind == "better" and clear.beyond and not small.beyond and 0 < small.low < 0.01
    assert rows[2]["verdict"] == f"better; gain between {small.low:+.3f} and {small.high:+.3f}"
    line = closing_line(stats, "AP_small", 3, LATENCY[LEVERS[0]])
    assert line.startswith("Cheapest lever better than the baseline on AP_small by more than the ±0.010 margin (its "
                           "whole interval lies above +0.010): base, sliced, ")
    assert line.endswith(f"Cheaper, better by a gain that may be under the margin: cbam, full, gain between "
                         f"{small.low:+.3f} and {small.high:+.3f}, at 12 ms per image (1.20x the baseline's).")
    # Without the clear one, the line rests on the small gain and says so
    del scores[("base", SLICED, 0)], scores[("base", SLICED, 1)], scores[("base", SLICED, 2)]
    levers = [lv for lv in LEVERS if lv != ("base", SLICED)]
    _, stats = summarize(levers, [0, 1, 2], scores, "AP_small", SIZES, LATENCY, NAMES)
    v = stats[1].verdict
    assert v.kind == "better" and not v.beyond
    assert closing_line(stats, "AP_small") == (
        "Cheapest lever better than the baseline on AP_small (its interval lies above 0 but reaches under +0.010: "
        f"the gain may be under the ±0.010 margin): cbam, full, gain between {v.low:+.3f} and {v.high:+.3f} over 3 "
        "seeds, at 12 ms per image (1.20x the baseline's).")


def test_without_a_better_lever_the_closing_line_says_what_each_is():
    scores = scores_with({LEVERS[0]: 0, LEVERS[1]: -0.05, LEVERS[2]: 0.002, LEVERS[3]: 0.012})
    rows, stats = summarize(LEVERS, [0, 1, 2], scores, "AP_small", SIZES, LATENCY, NAMES)
    line = closing_line(stats, "AP_small", 3, LATENCY[LEVERS[0]])
    need = stats[3].seeds_needed
    assert line == ("No lever is shown better than the baseline on AP_small over 3 seeds. "
                    "Equivalent within ±0.010: cbam, full. Worse by more than 0.010: base, sliced. "
                    f"Undecided (seeds for 80% power): cbam, sliced (~{need}).")
    # With no margin the same consistent, negligible difference is "better" (judged alone), and the line says so
    _, strict = summarize(LEVERS[::2], [0, 1, 2], scores, "AP_small", SIZES, LATENCY, NAMES, margin=0.0)
    assert strict[1].verdict.kind == "better"
    assert closing_line(strict, "AP_small").startswith("Cheapest lever better than the baseline on AP_small (its "
                                                       "interval lies above 0): cbam, full, gain between +0.00")
    text = how_to_read("AP_small", 0.01, levers=3)
    assert "margin ±0.010" in text and "80%" in text and "3 levers (each interval at 98.3%)" in text


def test_empty_bins_nan_scores_and_one_seed_get_defined_answers():
    scores = scores_with({lv: 0.02 * k for k, lv in enumerate(LEVERS)})
    rows, stats = summarize(LEVERS, [0, 1, 2], scores, "AP_large", SIZES, LATENCY, NAMES)  # -1 everywhere
    assert all(r["ΔAP_large [98.3% CI]"] == "n/a" and r["verdict"] == "n/a: no objects of that size in the split"
               for r in rows[1:])
    assert closing_line(stats, "AP_large", 3, 10.0).startswith("No lever could be compared on AP_large")

    scores[("cbam", SLICED, 1)]["AP_small"] = math.nan  # one run without a score
    rows, stats = summarize(LEVERS, [0, 1, 2], scores, "AP_small", SIZES, LATENCY, NAMES)
    kept = [diffs_of(scores, LEVERS[3])[s] for s in (0, 2)]
    mean, half = statistics.fmean(kept), 38.19 * statistics.stdev(kept) / math.sqrt(2)  # t(1 df) at 98.33%
    assert rows[3][DELTA] == f"{mean:+.3f} [{mean - half:+.3f}, {mean + half:+.3f}]"
    assert rows[3]["verdict"].endswith("; seed 1 left out (no score)") and stats[3].verdict.n == 2
    assert rows[3]["AP_small"].endswith("(2 of 3 seeds)")

    one = scores_with({lv: 0.02 * k for k, lv in enumerate(LEVERS)}, seeds=(0,))
    rows, stats = summarize(LEVERS, [0], one, "AP_small", SIZES, LATENCY, NAMES)
    d = diffs_of(one, LEVERS[1], seeds=(0,))[0]
    assert rows[1][DELTA] == f"{d:+.3f} (one seed)" and rows[1]["verdict"] == "undecided: one seed, no interval"
    assert rows[1][SEEDS_COLUMN] == "?" and rows[0]["AP_small"] == f"{one[('base', FULL, 0)]['AP_small']:.3f}"
    assert closing_line(stats, "AP_small", 1, 10.0).startswith("No lever can be judged on AP_small from one seed")


def test_with_a_plan_levers_are_judged_at_their_look_and_variants_get_the_seeds_they_want():
    scores = scores_with({LEVERS[0]: 0, LEVERS[1]: 0.05, LEVERS[2]: 0.0005, LEVERS[3]: 0.012}, seeds=range(6))
    plan = Plan(3, 10, margin=0.01)
    wants = plan_seeds(LEVERS, [0, 1, 2], scores, "AP_small", plan)
    assert set(wants) == {"base", "cbam"} and wants["base"] == max(wants.values()) and wants["base"] in (6, 10)
    rows, stats = summarize(LEVERS, list(range(6)), scores, "AP_small", SIZES, LATENCY, NAMES, plan=plan)
    assert "ΔAP_small [99.6% CI]" in rows[0]  # every lever at the look of 6 seeds: alpha 0.0135 / 3 levers
    assert all(lv.verdict.n == 6 for lv in stats[1:]) and stats[1].verdict.kind == "better"
    assert "Bonferroni over the looks and the 3 levers" in how_to_read("AP_small", 0.01, plan, levers=3)


def test_seeds_to_resolve_is_the_count_for_80_percent_power_or_beyond_the_cap_never_the_cap_itself():
    # cbam, sliced: +0.006 with a spread that 10 seeds cannot resolve at 80%; the plan still runs it to the cap
    scores = scores_with({LEVERS[0]: 0, LEVERS[1]: 0.05, LEVERS[2]: 0.0005, LEVERS[3]: 0.004}, seeds=range(6))
    plan = Plan(3, 10, margin=0.01)
    rows, stats = summarize(LEVERS, list(range(6)), scores, "AP_small", SIZES, LATENCY, NAMES, plan=plan)
    v = stats[3].verdict
    assert v.kind == "undecided" and v.n == 6
    assert power(v.mean, v.sd, 10, 0.01, plan.alpha_at(10) / 3) < 0.8  # the cap's look falls short
    fixed = seeds_needed(v.mean, v.sd, 0.01, 0.05 / 3, start=11)  # what a comparison of fixed seeds would need
    assert fixed and rows[3][SEEDS_COLUMN] == f"> 10 (cap); ~{fixed}"
    line = closing_line([stats[0], stats[2], stats[3]], "AP_small")  # without the better lever: what each is
    assert line.endswith(f"Undecided (seeds for 80% power): cbam, sliced (more than the cap of 10: ~{fixed} as "
                         "fixed seeds).")
    assert plan_seeds(LEVERS, list(range(6)), scores, "AP_small", plan)["cbam"] == 10  # the cap, as the user set it


def test_metric_and_modes_are_checked():
    assert default_metric({"small": 0, "medium": 0}) == "AP_small"
    assert default_metric({"very_tiny": 0, "tiny": 0, "small": 0}) == "AP_tiny"
    assert parse_infer(None, 320) == [("full", 320)] and parse_infer(["full:1920", "sliced:640"], 0)[1] == ("sliced", 640)
    for bad in (["whole:640"], ["sliced:x"], ["full:640", "full:640"]):
        with pytest.raises(ValueError, match="--infer"):
            parse_infer(bad, 640)
    with pytest.raises(ValueError, match="--metric 'AP_huge' is not among the scores"):
        summarize(LEVERS, [0], scores_with({lv: 0 for lv in LEVERS}, seeds=(0,)), "AP_huge", SIZES, LATENCY, NAMES)


def run_compare(*args, cwd):
    return subprocess.run([sys.executable, "-m", "attention", "compare", *map(str, args)], cwd=cwd, env=ENV,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)


def read_rows(path):
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_runner_end_to_end_pairs_full_and_sliced_and_rerun_reuses(tiny_data, tmp_path):
    args = ["--cfg", "yolov5n.yaml", "yolov5n-se.yaml", "--seeds", 2, "--epochs", 1, "--data", tiny_data,
            "--img", 160, "--batch-size", 8, "--workers", 0, "--project", tmp_path / "runs", "--infer", "full:160"]
    proc = run_compare(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    root = tmp_path / "runs" / "exp"
    assert proc.stdout.count("training 1 epochs") == 4 and "[run 4/4] yolov5n-se seed 1" in proc.stdout
    rows = read_rows(root / "summary.csv")
    assert [r["lever"] for r in rows] == ["yolov5n", "yolov5n-se"]
    assert rows[1]["verdict"].split(",")[0].split(":")[0] in {"better", "worse", "equivalent", "undecided"}
    assert {"AP_small", "ΔAP_small [95% CI]", "ms/image", "AP_large"} <= set(rows[0]) and rows[0]["AP_large"] == "n/a"
    assert (root / "summary.md").read_text().rstrip().splitlines()[-1].startswith(("No lever", "Cheapest lever"))

    # The same runs scored a second way: nothing trains, each run is scored sliced, and both ways pair by seed.
    weights = root / "yolov5n" / "seed0" / "weights" / "best.pt"
    stamp = weights.stat().st_mtime_ns
    again = run_compare(*args, "sliced:96", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "training" not in again.stdout and weights.stat().st_mtime_ns == stamp
    assert again.stdout.count("scoring sliced 96") == 4 and "scoring full" not in again.stdout
    for variant in ("yolov5n", "yolov5n-se"):
        for seed in (0, 1):
            run = root / variant / f"seed{seed}"
            full, sliced = (json.loads((run / f"score-{m}.json").read_text()) for m in ("full160", "sliced96"))
            # the same figures; a sliced score also names the tiles' overlap it was made with
            assert set(full) | {"overlap"} == set(sliced) and 0 <= full["AP"] <= 1 and 0 <= sliced["AP"] <= 1
            assert (full["conf"], full["iou"], sliced["overlap"]) == (0.001, 0.6, 0.2)
    rows = read_rows(root / "summary.csv")
    assert [r["lever"] for r in rows] == ["yolov5n, full 160", "yolov5n, sliced 96", "yolov5n-se, full 160",
                                          "yolov5n-se, sliced 96"]

    # Lose one run (as if killed before it began): only that one trains, and is scored both ways.
    shutil.rmtree(root / "yolov5n-se" / "seed1")
    third = run_compare(*args, "sliced:96", cwd=tmp_path)
    assert third.stdout.count("training 1 epochs") == 1 and third.stdout.count("finished and scored earlier") == 3

    changed = run_compare(*[a if a != 1 else 2 for a in args], cwd=tmp_path)  # --epochs 2 on the same folder
    assert changed.returncode == 2
    assert "holds a comparison with other settings (epochs 1 -> 2); pass another --name" in changed.stderr


def test_finetune_trains_one_base_and_starts_every_variant_from_it(tiny_data, tmp_path):
    proc = run_compare("--cfg", "yolov5n.yaml", "yolov5n-cbam.yaml", "--seeds", 1, "--epochs", 1, "--finetune",
                       "--base-epochs", 1, "--data", tiny_data, "--img", 160, "--batch-size", 8, "--workers", 0,
                       "--project", tmp_path / "runs", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    root = tmp_path / "runs" / "exp"
    assert proc.stdout.count("[base] training 1 epochs") == 1
    base = root / "base" / "weights" / "best.pt"
    for variant in ("yolov5n", "yolov5n-cbam"):
        report = json.loads((root / variant / "seed0" / "transfer.json").read_text())
        assert report["source"] == str(base) and report["loaded"] == report["base_tensors"]
    assert "identity" in (root / "settings.json").read_text()


def test_experiment_yaml_is_checked(tmp_path):
    bad = tmp_path / "exp.yaml"
    bad.write_text("cfg: [yolov5n.yaml, yolov5n-se.yaml]\nepoch: 3\n")
    proc = run_compare(bad, cwd=tmp_path)
    assert proc.returncode == 2 and f"experiment YAML {bad}: unknown setting(s) epoch" in proc.stderr
    proc = run_compare(tmp_path / "missing.yaml", cwd=tmp_path)
    assert proc.returncode == 2 and "experiment YAML not found" in proc.stderr


class FakeExecutor:
    """Runs nothing: each run's score is a function of variant and seed, and each took an hour (status.json)."""

    width, name = 1, "fake"

    def __init__(self, score):
        self.score, self.calls = score, []

    def run(self, specs, progress):
        from attention.evaluation.scored_run import RunResult, mode_key

        for spec in specs:
            self.calls.append((spec.variant, spec.seed))
            spec.folder.mkdir(parents=True, exist_ok=True)
            (spec.folder / "status.json").write_text(json.dumps({"state": "done", "seconds": 3600.0}))
            scores = {mode_key(m): {"AP_small": self.score(spec.variant, spec.seed)} for m in spec.modes}
            result = RunResult(spec.variant, spec.seed, spec.folder, scores, {}, 3600.0, True)
            progress.finished(result)
            yield result


def adaptive_grid(tmp_path, **extra):
    from attention.evaluation.compare import Grid
    from attention.evaluation.experiment import Experiment
    from attention.evaluation.scored_run import Scoring

    cfgs = ["yolov5n.yaml", "yolov5n-se.yaml", "yolov5n-cbam.yaml"]
    exp = Experiment.from_mapping({"cfg": cfgs, "seeds": 3, "max_seeds": 10, "project": str(tmp_path), **extra})
    return Grid(exp, cfgs, [FULL], "AP_small", Scoring("coco", 300), None), [(c.removesuffix(".yaml"), FULL) for c in cfgs]


def test_more_seeds_go_only_to_undecided_levers_and_their_baseline(tmp_path):
    from attention.evaluation.compare import _run_seeds

    spread = [0.004, -0.006, 0.002, 0.005, -0.003, 0.001, -0.004, 0.006, -0.002, 0.0]  # per seed, mean 0.0003
    effect = {"yolov5n": 0.0, "yolov5n-se": 0.05, "yolov5n-cbam": 0.004}  # se: clear at 3 seeds; cbam: not
    noise = {"yolov5n": [x / 50 for x in spread], "yolov5n-se": [x / 20 for x in spread[::-1]], "yolov5n-cbam": spread}
    fake = FakeExecutor(lambda v, s: 0.5 + effect[v] + noise[v][s])
    grid, levers = adaptive_grid(tmp_path)
    plan = Plan(3, 10)
    seeds = _run_seeds(grid, fake, levers, plan)
    assert plan.looks == (3, 6, 10)
    assert grid.seeds_of("yolov5n-se") == [0, 1, 2]  # decided at the first look: no seed more
    assert grid.seeds_of("yolov5n-cbam") == grid.seeds_of("yolov5n") == list(range(10))  # to the cap, paired
    assert seeds == list(range(10)) and len(fake.calls) == len(set(fake.calls)) == 3 + 10 + 10  # nothing run twice


def test_max_hours_stops_adding_seeds(tmp_path, capsys):
    from attention.evaluation.compare import _run_seeds

    # cbam: +0.004 with a spread that leaves it undecided at 3 seeds (the others: equal, hence equivalent)
    fake = FakeExecutor(lambda v, s: 0.5 + (0.004 + [0.004, -0.006, 0.002][s % 3] if v == "yolov5n-cbam" else 0.0))
    grid, levers = adaptive_grid(tmp_path, max_hours=2.0)
    _run_seeds(grid, fake, levers, Plan(3, 10))
    assert len(fake.calls) == 9  # the first 3 seeds took 9 hours in all, beyond 2
    assert "--max-hours 2: the runs took 9.0 h in all; no more seeds are added" in capsys.readouterr().out
