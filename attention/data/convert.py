"""Convert real datasets to YOLO format: VisDrone2019-DET and COCO-JSON.

    yolov5-attention convert visdrone --src VisDrone2019-DET-train VisDrone2019-DET-val --out datasets/visdrone
    yolov5-attention convert coco --json instances_train.json --images train_images --out datasets/mine

Both write out/images/<split>/, out/labels/<split>/ and out/data.yaml (each further split converted
into the same --out is added to it), so training is one more command: python train.py --data out/data.yaml.

VisDrone2019-DET (https://github.com/VisDrone/VisDrone-Dataset): one annotations/<image>.txt per
image, lines `bbox_left,bbox_top,bbox_width,bbox_height,score,object_category,truncation,occlusion`.
Categories 1-10 (pedestrian, people, bicycle, car, van, truck, tricycle, awning-tricycle, bus,
motor) become classes 0-9, as in the official YOLO conversions. Category 0 marks "ignored regions"
(score 0: areas the benchmark does not evaluate, such as dense crowds far away); category 11
("others") is dropped, as those conversions drop it. Ignored regions are never labels. By default
they are also blacked out in the image, so whatever they hold is neither a positive nor a negative
for training (unlabelled objects there would otherwise teach the model to miss them); images
without ignored regions are copied unchanged. --keep-ignored copies every image unchanged.

COCO-JSON: category ids are remapped to contiguous classes 0..K-1 in sorted id order (names from the
JSON), iscrowd boxes are skipped, boxes [x, y, w, h] are clipped to the image and normalised, and
images without annotations get empty label files (background images).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

from attention.data.listing import is_image
from attention.errors import MissingFileError, UserError

VISDRONE_NAMES = ("pedestrian", "people", "bicycle", "car", "van", "truck", "tricycle", "awning-tricycle",
                  "bus", "motor")
VISDRONE_IGNORED, VISDRONE_OTHERS = 0, 11


# ----------------------------------------------------------------------------- shared


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image header."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except OSError as e:
        raise UserError(f"{path}: not a readable image ({e})") from None


def _yolo_line(cls: int, x: float, y: float, w: float, h: float, width: int, height: int) -> str | None:
    """One YOLO line for a pixel box (left, top, w, h) clipped to the image; None if nothing is left."""
    x0, y0 = max(x, 0.0), max(y, 0.0)
    x1, y1 = min(x + w, float(width)), min(y + h, float(height))
    if x1 <= x0 or y1 <= y0:
        return None
    return (f"{cls} {(x0 + x1) / 2 / width:.6f} {(y0 + y1) / 2 / height:.6f} "
            f"{(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}")


def _copy(src: Path, dst: Path) -> None:
    """Hard link when possible (same file system, no extra space), else copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _split_of(name: str, default: str = "train") -> str:
    """'VisDrone2019-DET-val' -> val, 'instances_test2017.json' -> test, else default."""
    low = name.lower()
    for split in ("val", "test"):
        if split in low:
            return split
    return default


def _write_data_yaml(out: Path, split: str, names: Sequence[str]) -> Path:
    """Create or extend out/data.yaml with this split; names must agree with splits converted before."""
    path = out / "data.yaml"
    cfg: dict[str, Any] = yaml.safe_load(path.read_text()) if path.is_file() else {}
    named = dict(enumerate(names))
    if cfg.get("names") and cfg["names"] != named:
        raise UserError(f"{path} already lists other class names; convert into another --out")
    cfg = {"path": str(out.resolve()), **{k: v for k, v in cfg.items() if k != "path"}}
    cfg[split] = f"images/{split}"
    cfg.setdefault("train", cfg.get("val", f"images/{split}"))  # ultralytics needs both keys
    cfg.setdefault("val", cfg["train"])
    cfg["names"] = named
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


# ----------------------------------------------------------------------------- VisDrone


def parse_visdrone(path: Path) -> tuple[list[tuple[int, int, int, int, int]], list[tuple[int, int, int, int]]]:
    """Objects (class 0-9, left, top, w, h) and ignored regions (left, top, w, h) of one annotation file."""
    objects, ignored = [], []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        fields = [f.strip() for f in line.strip().rstrip(",").split(",")]
        if fields == [""]:
            continue
        try:
            if len(fields) < 6:
                raise ValueError
            x, y, w, h, score, cat = (int(float(v)) for v in fields[:6])
        except ValueError:
            raise UserError(
                f"{path}:{n}: expected 'bbox_left,bbox_top,bbox_width,bbox_height,score,object_category,"
                f"truncation,occlusion', got {line.strip()!r}"
            ) from None
        if not 0 <= cat <= VISDRONE_OTHERS:
            raise UserError(f"{path}:{n}: object_category must be 0-11, got {cat}")
        if cat == VISDRONE_IGNORED or score == 0:
            ignored.append((x, y, w, h))
        elif cat != VISDRONE_OTHERS:
            objects.append((cat - 1, x, y, w, h))
    return objects, ignored


