"""Bad data: every kind of broken image or label file is left out or kept, listed once and counted;
an empty split, a split with nothing usable or a dataset without labels stops with one line."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from attention.adapter import scan
from attention.data.audit import BACKGROUND, KEPT, LEFT_OUT, DataError, check_data
from conftest import REPO, data_yaml

ENV = {**os.environ, "YOLO_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
TRAIN = ("--epochs", 1, "--img", 160, "--batch-size", 8, "--workers", 0)


def _copy_tiny(tiny_data: Path, root: Path) -> Path:
    """The tiny dataset's images and labels under root (no caches)."""
    src = Path(yaml.safe_load(tiny_data.read_text())["path"])
    for sub in ("images", "labels"):
        for split in ("train", "val"):
            (root / sub / split).mkdir(parents=True)
            for p in (src / sub / split).iterdir():
                (root / sub / split / p.name).write_bytes(p.read_bytes())
    return root


def _segments(jpeg: bytes) -> dict[int, int]:
    """JPEG marker -> offset of its first occurrence, up to the start of scan."""
    out, i = {}, 2
    while i < len(jpeg):
        marker, length = jpeg[i + 1], int.from_bytes(jpeg[i + 2 : i + 4], "big")
        out.setdefault(marker, i)
        if marker == 0xDA:
            return out
        i += 2 + length
    return out


def _bad_scan_header(jpeg: bytes) -> bytes:
    """A JPEG whose scan names a colour component that does not exist: PIL opens and verifies it,
    ultralytics' check passes it, OpenCV cannot decode it (the case that stops training mid-epoch)."""
    b = bytearray(jpeg)
    b[_segments(jpeg)[0xDA] + 5] = 9
    return bytes(b)


def _bad_png(jpeg: bytes) -> bytes:
    """A PNG whose compressed pixels are garbage behind a correct checksum: PIL verifies it, OpenCV cannot decode it."""
    png = bytearray(cv2.imencode(".png", cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR))[1])
    i = png.find(b"IDAT")
    n = struct.unpack(">I", png[i - 4 : i])[0]
    data = bytes(png[i + 4 : i + 14]) + b"\x00" * 190 + bytes(png[i + 204 : i + 4 + n])
    png[i + 4 : i + 4 + n] = data
    png[i + 4 + n : i + 8 + n] = struct.pack(">I", zlib.crc32(b"IDAT" + data))
    return bytes(png)


