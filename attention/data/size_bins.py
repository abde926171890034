"""Object-size bins: the one definition that `sizes`, `val` and `compare` use.

An object's size is the square root of its box area in native pixels (the frame ultralytics reads, EXIF
orientation applied). A bin (low, high) holds the sizes low <= size < high: closed below, open above, so a
box of exactly 32 px is medium, never small and medium at once. Bins are compared on areas (low² <= area
< high²), the way pycocotools selects boxes by area, so that the share in `sizes` and the AP in `val` count
the same boxes.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from attention.errors import UserError

Bins = dict[str, tuple[float, float]]  # name -> (low, high) in px, low <= size < high

# Presets by name. 'tiny' follows AI-TOD below 32 px (its 'very tiny' starts at 2 px; ours at 0 so that no box
# is lost); 'fine' is AI-TOD's tiny bins below 32 px and COCO's above, what `sizes` shows by default.
SIZE_BINS: dict[str, Bins] = {
    "coco": {"small": (0, 32), "medium": (32, 96), "large": (96, math.inf)},
    "tiny": {"very_tiny": (0, 8), "tiny": (8, 16), "small": (16, 32), "medium": (32, math.inf)},
    "fine": {"very_tiny": (0, 8), "tiny": (8, 16), "small": (16, 32), "medium": (32, 96), "large": (96, math.inf)},
}


def size_bins(spec: str | Sequence[float] | Bins) -> Bins:
    """A preset name ('coco', 'tiny', 'fine'), ascending edges in px ('0,16,32,inf') or bins -> {name: (low, high)}."""
    if isinstance(spec, dict):
        return dict(spec)
    if isinstance(spec, str) and spec in SIZE_BINS:
        return dict(SIZE_BINS[spec])
    try:
        edges = [float(x) for x in (spec.split(",") if isinstance(spec, str) else spec)]
    except (TypeError, ValueError):
        edges = []
    if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:])) or edges[0] < 0:
        raise UserError(f"size bins must be {', '.join(SIZE_BINS)} or ascending edges in px like 0,16,32,inf; "
                        f"got {spec!r}")
    return {f"{_px(a)}-{_px(b)}": (a, b) for a, b in zip(edges, edges[1:])}


def _px(v: float) -> str:
    return "inf" if math.isinf(v) else f"{v:g}"


def area_range(low: float, high: float) -> tuple[float, float]:
    """The bin as a closed range of areas [low², just below high²], as pycocotools' areaRng takes it."""
    return low * low, float(np.nextafter(high * high, 0)) if math.isfinite(high) else math.inf


def in_bin(areas: np.ndarray, low: float, high: float) -> np.ndarray:
    """Which boxes (by area in px²) fall in the bin: low² <= area < high²."""
    areas = np.asarray(areas, dtype=float)
    return (areas >= low * low) & (areas < high * high)


def describe(bins: Bins) -> str:
    """'small 0-32, medium 32-96, large 96-inf px (sqrt of box area; low <= size < high)'."""
    parts = ", ".join(f"{name} {_px(lo)}-{_px(hi)}" for name, (lo, hi) in bins.items())
    return f"{parts} px (sqrt of box area; low <= size < high)"
