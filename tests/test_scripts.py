"""train.py, val.py and detect.py end to end, as a user runs them, on a tiny generated dataset."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from conftest import REPO, data_yaml

ENV = {**os.environ, "YOLO_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def run(script: str, *args, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(REPO / script), *map(str, args)], cwd=cwd, env=ENV,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


TRAIN = ("--epochs", 1, "--img", 160, "--batch-size", 8, "--workers", 0)


@pytest.fixture(scope="session")
def trained(tiny_data, tmp_path_factory) -> Path:
    """A CBAM variant trained for one epoch by train.py: its run folder."""
    work = tmp_path_factory.mktemp("work")
    run("train.py", "--cfg", "yolov5n-cbam.yaml", "--data", tiny_data, *TRAIN, cwd=work)
    return work / "runs" / "train" / "exp"


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return [{k.strip(): v.strip() for k, v in row.items()} for row in csv.DictReader(fh)]


def test_train_writes_weights_results_and_plots(trained):
    assert (trained / "weights" / "best.pt").stat().st_size > 1e6
    assert (trained / "weights" / "last.pt").is_file()
    rows = read_csv(trained / "results.csv")
    assert len(rows) == 1 and rows[0]["epoch"] == "1"
    for key in ("metrics/precision(B)", "metrics/recall(B)", "metrics/mAP50(B)", "metrics/mAP50-95(B)"):
        assert 0.0 <= float(rows[0][key]) <= 1.0
    assert float(rows[0]["train/box_loss"]) > 0
    assert list(trained.glob("*.jpg")) or list(trained.glob("*.png"))


def test_checkpoint_with_blocks_reloads_in_a_fresh_process(trained):
    code = (
        "import attention, torch; from ultralytics import YOLO; "
        f"m = YOLO(r'{trained / 'weights' / 'best.pt'}'); "
        "blocks = [x for x in m.model.modules() if type(x) is attention.get('CBAM')]; "
        "assert len(blocks) == 3, blocks; "
        "r = m.predict(torch.zeros(1, 3, 160, 160), verbose=False); print('ok', len(r))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0 and "ok 1" in proc.stdout, proc.stderr[-3000:]


def test_val_scores_per_class_and_overall(trained, tiny_data, tmp_path):
    proc = run("val.py", "--weights", trained / "weights" / "best.pt", "--data", tiny_data, "--img", 160, cwd=tmp_path)
    rows = read_csv(tmp_path / "runs" / "val" / "exp" / "results.csv")
    assert [r["class"] for r in rows] [0] == "all"
    assert {r["class"] for r in rows[1:]} <= {"vehicle", "person", "boat"} and len(rows) >= 2
    assert int(rows[0]["instances"]) == sum(int(r["instances"]) for r in rows[1:]) > 0
    for r in rows:
        assert all(0.0 <= float(r[k]) <= 1.0 for k in ("P", "R", "mAP50", "mAP50-95"))
        assert float(r["mAP50-95"]) <= float(r["mAP50"]) + 1e-9
    assert "mAP50-95" in proc.stdout and (tmp_path / "runs" / "val" / "exp" / "results.md").is_file()
    saved = json.loads((tmp_path / "runs" / "val" / "exp" / "results.json").read_text())
    coco = saved["coco"]
    assert set(coco) >= {"AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR"}
    assert all(-1 <= v <= 1 for v in coco.values()) and coco["AP_large"] == -1  # no large objects in the set
    assert "AP_small" in proc.stdout
    # the scoring conventions under the table: bins with their closed end, and the detection budget
    assert saved["max_det"] == 300 and saved["size_bins"] == "coco"
    assert "small 0-32, medium 32-96, large 96-inf px (sqrt of box area; low <= size < high); at most 300 " \
           "detections per image (--max-det)" in proc.stdout


def test_val_compares_several_checkpoints_in_one_table(trained, tiny_data, tmp_path):
    weights = [trained / "weights" / "best.pt", trained / "weights" / "last.pt"]
    proc = run("val.py", "--weights", *weights, "--data", tiny_data, "--img", 160, "--size-bins", "tiny",
               "--max-det", 500, cwd=tmp_path)
    exp = tmp_path / "runs" / "val" / "exp"
    rows = read_csv(exp / "compare.csv")
    assert [r["variant"] for r in rows] == ["yolov5n-cbam (exp/best)", "yolov5n-cbam (exp/last)"]
    for r in rows:
        assert float(r["latency(ms)"]) > 0 and float(r["params(M)"]) > 2
        assert {"mAP50", "mAP50-95", "AP_very_tiny", "AP_tiny", "AP_small", "AP_medium"} <= set(r)
    assert rows[0]["mAP50-95"] == rows[1]["mAP50-95"]  # best.pt and last.pt of a 1-epoch run are the same model
    image = cv2.imread(str(exp / "compare.png"))
    assert image is not None and image.shape[0] > 100 and image.std() > 0
    assert (exp / "compare.md").read_text().startswith("| variant |") and "latency" in proc.stdout
    assert "at most 500 detections per image (--max-det)" in (exp / "compare.md").read_text()
    assert "at most 500 detections per image (--max-det)" in proc.stdout


def test_detect_on_a_folder_saves_images_and_labels(trained, tiny_data, tmp_path):
    images = Path(yaml.safe_load(tiny_data.read_text())["path"]) / "images" / "val"
    run("detect.py", "--weights", trained / "weights" / "best.pt", "--source", images, "--img", 160,
        "--conf-thres", 0.001, "--save-txt", "--save-conf", cwd=tmp_path)
    out = tmp_path / "runs" / "detect" / "exp"
    assert sorted(p.name for p in out.glob("*.jpg")) == sorted(p.name for p in images.glob("*.jpg"))
    labels = list((out / "labels").glob("*.txt"))
    assert labels, "an untrained-ish model at conf 0.001 still finds boxes"
    for line in labels[0].read_text().splitlines():
        cls, *box, conf = line.split()
        assert int(cls) in (0, 1, 2) and len(box) == 4 and all(0 <= float(v) <= 1 for v in box)
        assert 0.001 <= float(conf) <= 1


def test_detect_on_a_video(trained, tmp_path):
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (160, 160))
    for k in range(4):
        writer.write(np.full((160, 160, 3), 40 * k, np.uint8))
    writer.release()
    run("detect.py", "--weights", trained / "weights" / "best.pt", "--source", video, "--img", 160, cwd=tmp_path)
    saved = [p for p in (tmp_path / "runs" / "detect" / "exp").iterdir() if p.suffix in {".mp4", ".avi"}]
    assert saved and cv2.VideoCapture(str(saved[0])).get(cv2.CAP_PROP_FRAME_COUNT) == 4


def test_several_cfgs_are_trained_alike_and_compared(tiny_data, tmp_path):
    proc = run("train.py", "--cfg", "yolov5n.yaml", "yolov5n-se.yaml", "--data", tiny_data, *TRAIN, cwd=tmp_path)
    exp = tmp_path / "runs" / "train" / "exp"
    rows = read_csv(exp / "compare.csv")
    assert [r["variant"] for r in rows] == ["yolov5n", "yolov5n-se"]
    assert float(rows[1]["params(M)"]) > float(rows[0]["params(M)"])  # SE adds weights
    assert (exp / "yolov5n" / "weights" / "best.pt").is_file() and (exp / "yolov5n-se" / "weights" / "best.pt").is_file()
    assert "yolov5n-se" in proc.stdout and "mAP50-95" in proc.stdout


def test_corrupt_image_and_malformed_label_are_skipped(tiny_data, tmp_path):
    src = Path(yaml.safe_load(tiny_data.read_text())["path"])
    root = tmp_path / "broken"
    for sub in ("images", "labels"):
        for split in ("train", "val"):
            (root / sub / split).mkdir(parents=True)
            for p in (src / sub / split).iterdir():
                if p.suffix != ".cache":
                    (root / sub / split / p.name).write_bytes(p.read_bytes())
    images = sorted((root / "images" / "train").glob("*.jpg"))
    images[0].write_bytes(b"this is not a jpeg")
    (root / "labels" / "train" / f"{images[1].stem}.txt").write_text("0 0.5 0.5\nnot a label line\n")
    proc = run("train.py", "--cfg", "yolov5n.yaml", "--data", data_yaml(root, tmp_path / "broken.yaml"),
               *TRAIN, cwd=tmp_path)
    log = proc.stdout + proc.stderr
    assert images[0].name in log and images[1].name in log  # each bad file is named in a warning
    assert (tmp_path / "runs" / "train" / "exp" / "weights" / "last.pt").is_file()


@pytest.mark.parametrize(
    "script, args, message",
    [
        ("train.py", ["--data", "missing.yaml"], "train.py: error: data YAML not found: missing.yaml"),
        ("train.py", ["--cfg", "yolov5n-nope.yaml"], "train.py: error: model YAML not found: yolov5n-nope.yaml"),
        ("train.py", ["--hyp", "nope.yaml"], "train.py: error: hyperparameter YAML not found: nope.yaml"),
        ("val.py", ["--weights", "missing.pt"], "val.py: error: weights not found: missing.pt"),
        ("detect.py", ["--weights", "missing.pt", "--source", "."], "detect.py: error: weights not found: missing.pt"),
    ],
)
def test_missing_files_get_one_line_errors(tmp_path, script, args, message):
    proc = run(script, *args, cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(message) and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_a_release_name_that_cannot_be_downloaded_is_one_line(tmp_path, monkeypatch, capsys):
    from ultralytics.utils import downloads

    import attention.adapter.weights as W
    from attention.cli.main import main

    def offline(file, *args, **kwargs):  # what ultralytics raises with no network, without touching one
        raise ConnectionError(f"❌  Download failure for https://github.com/ultralytics/assets/releases/download/"
                              f"v8.4.0/{file}. Environment may be offline.")

    assert "yolov5su.pt" in downloads.GITHUB_ASSETS_NAMES
    monkeypatch.setattr(W, "attempt_download_asset", offline)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["--weights", "yolov5su.pt", "--cfg", "yolov5s-cbam.yaml"], script="train.py")
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith("train.py: error: weights yolov5su.pt: not on this machine and not downloadable now "
                          "(Download failure for https://github.com/ultralytics/assets/releases/download/v8.4.0/")
    assert err.endswith("pass its path: --weights path/to/yolov5su.pt")


@pytest.mark.parametrize(
    "row, message",
    [
        ("[-1, 1, CBM, []]", "unknown module 'CBM' (did you mean CBAM?); registered modules: C3Attn, CA, CBAM, "),
        ("[-1, 1, CBAM, [8, 5]]", "CBAM[8, 5] cannot be built on 256 channels: CBAM: kernel must be 3 or 7, got 5"),
    ],
)
def test_bad_model_yaml_names_the_row(tiny_data, tmp_path, row, message):
    text = (REPO / "models" / "yolov5.yaml").read_text().replace("- [-1, 1, SPPF, [1024, 5]] # 9",
                                                                 f"- {row}\n  - [-1, 1, SPPF, [1024, 5]]")
    cfg = tmp_path / "yolov5n-bad.yaml"
    cfg.write_text(text)
    proc = run("train.py", "--cfg", cfg, "--data", tiny_data, *TRAIN, cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(f"train.py: error: row 9 of {cfg} (scale n): {message}"), proc.stderr[-2000:]


def test_weights_alone_fine_tune_the_checkpoint_architecture(trained, tiny_data, tmp_path):
    run("train.py", "--weights", trained / "weights" / "best.pt", "--data", tiny_data, *TRAIN, cwd=tmp_path)
    code = ("import attention; from ultralytics import YOLO; "
            f"m = YOLO(r'{tmp_path / 'runs' / 'train' / 'exp' / 'weights' / 'last.pt'}'); "
            "print(sum(type(x) is attention.get('CBAM') for x in m.model.modules()))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=ENV, capture_output=True, text=True)
    assert proc.stdout.strip().splitlines()[-1] == "3", proc.stderr[-2000:]


def test_interrupted_run_resumes_from_its_last_epoch(tiny_data, tmp_path):
    # Stop a 2-epoch run right after epoch 1 is saved, as a crash would, then --resume it.
    code = f"""
import attention
from ultralytics import YOLO
def crash(trainer):
    if trainer.epoch == 0:
        raise KeyboardInterrupt
m = YOLO(r'{REPO / "models" / "yolov5n-se.yaml"}')
m.add_callback('on_model_save', crash)
m.train(data=r'{tiny_data}', epochs=2, imgsz=160, batch=8, workers=0, project=r'{tmp_path / "runs"}', name='exp')
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=ENV, capture_output=True, text=True)
    assert proc.returncode != 0 and "KeyboardInterrupt" in proc.stderr
    exp = tmp_path / "runs" / "exp"
    assert len(read_csv(exp / "results.csv")) == 1
    run("train.py", "--resume", exp / "weights" / "last.pt", cwd=tmp_path)
    rows = read_csv(exp / "results.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]


def test_val_on_a_split_the_data_lacks(trained, tiny_data, tmp_path):
    proc = run("val.py", "--weights", trained / "weights" / "best.pt", "--data", tiny_data, "--task", "test",
               cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"val.py: error: --task test: the data YAML {tiny_data} has no 'test' split"