# name -> (split, image bytes from the good image (or None: unchanged), label text from the good label
# (None: no label file), the reason the report must give (None: nothing to report))
CASES = {
    "truncated": ("train", lambda im: im[: len(im) // 2], lambda lb: lb, "rejected image"),
    "no_end_marker": ("train", lambda im: im[:-2], lambda lb: lb, "rejected image"),
    "trailing_bytes": ("train", lambda im: im + b"\x00" * 7, lambda lb: lb, "restored JPEG"),
    "zero_bytes": ("train", lambda im: b"", lambda lb: lb, "empty image file"),
    "random_bytes": ("train", lambda im: b"\x00" + np.random.default_rng(0).bytes(4000), lambda lb: lb,
                     "not an image"),
    "text_as_jpg": ("train", lambda im: b"this is a text file, not a picture\n", lambda lb: lb, "not an image"),
    "bad_scan": ("train", _bad_scan_header, lambda lb: lb, "undecodable image"),
    "too_small": ("train", lambda im: cv2.imencode(".jpg", np.zeros((6, 6, 3), np.uint8))[1].tobytes(),
                  lambda lb: lb, "rejected image"),
    "words": ("train", None, lambda lb: lb + "car 0.5 0.5 0.1 0.1\n", "malformed label line"),
    "four_columns": ("train", None, lambda lb: lb + "0 0.5 0.5 0.1\n", "wrong column count"),
    "six_columns": ("train", None, lambda lb: "0 0.5 0.5 0.1 0.1 1\n", "wrong column count"),
    "class_7": ("train", None, lambda lb: lb + "7 0.5 0.5 0.1 0.1\n", "bad class id"),
    "class_minus_1": ("train", None, lambda lb: lb + "-1 0.5 0.5 0.1 0.1\n", "bad class id"),
    "outside": ("train", None, lambda lb: lb + "1 1.5 0.5 0.1 0.1\n", "box outside the image"),
    "nan": ("train", None, lambda lb: lb + "2 nan 0.5 0.1 0.1\n", "NaN or inf in labels"),
    "not_text": ("train", None, lambda lb: "\xff\xfe\x00", "unreadable label file"),  # written as latin-1 below
    "box_and_polygon": ("train", None, lambda lb: lb + "0 0.1 0.1 0.2 0.1 0.2 0.2\n", "rejected label"),
    "duplicates": ("train", None, lambda lb: lb + lb.splitlines()[0] + "\n", "duplicate labels"),
    "across_border": ("train", None, lambda lb: lb + "0 0.97 0.5 0.2 0.1\n", "box crosses the border"),
    "zero_size": ("train", None, lambda lb: lb + "1 0.5 0.5 0 0.1\n", "zero-size box"),
    "empty_label": ("train", None, lambda lb: "", "empty label file"),
    "no_label": ("train", None, None, "no label file"),
    "blank_lines": ("train", None, lambda lb: "\n\n" + lb + "  \n\n", None),  # harmless: not reported
    "val_truncated": ("val", lambda im: im[: len(im) // 3], lambda lb: lb, "rejected image"),
    "val_bad_png": ("val", _bad_png, lambda lb: lb, "undecodable image"),
    "val_class_3": ("val", None, lambda lb: lb + "3 0.5 0.5 0.1 0.1\n", "bad class id"),
    "val_ragged": ("val", None, lambda lb: lb + "0 0.5\n", "wrong column count"),
    "val_duplicates": ("val", None, lambda lb: lb + lb, "duplicate labels"),
    "val_empty_label": ("val", None, lambda lb: "", "empty label file"),
}


def fuzz(tiny_data: Path, root: Path) -> tuple[Path, dict[str, tuple[str, str]]]:
    """A copy of the tiny dataset plus one extra file per case; its data YAML and {image path: (split, reason)}."""
    _copy_tiny(tiny_data, root)
    goods = {split: sorted((root / "images" / split).glob("*.jpg"))[0] for split in ("train", "val")}
    expected = {}
    for name, (split, image, label, reason) in CASES.items():
        good = goods[split]
        im = good.read_bytes()
        path = root / "images" / split / f"{name}.{'png' if name.endswith('png') else 'jpg'}"
        path.write_bytes(image(im) if image else im)
        if label:
            text = label((root / "labels" / split / f"{good.stem}.txt").read_text())
            (root / "labels" / split / f"{name}.txt").write_bytes(text.encode("latin-1"))
        if name == "box_and_polygon" and scan.verify(str(path), str(root / "labels" / split / f"{name}.txt"), 3)["ok"]:
            reason = None  # releases before 8.4.1xx accept a label file mixing boxes and polygons
        if reason:
            expected[str(path)] = (split, reason)
    (root / "images" / "train" / "notes.txt").write_text("not an image suffix: ultralytics never lists it\n")
    return data_yaml(root, root.parent / f"{root.name}.yaml"), expected


def expected_counts(expected: dict[str, tuple[str, str]]) -> dict[str, dict[str, int]]:
    counts: dict[str, Counter] = {}
    for split, reason in expected.values():
        counts.setdefault(reason, Counter())[split] += 1
    return {r: dict(c) for r, c in counts.items()}


def test_every_case_is_counted_once_with_its_reason(tiny_data, tmp_path, capfd):
    data, expected = fuzz(tiny_data, tmp_path / "fuzzed")
    checked, report = check_data(str(data), ("train", "val"))
    assert report.counts() == expected_counts(expected)
    files = {e["image"]: e for e in report.files()}
    assert files.keys() == expected.keys()
    for path, (split, reason) in expected.items():
        entry = files[path]
        assert entry["splits"] == [split] and [p["reason"] for p in entry["problems"]] == [reason]
        assert entry["action"] == ("left out" if reason in LEFT_OUT else "kept")
    # the run gets only the usable images; the kept ones are still in it
    cfg = yaml.safe_load(Path(checked).read_text())
    for split in ("train", "val"):
        used = set(Path(cfg[split]).read_text().split())
        base = {str(p) for p in (tmp_path / "fuzzed" / "images" / split).iterdir() if p.suffix in (".jpg", ".png")}
        assert used == {p for p in base if p not in expected or expected[p][1] in KEPT}
    assert report.splits[0].labels > 0 and report.splits[1].labels > 0
    # console: each non-background problem file named once, with its reason
    out = capfd.readouterr().out
    for path, (split, reason) in expected.items():
        assert out.count(path) == (0 if reason in BACKGROUND else 1), path
        if reason not in BACKGROUND:
            assert f"{path}: " in out and reason in out.split(path, 1)[1].splitlines()[0]
    assert f"{len(expected)} problem file(s)" in out
    assert (tmp_path / "fuzzed" / "images" / "train" / "trailing_bytes.jpg").read_bytes()[-2:] == b"\xff\xd9"


def test_a_second_check_reuses_the_saved_audit(tiny_data, tmp_path, monkeypatch):
    import attention.data.audit as audit

    data, expected = fuzz(tiny_data, tmp_path / "fuzzed")
    first = check_data(str(data), ("train", "val"))[1].counts()
    # ultralytics rewrote the JPEG it restored: that changed file voids the saved audit of the train split
    second = check_data(str(data), ("train", "val"))[1].counts()
    assert "restored JPEG" in first and second == {k: v for k, v in first.items() if k != "restored JPEG"}
    monkeypatch.setattr(audit, "check_file", lambda *a: pytest.fail("audited again although nothing changed"))
    assert check_data(str(data), ("train", "val"))[1].counts() == second


def test_a_split_shared_by_train_and_val_lists_each_file_once(tiny_data, tmp_path):
    data, expected = fuzz(tiny_data, tmp_path / "fuzzed")
    cfg = yaml.safe_load(data.read_text()) | {"val": "images/train"}
    data.write_text(yaml.safe_dump(cfg))
    _, report = check_data(str(data), ("train", "val"))
    train = {p for p, (split, _) in expected.items() if split == "train"}
    assert {e["image"] for e in report.files()} == train
    assert all(e["splits"] == ["train", "val"] for e in report.files())
    for reason, by_split in report.counts().items():
        assert by_split["train"] == by_split["val"]


def _unlabelled(tiny_data: Path, root: Path, label: str | None) -> Path:
    data = data_yaml(_copy_tiny(tiny_data, root), root.parent / f"{root.name}.yaml")
    for p in (root / "labels" / "train").iterdir():
        if label is None:
            p.unlink()
        else:
            p.write_text(label)
    return data


def test_empty_split_stops_with_one_line(tiny_data, tmp_path):
    data = data_yaml(_copy_tiny(tiny_data, tmp_path / "d"), tmp_path / "d.yaml")
    for p in (tmp_path / "d" / "images" / "val").iterdir():
        p.unlink()
    with pytest.raises(DataError, match=rf"^data YAML {data}: the val split has no images \(.*images/val\)$"):
        check_data(str(data), ("train", "val"))


@pytest.mark.parametrize("label", ["", None], ids=["empty", "missing"])
def test_no_labels_stop_with_one_line(tiny_data, tmp_path, label):
    data = _unlabelled(tiny_data, tmp_path / "d", label)
    with pytest.raises(DataError, match=rf"^data YAML {data}: no image of the train split has a label: .*labels/train"):
        check_data(str(data), ("train", "val"))


def test_missing_split_folder_stops_with_one_line(tiny_data, tmp_path):
    data = data_yaml(_copy_tiny(tiny_data, tmp_path / "d"), tmp_path / "d.yaml")
    data.write_text(data.read_text().replace("images/train", "images/nowhere"))
    with pytest.raises(DataError, match=rf"^data YAML {data}: the train split: .*images/nowhere does not exist$"):
        check_data(str(data), ("train", "val"))


def test_nothing_usable_stops_with_one_line(tiny_data, tmp_path):
    data = data_yaml(_copy_tiny(tiny_data, tmp_path / "d"), tmp_path / "d.yaml")
    for p in (tmp_path / "d" / "images" / "val").iterdir():
        p.write_bytes(b"")
    with pytest.raises(DataError, match=rf"^data YAML {data}: none of the 8 images of the val split is usable"):
        check_data(str(data), ("train", "val"))


def run(script: str, *args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / script), *map(str, args)], cwd=cwd, env=ENV,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600)


def test_scripts_exit_2_with_one_line_for_an_empty_split_or_no_labels(tiny_data, tmp_path):
    data = data_yaml(_copy_tiny(tiny_data, tmp_path / "d"), tmp_path / "d.yaml")
    for p in (tmp_path / "d" / "images" / "val").iterdir():
        p.unlink()
    proc = run("train.py", "--data", data, *TRAIN, cwd=tmp_path)
    assert proc.returncode == 2 and not (tmp_path / "runs").exists()
    assert proc.stderr.strip() == f"train.py: error: data YAML {data}: the val split has no images " \
                                  f"({tmp_path / 'd' / 'images' / 'val'})", proc.stderr[-2000:]

    data = _unlabelled(tiny_data, tmp_path / "e", "")
    proc = run("train.py", "--data", data, *TRAIN, cwd=tmp_path)
    assert proc.returncode == 2 and not (tmp_path / "runs").exists()
    assert proc.stderr.strip().startswith(f"train.py: error: data YAML {data}: no image of the train split has a label")
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-2000:]


def test_train_and_val_run_on_fuzzed_data_and_report_it(tiny_data, tmp_path):
    data, expected = fuzz(tiny_data, tmp_path / "fuzzed")
    train = run("train.py", "--cfg", "yolov5n.yaml", "--data", data, *TRAIN, cwd=tmp_path)
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    exp = tmp_path / "runs" / "train" / "exp"
    assert (exp / "weights" / "last.pt").is_file() and (exp / "results.csv").is_file()

    val = run("val.py", "--weights", exp / "weights" / "best.pt", "--data", data, "--img", 160, cwd=tmp_path)
    assert val.returncode == 0, val.stdout[-3000:] + val.stderr[-3000:]
    assert (tmp_path / "runs" / "val" / "exp" / "results.csv").is_file()

    want_train = expected_counts(expected)
    want_val = expected_counts({p: v for p, v in expected.items() if v[0] == "val"})
    for folder, want, proc in ((exp, want_train, train), (tmp_path / "runs" / "val" / "exp", want_val, val)):
        report = json.loads((folder / "data_report.json").read_text())
        assert report["counts"] == want
        assert len(report["files"]) == len({e["image"] for e in report["files"]}) == sum(
            sum(c.values()) for c in want.values())
        text = (folder / "data_report.txt").read_text()
        log = proc.stdout + proc.stderr
        for path, (split, reason) in expected.items():
            if split in report["splits"]:
                assert text.count(path) == 1, path
                # once on the console across the whole run, ultralytics' own dataset logs included
                assert log.count(path) == (0 if reason in BACKGROUND else 1), (path, log[-4000:])
