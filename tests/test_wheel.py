"""The plugin as a user gets it: a built wheel installed elsewhere, used from an empty folder, commands included.

The wheel is built from this checkout, installed with pip into a temporary folder (no dependencies: they are
this environment's), and everything runs in a fresh empty folder with that folder first on PYTHONPATH, so
nothing can come from the checkout. YOLO_AUTOINSTALL=False makes any package ultralytics would install at run
time show up as a warning in the output, which the tests refuse.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from attention.adapter import compat
from attention.inference.export import missing_packages
from conftest import REPO


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-w", str(root / "dist")],
                   check=True, capture_output=True, cwd=root)
    wheel = next((root / "dist").glob("yolov5_attention-*.whl"))
    site = root / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, capture_output=True,
                   cwd=root)
    work = root / "work"
    work.mkdir()
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))  # e.g. an older ultralytics
    env = {**os.environ, "PYTHONPATH": path, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False",
           "XDG_CACHE_HOME": str(root / "cache"), "PYTHONUNBUFFERED": "1"}
    env.pop("ATTENTION_DATASETS", None)
    return {"wheel": wheel, "site": site, "work": work, "env": env, "cache": root / "cache"}


def run(installed: dict, *args, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], cwd=cwd or installed["work"], env=installed["env"],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 or not check, out[-4000:]
    assert "AutoUpdate" not in out and "requirement" not in out.lower(), out[-4000:]  # ultralytics wanted a package
    return proc


def cli(installed: dict, *args, check: bool = True) -> subprocess.CompletedProcess:
    return run(installed, installed["site"] / "bin" / "yolov5-attention", *args, check=check)


def test_wheel_contents(installed):
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    for kind, folder in (("models", "models"), ("configs", "configs"), ("data", "data")):
        shipped = sorted(p.name for p in (REPO / folder).glob("*.yaml"))
        assert shipped and all(f"attention/cfg/{kind}/{n}" in names for n in shipped), kind
    assert any(n.endswith("entry_points.txt") for n in names)
    assert (installed["site"] / "bin" / "yolov5-attention").is_file()


def test_models_by_name_from_an_empty_folder(installed):
    code = ("import attention, sys; from ultralytics import YOLO; "
            "assert attention.__file__.startswith(sys.argv[1]), attention.__file__; "
            "a = YOLO('yolov5s-cbam.yaml').model; b = YOLO('yolov5n-p2-cbam.yaml').model; "
            "print(a.yaml['scale'], sum(type(m).__name__ == 'CBAM' for m in a.modules()), "
            "b.yaml['scale'], len(b.stride))")
    proc = run(installed, sys.executable, "-c", code, installed["site"])
    assert proc.stdout.strip().splitlines()[-1] == "s 3 n 4"  # 3 CBAM blocks at s; P2 model: 4 strides
    assert not list(installed["work"].iterdir())  # nothing written to the working folder


def test_embedded_dataset_goes_to_the_user_cache(installed):
    proc = cli(installed, "sizes", "--project", "runs/sizes")
    assert "Object sizes in tiny-objects.yaml" in proc.stdout
    cached = installed["cache"] / "yolov5-attention" / "datasets" / "tiny-objects"
    assert len(list((cached / "images" / "train").glob("*.jpg"))) == 400
    assert not [p for p in installed["site"].rglob("*") if p.suffix in (".jpg", ".txt") and "images" in p.parts]
    assert (installed["work"] / "runs" / "sizes" / "exp" / "sizes.csv").is_file()


def test_every_command_runs_from_the_wheel(installed, tiny_data, tmp_path):
    work = installed["work"]
    train = ["--data", tiny_data, "--epochs", 1, "--img", 160, "--batch-size", 8, "--workers", 0]
    cli(installed, "train", "--cfg", "yolov5n-cbam.yaml", "--hyp", "hyp.small-objects.yaml", *train)
    best = work / "runs" / "train" / "exp" / "weights" / "best.pt"
    assert best.is_file() and (work / "runs" / "train" / "exp" / "data_report.txt").is_file()
    # the classic script names are the same commands
    cli(installed, "val", "--weights", best, "--data", tiny_data, "--img", 160, "--size-bins", "tiny")
    assert "AP_very_tiny" in (work / "runs" / "val" / "exp" / "results.json").read_text()
    cli(installed, "detect", "--weights", best, "--source", Path(yaml.safe_load(tiny_data.read_text())["path"])
        / "images" / "val", "--img", 160, "--save-txt")
    assert list((work / "runs" / "detect" / "exp").glob("*.jpg"))
    cli(installed, "compare", "--cfg", "yolov5n.yaml", "yolov5n-se.yaml", "--seeds", 1, "--epochs", 1, "--data",
        tiny_data, "--img", 160, "--batch-size", 8, "--workers", 0)
    assert (work / "runs" / "compare" / "exp" / "summary.csv").is_file()
    image = next((Path(yaml.safe_load(tiny_data.read_text())["path"]) / "images" / "val").glob("*.jpg"))
    cli(installed, "maps", "--weights", best, "--source", image, "--imgsz", 160)
    assert len(list((work / "runs" / "maps" / "exp").glob("*.png"))) == 3
    if "onnxscript" in missing_packages("onnx"):  # ultralytics < 8.3.215 under torch >= 2.9, without onnxscript
        out = cli(installed, "export", "--weights", best, "--imgsz", 160, check=False)
        assert out.returncode == 2 and out.stderr.strip().endswith("needs onnxscript: pip install onnxscript")
    else:
        out = cli(installed, "export", "--weights", best, "--imgsz", 160)
        assert best.with_suffix(".onnx").is_file() and "Exported" in out.stdout
    cli(installed, "tiling", "--data", tiny_data, "--size", 100, "--out", tmp_path / "tiles")
    assert (tmp_path / "tiles" / "data.yaml").is_file()
    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps({"images": [{"id": 1, "file_name": image.name, "width": 160, "height": 160}],
                                "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 10, 20, 20]}],
                                "categories": [{"id": 7, "name": "thing"}]}))
    cli(installed, "convert", "coco", "--json", coco, "--images", image.parent, "--out", tmp_path / "converted")
    assert (tmp_path / "converted" / "labels" / "train" / f"{image.stem}.txt").read_text().startswith("0 ")
    table = cli(installed, "compat").stdout
    off = {feature.title for key, feature in compat.FEATURES.items() if compat.missing(key)}  # none on 8.4.126+
    assert "attention blocks in model YAMLs" in table
    assert {line.split("OFF", 1)[1].strip().split(" (works on")[0] for line in table.splitlines() if "OFF" in line} == off


def test_the_classic_scripts_are_thin_shims():
    for script in ("train.py", "val.py", "detect.py"):
        text = (REPO / script).read_text()
        assert len([line for line in text.splitlines() if line.strip()]) <= 8 and f'main(script="{script}")' in text
