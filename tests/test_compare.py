"""The comparison runner: levers paired by seed, intervals, the closing line, reuse and resume, fine-tune mode."""

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
from attention.evaluation.stats import paired_interval, verdict
from attention.evaluation.summary import closing_line, seeds_to_resolve, summarize

ENV = {**os.environ, "YOLO_OFFLINE": "1"}
FULL, SLICED = ("full", 160), ("sliced", 96)


def test_paired_interval_matches_the_t_formula():
    diffs = [0.02, 0.03, 0.04]
    mean, low, high = paired_interval(diffs)
    half = 4.303 * 0.01 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n); sd of 0.02, 0.03, 0.04 is 0.01
    assert mean == pytest.approx(0.03) and (low, high) == pytest.approx((0.03 - half, 0.03 + half))
    assert verdict(low, high) == "better"
    assert verdict(*paired_interval([-0.05, -0.04, -0.06])[1:]) == "worse"
    assert verdict(*paired_interval([0.01, -0.02, 0.03])[1:]) == "no detectable difference"
    assert verdict(*paired_interval([0.5])[1:]).startswith("no detectable difference (one seed")


def test_seeds_to_resolve_is_the_smallest_n_whose_interval_excludes_zero():
    diffs = [0.01, -0.01, 0.03]  # mean 0.01, sd 0.02
    n = seeds_to_resolve(diffs)
    t = {17: 2.120, 18: 2.110}  # t(0.975, n - 1) for n = 17, 18
    assert t[17] * 0.02 / math.sqrt(17) > 0.01 > t[18] * 0.02 / math.sqrt(18) and n == 18
    assert seeds_to_resolve([0.02, -0.02, 0.0]) is None  # no difference to resolve


def scores_with(lever_effect: dict, seeds=(0, 1, 2), bins=("AP_small", "AP_large")) -> dict:
    """Synthetic scores: a seed effect shared by every lever plus a per-lever effect (pairing removes the first)."""
    out = {}
    for (variant, mode), effect in lever_effect.items():
        for s in seeds:
            base = 0.30 + 0.05 * s  # seeds differ a lot; levers differ by `effect` (+ a little noise)
            noise = (0.002, -0.001, -0.001)[s]
            out[(variant, mode, s)] = {"AP": base + effect + noise, "AP50": 0.6, "AP_small": base + effect + noise,
                                       "AP_large": -1.0}
    return out


LEVERS = [("base", FULL), ("base", SLICED), ("cbam", FULL), ("cbam", SLICED)]
NAMES = {lv: f"{lv[0]}, {lv[1][0]}" for lv in LEVERS}
SIZES = {"base": {"params(M)": 1.0}, "cbam": {"params(M)": 1.1}}
LATENCY = {("base", FULL): 10.0, ("base", SLICED): 30.0, ("cbam", FULL): 12.0, ("cbam", SLICED): 33.0}


def test_a_lever_with_a_known_difference_is_named_and_the_cheapest_wins():
    # sliced inference adds 0.05 on every seed, CBAM 0.02, CBAM + sliced 0.06: all help; CBAM full is cheapest.
    scores = scores_with({LEVERS[0]: 0, LEVERS[1]: 0.05, LEVERS[2]: 0.02, LEVERS[3]: 0.06})
    rows, stats = summarize(LEVERS, [0, 1, 2], scores, "AP_small", SIZES, LATENCY, NAMES)
    assert [r["lever"] for r in rows] == list(NAMES.values()) and rows[0]["ΔAP_small [95% CI]"] == "baseline"
    assert rows[1]["ΔAP_small [95% CI]"].startswith("+0.050 [") and rows[1]["verdict"] == "better"
    seeds = [scores[("base", FULL, s)]["AP_small"] for s in range(3)]
    assert rows[0]["AP_small"] == f"{statistics.fmean(seeds):.3f} ± {statistics.stdev(seeds):.3f}" == "0.350 ± 0.049"
    assert rows[0]["AP_large"] == "n/a"  # no ground truth of that size: not -1.000 ± 0.000
    line = closing_line(stats, "AP_small", 3, LATENCY[LEVERS[0]])
    assert line.startswith("Cheapest lever that helps AP_small: cbam, full, +0.020 [")
    assert line.endswith("at 12 ms per image (1.20x the baseline's).")


def test_with_no_difference_the_closing_line_says_so_and_how_many_seeds_would_tell():
    scores = scores_with({LEVERS[0]: 0, LEVERS[1]: 0, LEVERS[2]: 0, LEVERS[3]: 0})
    scores[("cbam", SLICED, 0)]["AP_small"] += 0.012  # a small, noisy difference
    scores[("cbam", SLICED, 1)]["AP_small"] -= 0.004
    rows, stats = summarize(LEVERS, [0, 1, 2], scores, "AP_small", SIZES, LATENCY, NAMES)
    assert all(r["verdict"] == "no detectable difference" for r in rows[1:])
    line = closing_line(stats, "AP_small", 3, LATENCY[LEVERS[0]])
    assert line.startswith("No lever's 95% interval on AP_small lies above zero over 3 seeds; the largest difference, "
                           "cbam, sliced's +0.003, would need about ")
    diffs = [scores[("cbam", SLICED, s)]["AP_small"] - scores[("base", FULL, s)]["AP_small"] for s in range(3)]
    assert f"about {seeds_to_resolve(diffs)} seeds to resolve." in line and rows[3]["seeds to resolve"].startswith("~")


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
    assert rows[1]["verdict"] in {"better", "worse", "no detectable difference"}
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
            assert set(full) == set(sliced) and 0 <= full["AP"] <= 1 and 0 <= sliced["AP"] <= 1
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
