"""One way to list a split's images and their label files, as ultralytics lists them for training.

A split in a data YAML is a folder (searched recursively), a .txt file listing image paths (relative
lines are relative to the list file), or a list of those. Images are the files whose suffix is in
ultralytics' IMG_FORMATS; the label of .../images/.../x.jpg is .../labels/.../x.txt (img2label_paths).
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any, Sequence

from attention.adapter.api import IMG_FORMATS, check_det_dataset, img2label_paths
from attention.errors import MissingFileError, UserError

SPLITS = ("train", "val", "test")


class DataError(UserError):
    """The dataset cannot be trained or scored on at all (the scripts print it as one line)."""


def is_image(path: str | Path) -> bool:
    return str(path).rpartition(".")[-1].lower() in IMG_FORMATS


def list_images(entries: str | Path | Sequence[str | Path], root: str | Path | None = None) -> list[str]:
    """The image files of a split entry (folder, list file, or a list of those), sorted.

    Relative entries are taken relative to root (the data YAML's `path`).
    """
    found: list[str] = []
    for entry in [entries] if isinstance(entries, (str, Path)) else entries:
        p = Path(entry).expanduser()
        if root is not None and not p.is_absolute():
            p = Path(root) / p
        if p.is_dir():
            found += glob.glob(str(Path(glob.escape(str(p))) / "**" / "*.*"), recursive=True)
        elif p.is_file():
            lines = [x.strip() for x in p.read_text(encoding="utf-8-sig").splitlines() if x.strip()]
            found += [x if Path(x).is_absolute() else str(p.parent / x) for x in lines]
        else:
            raise DataError(f"{p} does not exist")
    return sorted(os.path.normpath(x) for x in found if is_image(x))


def label_files(images: Sequence[str | Path]) -> list[str]:
    """The YOLO label file of each image (it need not exist)."""
    return img2label_paths([str(p) for p in images])


def label_file(image: str | Path) -> Path:
    return Path(label_files([image])[0])


def data_dict(data: str | Path) -> dict[str, Any]:
    """A (prepared) data YAML as ultralytics reads it: split paths made absolute, names as id -> name."""
    try:
        return check_det_dataset(str(data), autodownload=False)
    except FileNotFoundError as e:  # a split folder the YAML names is missing: ultralytics says which, in lines
        raise MissingFileError(f"data YAML {data}: {' '.join(str(e).split())}") from None


def load_split(data: str | Path, split: str) -> tuple[dict[str, Any], list[Path]]:
    """The data dict as ultralytics reads it (paths made absolute) and the image files of one split."""
    if split not in SPLITS:
        raise UserError(f"--task must be train, val or test, got {split!r}")
    cfg = data_dict(data)
    if not cfg.get(split):
        raise UserError(f"--task {split}: the data YAML {data} has no '{split}' split")
    return cfg, [Path(p) for p in list_images(cfg[split], cfg.get("path"))]


def class_names(cfg: dict[str, Any]) -> list[str]:
    """Class names in id order from a data dict ('names' as a list or an id -> name mapping)."""
    names = cfg["names"]
    return [names[i] for i in sorted(names)] if isinstance(names, dict) else list(names)
