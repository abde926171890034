"""The experiment runner: identical settings per variant and seed, reuse on re-run, paired verdicts."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys

import pytest

from attention.evaluation.compare import summarize
from attention.evaluation.stats import paired_interval, verdict

from conftest import REPO

ENV = {**os.environ, "YOLO_OFFLINE": "1"}


def test_paired_interval_matches_the_t_formula():
    diffs = [0.02, 0.03, 0.04]
    mean, low, high = paired_interval(diffs)
    half = 4.303 * 0.01 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n); sd of 0.02, 0.03, 0.04 is 0.01
    assert mean == pytest.approx(0.03) and (low, high) == pytest.approx((0.03 - half, 0.03 + half))
    assert verdict(low, high) == "better"
    assert verdict(*paired_interval([-0.05, -0.04, -0.06])[1:]) == "worse"
    assert verdict(*paired_interval([0.01, -0.02, 0.03])[1:]) == "no detectable difference"
    assert verdict(*paired_interval([0.5])[1:]).startswith("no detectable difference (one seed")


def test_summary_pairs_variants_with_the_baseline_by_seed():
    scores = {("base", 0): {"params(M)": 1.0, "mAP50": 0.5, "mAP50-95": 0.30, "AP_small": 0.2},
              ("base", 1): {"params(M)": 1.0, "mAP50": 0.6, "mAP50-95": 0.40, "AP_small": 0.3},
              ("se", 0): {"params(M)": 1.1, "mAP50": 0.5, "mAP50-95": 0.32, "AP_small": 0.2},
              ("se", 1): {"params(M)": 1.1, "mAP50": 0.6, "mAP50-95": 0.42, "AP_small": 0.3}}
    rows = summarize(["base", "se"], [0, 1], scores, "mAP50-95")
    assert rows[0]["mAP50-95"] == f"0.350 ± {math.sqrt(0.005):.3f}" and rows[0]["verdict"] == ""
    # Per-seed differences are both +0.02: zero spread, so the interval is a point and the verdict is clear.
    assert rows[1]["ΔmAP50-95 [95% CI]"] == "+0.020 [+0.020, +0.020]" and rows[1]["verdict"] == "better"
    with pytest.raises(ValueError, match="--metric 'AP_huge' is not among the scores"):
        summarize(["base", "se"], [0, 1], scores, "AP_huge")


def run_compare(*args, cwd):
    cmd = [sys.executable, "-m", "attention", "compare", *map(str, args)]
    proc = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    return proc


def test_runner_end_to_end_and_rerun_reuses(tiny_data, tmp_path):
    args = ["--cfg", "yolov5n.yaml", "yolov5n-se.yaml", "--seeds", 2, "--epochs", 1, "--data", tiny_data,
            "--img", 160, "--batch-size", 8, "--workers", 0, "--project", tmp_path / "runs"]
    proc = run_compare(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    root = tmp_path / "runs" / "exp"
    for variant in ("yolov5n", "yolov5n-se"):
        for seed in (0, 1):
            assert (root / variant / f"seed{seed}" / "score.json").is_file()
    assert proc.stdout.count("training 1 epochs") == 4 and "[run 4/4] yolov5n-se seed 1" in proc.stdout
    with (root / "summary.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["variant"] for r in rows] == ["yolov5n", "yolov5n-se"]
    assert rows[1]["verdict"] in {"better", "worse", "no detectable difference"}
    assert {"mAP50", "mAP50-95", "AP_small", "ΔmAP50-95 [95% CI]"} <= set(rows[0])

    # Re-run: everything reused. Then lose one run (as if killed before it began): only that one trains.
    weights = root / "yolov5n" / "seed0" / "weights" / "best.pt"
    stamp = weights.stat().st_mtime_ns
    again = run_compare(*args, cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.count("finished earlier, reused") == 4
    assert "training" not in again.stdout and weights.stat().st_mtime_ns == stamp
    import shutil

    shutil.rmtree(root / "yolov5n-se" / "seed1")
    third = run_compare(*args, cwd=tmp_path)
    assert third.stdout.count("finished earlier, reused") == 3 and third.stdout.count("training 1 epochs") == 1

    changed = run_compare(*[a if a != 1 else 2 for a in args], cwd=tmp_path)  # --epochs 2 on the same folder
    assert changed.returncode == 2
    assert "holds a comparison with other settings (epochs 1 -> 2); pass another --name" in changed.stderr


def test_experiment_yaml_is_checked(tmp_path):
    bad = tmp_path / "exp.yaml"
    bad.write_text("cfg: [yolov5n.yaml, yolov5n-se.yaml]\nepoch: 3\n")
    proc = run_compare(bad, cwd=tmp_path)
    assert proc.returncode == 2 and f"experiment YAML {bad}: unknown setting(s) epoch" in proc.stderr
    proc = run_compare(tmp_path / "missing.yaml", cwd=tmp_path)
    assert proc.returncode == 2 and "experiment YAML not found" in proc.stderr
