"""Tile a large-image YOLO dataset into overlapping crops, so small objects train at native resolution.

    yolov5-attention tiling --data big.yaml --size 640 --overlap 0.2 --min-visible 0.3 --out datasets/big-tiles

Every image of every split in the data YAML (train, val, test) is cut into size x size tiles that
overlap by `overlap` of a tile; the last tile of a row or column is aligned to the image border, so
edges are covered (the same windows sahi slices at inference: attention.inference.slicing). Each label is
clipped to each tile; a fragment whose visible area is less than `min_visible` of its full box
area is dropped. Writes images/<split>/<stem>_<x0>_<y0>.<ext>, labels/<split>/... and <out>/data.yaml.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import yaml

from attention.data.listing import SPLITS, data_dict, label_file, list_images
from attention.data.prepare import prepare_data
from attention.errors import UserError


def windows(width: int, height: int, size: int, overlap: float) -> list[tuple[int, int, int, int]]:
    """Tile windows (x0, y0, x1, y1) covering the image; the last row and column end at the border."""
    from sahi.slicing import get_slice_bboxes

    if size < 1 or not 0 <= overlap < 1:
        raise UserError(f"tile size must be >= 1 and overlap in [0, 1), got {size}, {overlap}")
    return [tuple(map(int, w)) for w in get_slice_bboxes(height, width, size, size, False, overlap, overlap)]


def clip_boxes(
    boxes: np.ndarray, window: Sequence[int], min_visible: float = 0.3
) -> np.ndarray:
    """Boxes (cls, x0, y0, x1, y1 in image pixels) clipped to window, in window pixels.

    A box keeps its clipped part when that part is at least min_visible of its full area.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 5)
    wx0, wy0, wx1, wy1 = window
    x0, y0 = np.maximum(boxes[:, 1], wx0), np.maximum(boxes[:, 2], wy0)
    x1, y1 = np.minimum(boxes[:, 3], wx1), np.minimum(boxes[:, 4], wy1)
    visible = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    full = (boxes[:, 3] - boxes[:, 1]) * (boxes[:, 4] - boxes[:, 2])
    keep = (visible > 0) & (visible >= min_visible * full - 1e-9)
    return np.stack([boxes[:, 0], x0 - wx0, y0 - wy0, x1 - wx0, y1 - wy0], 1)[keep]


def read_labels(path: Path, width: int, height: int) -> np.ndarray:
    """YOLO label file -> (N, 5) cls, x0, y0, x1, y1 in pixels; malformed lines name file and line."""
    rows = []
    if path.is_file():
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                c, cx, cy, w, h = (float(v) for v in line.split()[:5])
                if len(line.split()) != 5:
                    raise ValueError
            except ValueError:
                raise UserError(f"{path}:{n}: expected 'class cx cy w h', got {line.strip()!r}") from None
            rows.append([c, (cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height])
    return np.array(rows, np.float64).reshape(-1, 5)


def label_lines(boxes: np.ndarray, width: int, height: int) -> str:
    """(N, 5) cls, x0, y0, x1, y1 pixels -> YOLO lines normalised to width x height."""
    lines = [f"{int(c)} {(x0 + x1) / 2 / width:.6f} {(y0 + y1) / 2 / height:.6f} "
             f"{(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}" for c, x0, y0, x1, y1 in boxes]
    return "".join(line + "\n" for line in lines)


def tile_image(
    image: Path, out_images: Path, out_labels: Path, size: int, overlap: float, min_visible: float,
    drop_empty: bool = False,
) -> tuple[int, int]:
    """Write the tiles of one image and their labels; returns (tiles written, boxes written)."""
    img = cv2.imread(str(image), cv2.IMREAD_UNCHANGED)
    if img is None:
        print(f"WARNING: skipping unreadable image {image}", file=sys.stderr)
        return 0, 0
    h, w = img.shape[:2]
    boxes = read_labels(label_file(image), w, h)
    n_tiles = n_boxes = 0
    for win in windows(w, h, size, overlap):
        x0, y0, x1, y1 = win
        clipped = clip_boxes(boxes, win, min_visible)
        if drop_empty and not len(clipped):
            continue
        name = f"{image.stem}_{x0}_{y0}"
        ext = image.suffix.lower()
        params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext in {".jpg", ".jpeg"} else []
        if not cv2.imwrite(str(out_images / f"{name}{ext}"), img[y0:y1, x0:x1], params):
            raise OSError(f"could not write {out_images / (name + ext)}")
        (out_labels / f"{name}.txt").write_text(label_lines(clipped, x1 - x0, y1 - y0))
        n_tiles += 1
        n_boxes += len(clipped)
    return n_tiles, n_boxes


def tile_dataset(
    data: str | Path, out: str | Path, size: int = 640, overlap: float = 0.2, min_visible: float = 0.3,
    drop_empty: bool = False,
) -> Path:
    """Tile every split of a YOLO data YAML into out/; returns out/data.yaml."""
    resolved = Path(prepare_data(data))  # generates an embedded set if asked; resolves a relative path
    cfg = yaml.safe_load(resolved.read_text())
    splits = data_dict(resolved)  # the splits as ultralytics resolves them
    windows(size, size, size, overlap)  # validate before writing anything
    if not 0 <= min_visible <= 1:
        raise UserError(f"--min-visible must be in [0, 1], got {min_visible}")
    out = Path(out).resolve()
    tiled = {k: v for k, v in cfg.items() if k not in {"generate", "download", *SPLITS}}
    tiled["path"] = str(out)
    for split in SPLITS:
        if not cfg.get(split):
            continue
        images, labels = out / "images" / split, out / "labels" / split
        images.mkdir(parents=True, exist_ok=True)
        labels.mkdir(parents=True, exist_ok=True)
        n_img = n_tiles = n_boxes = 0
        for image in map(Path, list_images(splits[split], splits.get("path"))):
            t, b = tile_image(image, images, labels, size, overlap, min_visible, drop_empty)
            n_img, n_tiles, n_boxes = n_img + 1, n_tiles + t, n_boxes + b
        tiled[split] = f"images/{split}"
        print(f"{split}: {n_img} images -> {n_tiles} tiles of {size}px, {n_boxes} boxes")
    tiled["tiling"] = {"source": str(Path(data)), "size": size, "overlap": overlap, "min_visible": min_visible}
    path = out / "data.yaml"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(yaml.safe_dump(tiled, sort_keys=False))
    os.replace(tmp, path)
    print(f"Tiled dataset written to {out}; train on it with --data {path}")
    return path
