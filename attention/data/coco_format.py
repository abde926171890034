"""YOLO label files as COCO ground truth (and back): boxes in native pixels, category id = class + 1."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from PIL import Image

from attention.data.listing import label_file


def image_id(path: Path) -> int | str:
    """The id ultralytics' validator gives an image in its predictions.json."""
    return int(path.stem) if path.stem.isnumeric() else path.stem


def yolo_to_coco(images: Sequence[Path], names: Sequence[str]) -> dict[str, Any]:
    """COCO ground truth from YOLO labels: boxes in native pixels, category id = class + 1.

    Unreadable images are left out (the validator skips them too); malformed label lines are
    skipped, as ultralytics does.
    """
    coco: dict[str, Any] = {
        "images": [], "annotations": [],
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)],
    }
    for path in images:
        try:
            with Image.open(path) as im:
                w, h = im.size
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