def convert_visdrone(
    src: str | Path | Sequence[str | Path], out: str | Path, split: str | None = None, blackout: bool = True
) -> Path:
    """Convert VisDrone2019-DET folder(s) (images/, annotations/) into out; returns out/data.yaml."""
    srcs = [Path(src)] if isinstance(src, (str, Path)) else [Path(s) for s in src]
    for s in srcs:  # check every source before writing anything
        if not s.is_dir():
            raise MissingFileError(f"VisDrone source folder not found: {s}")
        for sub in ("images", "annotations"):
            if not (s / sub).is_dir():
                raise MissingFileError(f"VisDrone source folder {s} has no {sub}/ folder")
    out = Path(out)
    data = out / "data.yaml"
    for s in srcs:
        sp = split or _split_of(s.name)
        images, labels = out / "images" / sp, out / "labels" / sp
        labels.mkdir(parents=True, exist_ok=True)
        images.mkdir(parents=True, exist_ok=True)
        n_img = n_obj = n_ign = 0
        for image in sorted(p for p in (s / "images").iterdir() if is_image(p)):
            ann = s / "annotations" / f"{image.stem}.txt"
            objects, ignored = parse_visdrone(ann) if ann.is_file() else ([], [])
            width, height = _image_size(image)
            lines = [ln for c, *box in objects if (ln := _yolo_line(c, *box, width, height))]
            (labels / f"{image.stem}.txt").write_text("".join(f"{ln}\n" for ln in lines))
            if blackout and ignored:
                _blackout(image, images / image.name, ignored)
            else:
                _copy(image, images / image.name)
            n_img, n_obj, n_ign = n_img + 1, n_obj + len(lines), n_ign + len(ignored)
        what = "blacked out" if blackout else "left in the images"
        print(f"{s} -> {images.parent.parent} ({sp}): {n_img} images, {n_obj} boxes, {n_ign} ignored regions {what}")
        data = _write_data_yaml(out, sp, VISDRONE_NAMES)
    print(f"Train with: python train.py --data {data}")
    return data


def _blackout(src: Path, dst: Path, regions: Iterable[tuple[int, int, int, int]]) -> None:
    """Copy an image with the given (left, top, w, h) regions painted black."""
    import cv2

    img = cv2.imread(str(src))
    if img is None:
        raise UserError(f"{src}: not a readable image")
    for x, y, w, h in regions:
        img[max(y, 0) : max(y + h, 0), max(x, 0) : max(x + w, 0)] = 0
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if dst.suffix.lower() in {".jpg", ".jpeg"} else []
    if not cv2.imwrite(str(dst), img, params):
        raise OSError(f"could not write {dst}")


# ----------------------------------------------------------------------------- COCO-JSON


def convert_coco(json_path: str | Path, images: str | Path, out: str | Path, split: str | None = None) -> Path:
    """Convert one COCO-JSON annotation file and its image folder into out; returns out/data.yaml."""
    json_path, images, out = Path(json_path), Path(images), Path(out)
    if not json_path.is_file():
        raise MissingFileError(f"COCO JSON not found: {json_path}")
    if not images.is_dir():
        raise MissingFileError(f"COCO image folder not found: {images}")
    try:
        coco = json.loads(json_path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{json_path}: not valid JSON ({e})") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco, dict) or not isinstance(coco.get(key), list):
            raise UserError(f"{json_path}: a COCO detection file needs a '{key}' list")
    cats = sorted(coco["categories"], key=lambda c: c["id"])
    to_class = {c["id"]: i for i, c in enumerate(cats)}
    names = [str(c.get("name", c["id"])) for c in cats]
    imgs = {}
    for i, im in enumerate(coco["images"]):
        try:
            imgs[im["id"]] = (str(im["file_name"]), int(im["width"]), int(im["height"]))
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{json_path}: images[{i}] needs id, file_name, width and height") from None
    lines: dict[Any, list[str]] = {k: [] for k in imgs}
    crowd = 0
    for i, a in enumerate(coco["annotations"]):
        try:
            x, y, w, h = (float(v) for v in a["bbox"])
            image_id, cat = a["image_id"], a["category_id"]
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{json_path}: annotations[{i}] needs image_id, category_id and bbox [x, y, w, h]") from None
        if image_id not in imgs:
            raise UserError(f"{json_path}: annotations[{i}] refers to image_id {image_id}, not in 'images'")
        if cat not in to_class:
            raise UserError(f"{json_path}: annotations[{i}] refers to category_id {cat}, not in 'categories'")
        if a.get("iscrowd", 0):
            crowd += 1
            continue
        _, width, height = imgs[image_id]
        if line := _yolo_line(to_class[cat], x, y, w, h, width, height):
            lines[image_id].append(line)
    sp = split or _split_of(json_path.stem)
    n_img = n_obj = 0
    for image_id, (file_name, _, _) in imgs.items():
        src = images / file_name
        if not src.is_file():
            raise MissingFileError(f"image of {json_path} not found: {src}")
        rel = Path(file_name)
        _copy(src, out / "images" / sp / rel)
        label = (out / "labels" / sp / rel).with_suffix(".txt")
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("".join(f"{ln}\n" for ln in lines[image_id]))
        n_img, n_obj = n_img + 1, n_obj + len(lines[image_id])
    data = _write_data_yaml(out, sp, names)
    print(f"{json_path} -> {out} ({sp}): {n_img} images, {n_obj} boxes, {len(names)} classes, {crowd} crowd boxes skipped")
    print(f"Train with: python train.py --data {data}")
    return data
