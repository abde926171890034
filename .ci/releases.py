"""Which features work on which ultralytics releases: each release installed beside this environment, then checked.

    python .ci/releases.py 8.3.5 8.4.0 8.4.190                  # the compat table per release (seconds each)
    python .ci/releases.py 8.3.5 8.4.190 --tests "-m core"      # and a pytest selection on each (minutes each)

A release is installed with pip --target into .ci/ultralytics/<version> with the packages it needs that this
environment lacks or has too new (pandas, seaborn, py-cpuinfo before 8.3.200; numpy 2.3 where ultralytics still
calls np.trapz), and put first on PYTHONPATH. Prints one Markdown table: feature rows, release columns.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".ci" / "ultralytics"


def extras(version: str) -> list[str]:
    """What a release needs beside this environment (its own pins that the newest release dropped)."""
    v = tuple(int(x) for x in version.split("."))
    out = []
    if v < (8, 3, 108):
        out.append("numpy==2.3.5")  # ultralytics' metrics call np.trapz, gone in numpy 2.4
    if v < (8, 3, 200):
        out += ["pandas", "seaborn", "py-cpuinfo"]  # polars replaced pandas in 8.3.200
    return out


def install(version: str) -> Path:
    target = CACHE / version
    if not (target / "ultralytics").is_dir():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                        f"ultralytics=={version}", *extras(version)], check=True)
    return target


def run(version: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(install(version)), "YOLO_OFFLINE": "1",
           "YOLO_CONFIG_DIR": str(CACHE / f"config-{version}")}  # old releases rewrite the settings file
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("versions", nargs="+")
    p.add_argument("--tests", help="pytest arguments to run on each release, e.g. '-m core' or a test file")
    a = p.parse_args()
    table: dict[str, dict[str, str]] = {}
    for version in a.versions:
        proc = run(version, "-m", "attention", "compat")
        for state, feature in re.findall(r"^\s+(on|OFF)\s+(.+?) \(works on", proc.stdout, re.M):
            table.setdefault(feature, {})[version] = "yes" if state == "on" else "no"
        if a.tests:
            tests = run(version, "-m", "pytest", "-q", "-p", "no:cacheprovider", *shlex.split(a.tests))
            table.setdefault(f"pytest {a.tests}", {})[version] = tests.stdout.strip().splitlines()[-1]
    print("| feature | " + " | ".join(a.versions) + " |\n|---|" + "---|" * len(a.versions))
    for feature, by_version in table.items():
        print(f"| {feature} | " + " | ".join(by_version.get(v, "?") for v in a.versions) + " |")


if __name__ == "__main__":
    main()
