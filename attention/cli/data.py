"""Dataset commands: convert (VisDrone, COCO-JSON), tiling (large images into tiles), sizes (how small are the objects)."""

from __future__ import annotations

import argparse

from attention.data.listing import SPLITS
from attention.data.prepare import EMBEDDED_DATA

CONVERT_HELP = "convert VisDrone2019-DET or COCO-JSON annotations to a YOLO dataset"
TILING_HELP = "cut a large-image dataset into overlapping tiles (labels clipped)"
SIZES_HELP = "object-size shares per split and class, and their histogram"


def add_convert(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="format", required=True)
    v = sub.add_parser("visdrone", help="VisDrone2019-DET folders (images/ + annotations/)")
    v.add_argument("--src", nargs="+", required=True, help="e.g. VisDrone2019-DET-train VisDrone2019-DET-val")
    v.add_argument("--out", required=True, help="output YOLO dataset folder")
    v.add_argument("--split", choices=SPLITS, help="split name (default: from the folder name, else train)")
    v.add_argument("--keep-ignored", action="store_true",
                   help="copy images unchanged instead of blacking out the ignored regions")
    c = sub.add_parser("coco", help="a COCO-JSON annotation file and its image folder")
    c.add_argument("--json", required=True, help="COCO instances JSON")
    c.add_argument("--images", required=True, help="folder the JSON's file_name entries are relative to")
    c.add_argument("--out", required=True, help="output YOLO dataset folder")
    c.add_argument("--split", choices=SPLITS, help="split name (default: from the JSON file name, else train)")


def convert(a: argparse.Namespace) -> object:
    from attention.data.convert import convert_coco, convert_visdrone

    if a.format == "visdrone":
        return convert_visdrone(a.src, a.out, a.split, blackout=not a.keep_ignored)
    return convert_coco(a.json, a.images, a.out, a.split)


def add_tiling(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="YOLO data YAML of the large-image dataset")
    p.add_argument("--size", type=int, default=640, help="tile side in pixels")
    p.add_argument("--overlap", type=float, default=0.2, help="fraction of a tile shared with its neighbour")
    p.add_argument("--min-visible", type=float, default=0.3,
                   help="drop a clipped box when less than this fraction of its area is inside the tile")
    p.add_argument("--drop-empty", action="store_true", help="skip tiles without labels")
    p.add_argument("--out", required=True, help="output folder (a YOLO dataset with data.yaml)")


def tiling(a: argparse.Namespace) -> object:
    from attention.data.tiling import tile_dataset

    return tile_dataset(a.data, a.out, a.size, a.overlap, a.min_visible, a.drop_empty)


def add_sizes(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=EMBEDDED_DATA, help="dataset YAML, default: the embedded tiny-objects set")
    p.add_argument("--size-bins", default="fine", help="object-size bins (px = sqrt of box area, low <= px < high): "
                   "fine (very_tiny 0-8, tiny 8-16, small 16-32, medium 32-96, large 96+; the default), coco "
                   "(small/medium/large), tiny (AI-TOD), or ascending edges in px, e.g. 0,16,32,96,inf")
    p.add_argument("--project", default="runs/sizes")
    p.add_argument("--name", default="exp")
    p.add_argument("--exist-ok", action="store_true")


def sizes(a: argparse.Namespace) -> object:
    from pathlib import Path

    from attention.adapter.api import increment_path
    from attention.data.size_bins import describe, size_bins
    from attention.data.sizes import object_areas, plot, share_rows
    from attention.evaluation.tables import format_table, write_table

    bins = size_bins(a.size_bins)  # a bad spec stops here, before the data is read
    found = object_areas(str(a.data))
    rows = share_rows(found, bins)
    out = increment_path(Path(a.project).resolve() / a.name, exist_ok=a.exist_ok)
    write_table(rows, out / "sizes")
    plot(found, out / "sizes.png", bins)
    print(f"Object sizes in {a.data} ({describe(bins)}):\n{format_table(rows)}\nSaved to {out}")
    return rows
