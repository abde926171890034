"""YOLO label files as COCO ground truth (and back): boxes in native pixels, category id = class + 1.

Two conventions make the ground truth meet the predictions of any image set:

- sizes come from the frame ultralytics reads: OpenCV applies a JPEG's EXIF orientation, so a phone or drone
  photo stored sideways (orientation 5-8) is read, labelled and predicted with width and height swapped
  against the stored pixels; PIL's Image.size gives the stored ones;
- an image's id is its path (absolute, normalised), so two files with one stem (a/007.jpg and b/007.jpg, or
  007.jpg and 7.jpg) stay two images. Predictions carry the same id (image_id(path)).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from PIL import Image

from attention.adapter.validator import image_id
from attention.data.listing import label_file

__all__ = ["coco_to_yolo", "frame_size", "image_id", "yolo_to_coco"]

EXIF_ORIENTATION = 0x0112  # the EXIF tag; values 5-8 turn the image by 90 degrees (with or without a flip)


def frame_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of the image as ultralytics (OpenCV) reads it, EXIF orientation applied (OSError: unreadable)."""
    with Image.open(path) as im:
        w, h = im.size
        try:
            turned = im.getexif().get(EXIF_ORIENTATION) in (5, 6, 7, 8)
        except Exception:  # a damaged EXIF block (PIL raises various errors): read as stored
            turned = False
    return (h, w) if turned else (w, h)


def yolo_to_coco(images: Sequence[Path], names: Sequence[str]) -> dict[str, Any]:
    """COCO ground truth from YOLO labels: boxes in pixels of the frame ultralytics reads, category id = class + 1,
    image id = image_id(path).

    Unreadable images are left out (the validator skips them too); malformed label lines are
    skipped, as ultralytics does.
    """
    coco: dict[str, Any] = {
        "images": [], "annotations": [],
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)],
    }
    for path in map(Path, images):
        try:
            w, h = frame_size(path)
        except OSError:
            continue
        iid = image_id(path)
        coco["images"].append({"id": iid, "file_name": path.name, "width": w, "height": h})
        lp = label_file(path)
        for line in lp.read_text().splitlines() if lp.is_file() else []:
            try:
                c, x, y, bw, bh = (float(v) for v in line.split())
            except ValueError:
                continue
            if not (0 <= c < len(names) and bw > 0 and bh > 0):
                continue
            box = [(x - bw / 2) * w, (y - bh / 2) * h, bw * w, bh * h]
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": iid,
                                        "category_id": int(c) + 1, "bbox": box, "area": box[2] * box[3],
                                        "iscrowd": 0})
    return coco


def coco_to_yolo(coco: dict[str, Any]) -> dict[Any, list[tuple[int, float, float, float, float]]]:
    """image id -> YOLO label rows (class, cx, cy, w, h normalised): the inverse of yolo_to_coco."""
    size = {im["id"]: (im["width"], im["height"]) for im in coco["images"]}
    rows: dict[Any, list] = {iid: [] for iid in size}
    for a in coco["annotations"]:
        w, h = size[a["image_id"]]
        x, y, bw, bh = a["bbox"]
        rows[a["image_id"]].append((a["category_id"] - 1, (x + bw / 2) / w, (y + bh / 2) / h, bw / w, bh / h))
    return rows
