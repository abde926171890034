"""The embedded synthetic small-object datasets: aerial-style images drawn from a seed, cached on disk.

data/tiny-objects.yaml and data/tiny-objects-large.yaml carry a `generate:` mapping with generate()'s
arguments; attention.data.prepare draws the set into the user's dataset cache on first use.
"""

from __future__ import annotations

import colorsys
import json
import math
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from attention.errors import UserError

CLASSES: tuple[str, ...] = ("vehicle", "person", "boat")
VERSION = 3  # bump whenever the drawing code changes, so stale caches are regenerated
MARKER = ".generated.json"
GEN_KEYS = {"seed", "n_train", "n_val", "imgsz", "width", "height"}  # generate()'s arguments in a data YAML

_SPLITS = {"train": 0, "val": 1}
_SS = 4  # supersampling factor: sprites are a few pixels wide, so edges need anti-aliasing
_SHIFT = 4  # fractional bits for cv2.fillPoly, keeps sub-pixel placement exact
_ALPHA_CUT = 0.2  # coverage below this is dropped, so every drawn pixel lies inside its box

# Signature colours (RGB) of the classes; decoys of the class shapes never use these hues.
_VEHICLE_RED = (215, 35, 35)
_PERSON_YELLOW = (250, 215, 30)
_BOAT_WHITE = (240, 245, 250)
_BOAT_BLUE = (20, 140, 235)

Part = tuple[np.ndarray, "np.ndarray | None"]  # unit-coordinate polygon, RGB colour (None erases)


# ----------------------------------------------------------------------------- sprites


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Axis-aligned rectangle polygon."""
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 20) -> np.ndarray:
    """Ellipse approximated by an n-gon."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)


def _blob(rng: np.random.Generator, n: int = 9, rough: float = 0.35) -> np.ndarray:
    """Irregular star-shaped polygon of radius about 0.5."""
    t = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = 0.5 * (1 + rng.uniform(-rough, rough, n))
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def _jitter(rng: np.random.Generator, rgb: tuple[int, int, int], amount: float = 18) -> np.ndarray:
    """Colour with per-channel and brightness jitter, so a class is a colour family, not one value."""
    c = np.asarray(rgb, np.float64) + rng.uniform(-amount, amount, 3)
    return np.clip(c * rng.uniform(0.75, 1.12), 0, 255)


def _uniform_xy(rng: np.random.Generator, lo: float, hi_x: float, hi_y: float) -> np.ndarray:
    """(x, y) uniform in [lo, hi_x) x [lo, hi_y); for a square the very same draw as rng.uniform(lo, hi, 2)."""
    if hi_x == hi_y:
        return rng.uniform(lo, hi_x, 2)
    return rng.uniform((lo, lo), (hi_x, hi_y))


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """RGB in 0..255 from HSV in 0..1."""
    return np.array(colorsys.hsv_to_rgb(h, s, v)) * 255


def _muted(rng: np.random.Generator, smax: float = 0.45, vlo: float = 0.25, vhi: float = 0.8) -> np.ndarray:
    """Low-saturation colour: backgrounds and decoys stay apart from the saturated class colours."""
    return _hsv(rng.uniform(), rng.uniform(0.03, smax), rng.uniform(vlo, vhi))


def _vehicle(rng: np.random.Generator) -> list[Part]:
    """Top-down car: red body, dark windscreen, lighter roof; long axis along x."""
    w = rng.uniform(0.42, 0.55)
    c = 0.07  # chamfered corners read as a car rather than a brick
    body = np.array([[-0.5 + c, -w / 2], [0.5 - c, -w / 2], [0.5, -w / 2 + c], [0.5, w / 2 - c],
                     [0.5 - c, w / 2], [-0.5 + c, w / 2], [-0.5, w / 2 - c], [-0.5, -w / 2 + c]])
    red = _jitter(rng, _VEHICLE_RED)
    return [
        (body, red),
        (_rect(0.1, -w * 0.4, 0.26, w * 0.4), _jitter(rng, (40, 45, 60), 10)),
        (_rect(-0.3, -w * 0.33, 0.1, w * 0.33), np.clip(red * 0.6 + 255 * 0.4, 0, 255)),
    ]


def _person(rng: np.random.Generator) -> list[Part]:
    """Top-down person: yellow shoulders (vest) with a dark head in the middle."""
    ry = rng.uniform(0.3, 0.4)
    return [
        (_ellipse(0, 0, 0.5, ry), _jitter(rng, _PERSON_YELLOW)),
        (_ellipse(0.04, 0, 0.2, 0.2, 12), _jitter(rng, (95, 60, 35), 12)),
    ]


def _boat(rng: np.random.Generator) -> list[Part]:
    """Top-down boat: white pointed hull with a blue cabin."""
    h = rng.uniform(0.15, 0.2)
    hull = np.array([[-0.5, -h], [0.2, -h], [0.5, 0], [0.2, h], [-0.5, h]])
    return [
        (hull, _jitter(rng, _BOAT_WHITE, 12)),
        (_rect(-0.32, -h * 0.6, 0.02, h * 0.6), _jitter(rng, _BOAT_BLUE)),
    ]


_SHAPES = (_vehicle, _person, _boat)
_FILL = (0.75, 0.85, 0.65)  # typical sqrt(box area) / long side, to turn a target size into a scale


def _render(
    parts: list[Part], cx: float, cy: float, scale: float, angle: float
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Rasterise unit polygons at (cx, cy) into an anti-aliased RGB patch, its alpha and top-left corner."""
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    polys = [poly @ rot.T * scale + (cx, cy) for poly, _ in parts]
    allv = np.concatenate(polys)
    x0, y0 = np.floor(allv.min(0)).astype(int)
    x1, y1 = np.ceil(allv.max(0)).astype(int) + 1
    w, h = x1 - x0, y1 - y0
    col = np.zeros((h * _SS, w * _SS, 3), np.float32)
    cov = np.zeros((h * _SS, w * _SS), np.float32)
    for poly, (_, rgb) in zip(polys, parts):
        pts = np.round((poly - (x0, y0)) * _SS * (1 << _SHIFT)).astype(np.int32)
        cv2.fillPoly(col, [pts], (0.0, 0.0, 0.0) if rgb is None else tuple(map(float, rgb)), cv2.LINE_8, _SHIFT)
        cv2.fillPoly(cov, [pts], 0.0 if rgb is None else 1.0, cv2.LINE_8, _SHIFT)
    # box-filter downsampling: colour stays premultiplied by coverage until divided below
    alpha = cv2.resize(cov, (w, h), interpolation=cv2.INTER_AREA)
    col = cv2.resize(col, (w, h), interpolation=cv2.INTER_AREA)
    col /= np.maximum(alpha, 1e-6)[..., None]
    alpha[alpha < _ALPHA_CUT] = 0
    return col, alpha, int(x0), int(y0)


def _paste(
    img: np.ndarray, col: np.ndarray, alpha: np.ndarray, x0: int, y0: int, opacity: float = 1.0
) -> tuple[int, int, int, int] | None:
    """Alpha-blend a patch into img in place; return the pixel box (x0, y0, x1, y1) of what landed, if any."""
    H, W = img.shape[:2]
    ax0, ay0 = max(x0, 0), max(y0, 0)
    ax1, ay1 = min(x0 + alpha.shape[1], W), min(y0 + alpha.shape[0], H)
    if ax0 >= ax1 or ay0 >= ay1:
        return None
    a = alpha[ay0 - y0 : ay1 - y0, ax0 - x0 : ax1 - x0]
    c = col[ay0 - y0 : ay1 - y0, ax0 - x0 : ax1 - x0]
    roi = img[ay0:ay1, ax0:ax1]
    a3 = (a * opacity)[..., None]
    roi *= 1 - a3
    roi += c * a3
    ys, xs = np.nonzero(a)
    if len(xs) == 0:
        return None
    return ax0 + int(xs.min()), ay0 + int(ys.min()), ax0 + int(xs.max()) + 1, ay0 + int(ys.max()) + 1


# ----------------------------------------------------------------------------- backgrounds


def _smooth_noise(rng: np.random.Generator, size: int | tuple[int, int], cells: int, ch: int = 1) -> np.ndarray:
    """Low-frequency noise in [0, 1] of shape (h, w, ch) (size: n or (h, w)): cheap terrain-like texture."""
    h, w = (size, size) if isinstance(size, int) else size
    small = rng.random((cells, cells, ch)).astype(np.float32)
    big = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(big.reshape(h, w, ch), 0, 1)


def _background(rng: np.random.Generator, n: int, shape: tuple[int, int] | None = None) -> np.ndarray:
    """One of several muted scene types, as float32 RGB; n x n, or shape (h, w) with n its long side."""
    kind = rng.integers(6)
    hw = shape or (n, n)
    yy, xx = np.mgrid[0 : hw[0], 0 : hw[1]].astype(np.float32) / n
    n = hw if shape else n  # the size the noise and fill helpers draw at
    if kind == 0:  # gradient
        t = xx * math.cos(a := rng.uniform(0, 2 * np.pi)) + yy * math.sin(a)
        t = ((t - t.min()) / (t.max() - t.min() + 1e-6))[..., None]
        img = _muted(rng) * (1 - t) + _muted(rng) * t + 30 * (_smooth_noise(rng, n, 8) - 0.5)
    elif kind == 1:  # terrain: blend of two or three earthy colours
        img = _muted(rng, 0.5, 0.3, 0.7) * np.ones((*hw, 3), np.float32)
        for _ in range(rng.integers(1, 3)):
            m = np.clip((_smooth_noise(rng, n, rng.integers(3, 9)) - 0.5) * 4 + 0.5, 0, 1)
            img = img * (1 - m) + _muted(rng, 0.5, 0.3, 0.7) * m
        img += 24 * (_smooth_noise(rng, n, 40) - 0.5)
    elif kind == 2:  # water with ripples
        base = _hsv(rng.uniform(0.45, 0.62), rng.uniform(0.25, 0.6), rng.uniform(0.25, 0.55))
        f, ph = rng.uniform(20, 60), rng.uniform(0, 6.3)
        along = xx * math.cos(a := rng.uniform(0, 6.3)) + yy * math.sin(a)
        rip = np.sin(along * f + ph + 3 * _smooth_noise(rng, n, 6)[..., 0])
        img = base + 12 * rip[..., None] + 20 * (_smooth_noise(rng, n, 10) - 0.5)
    elif kind == 3:  # fields: Voronoi patches of crop colours with row stripes
        k = int(rng.integers(4, 10))
        seeds, cols = rng.random((k, 2)), np.stack([_muted(rng, 0.5, 0.3, 0.75) for _ in range(k)])
        lab = np.argmin((xx[..., None] - seeds[:, 0]) ** 2 + (yy[..., None] - seeds[:, 1]) ** 2, -1)
        img = cols[lab].astype(np.float32)
        stripes = np.sin((xx * math.cos(a := rng.uniform(0, 6.3)) + yy * math.sin(a)) * rng.uniform(80, 200))
        img += 10 * stripes[..., None] + 16 * (_smooth_noise(rng, n, 30) - 0.5)
    else:  # 4 road network, 5 city grid: drawn with cv2 on a terrain-ish base
        img = _muted(rng, 0.35, 0.35, 0.7) * np.ones((*hw, 3), np.float32)
        img += 30 * (_smooth_noise(rng, n, 6) - 0.5)
        if kind == 5:
            _city(rng, img, max(hw))
        else:
            _roads(rng, img, max(hw))
    return np.clip(img, 0, 255).astype(np.float32)


def _roads(rng: np.random.Generator, img: np.ndarray, n: int) -> None:
    """Asphalt bands with dashed lane marks (white/yellow dashes are look-alikes for the classes)."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(rng.integers(1, 4)):
        p = _uniform_xy(rng, 0, w, h)
        a = rng.uniform(0, np.pi)
        d = np.array([math.cos(a), math.sin(a)]) * n * 1.5
        width = rng.uniform(14, 40)
        grey = float(rng.uniform(60, 110))
        # analytic coverage of the band gives smooth edges (thick cv2 lines come out jagged)
        dist = np.abs((xx - p[0]) * -math.sin(a) + (yy - p[1]) * math.cos(a))
        m = np.clip(width / 2 - dist + 0.5, 0, 1)[..., None]
        img *= 1 - m
        img += m * np.array([grey, grey, grey + 4], np.float32)
        dash = (250, 250, 245) if rng.random() < 0.6 else (235, 200, 40)
        step, on = rng.uniform(10, 22), rng.uniform(4, 9)
        u = d / np.linalg.norm(d)
        for t in np.arange(-n * 1.5, n * 1.5, step):
            q0, q1 = p + u * t, p + u * (t + on)
            cv2.line(img, tuple(int(v) for v in q0), tuple(int(v) for v in q1), dash, 1, cv2.LINE_AA)


def _city(rng: np.random.Generator, img: np.ndarray, n: int) -> None:
    """Street grid with roof rectangles: vehicle-like rectangles, but larger and muted."""
    step = int(rng.integers(40, 90))
    street = float(rng.uniform(70, 120))
    img[:] = street
    H, W = img.shape[:2]
    for by in range(-int(rng.integers(0, step)), H, step):
        for bx in range(-int(rng.integers(0, step)), W, step):
            cv2.rectangle(img, (bx + 4, by + 4), (bx + step - 5, by + step - 5), tuple(_muted(rng, 0.25).tolist()), -1)
            for _ in range(rng.integers(1, 5)):
                w, h = rng.integers(8, max(10, step // 2), 2)
                x, y = bx + rng.integers(5, step - 5), by + rng.integers(5, step - 5)
                cv2.rectangle(img, (int(x), int(y)), (int(x + w), int(y + h)), tuple(_muted(rng, 0.3).tolist()), -1)


# ----------------------------------------------------------------------------- distractors


def _decoy(rng: np.random.Generator, img: np.ndarray) -> None:
    """Draw one unlabelled look-alike or clutter item somewhere in img."""
    h, w = img.shape[:2]
    cx, cy = _uniform_xy(rng, -5, w + 5, h + 5)
    angle = rng.uniform(0, 2 * np.pi)
    r = rng.random()
    if r < 0.15:  # near miss: class colours, but without the second-colour detail that makes the class
        cls = int(rng.integers(len(_SHAPES)))
        parts = _SHAPES[cls](rng)[:1]
        size = rng.uniform(6, 24) / _FILL[cls]
    elif r < 0.4:  # class shape in a non-class (muted) colour
        parts = _SHAPES[rng.integers(len(_SHAPES))](rng)
        parts = [(p, _muted(rng, 0.4, 0.2, 0.85)) for p, _ in parts]
        size = rng.uniform(6, 24)
    elif r < 0.62:  # class colour on a shape no class has
        rgb = _jitter(rng, (_VEHICLE_RED, _PERSON_YELLOW, _BOAT_WHITE, _BOAT_BLUE)[rng.integers(4)])
        s = rng.integers(4)
        size = rng.uniform(7, 26)
        if s == 0:  # thin bar
            parts = [(_rect(-0.5, -0.04, 0.5, 0.04), rgb)]
        elif s == 1:  # thin ring, kept large: a small thick one would be a person with its head erased
            parts = [(_ellipse(0, 0, 0.5, 0.5), rgb), (_ellipse(0, 0, 0.37, 0.37), None)]
            size = rng.uniform(14, 30)
        elif s == 2:  # triangle
            parts = [(np.array([[-0.5, -0.45], [0.5, 0.0], [-0.5, 0.45]]), rgb)]
        else:  # plus sign
            parts = [(_rect(-0.5, -0.1, 0.5, 0.1), rgb), (_rect(-0.1, -0.5, 0.1, 0.5), rgb)]
    elif r < 0.86:  # random blob, any colour
        parts = [(_blob(rng), _muted(rng, 0.9, 0.1, 0.95))]
        size = rng.uniform(4, 40)
    else:  # random line
        parts = [(_rect(-0.5, -0.02, 0.5, 0.02), _muted(rng, 0.6, 0.1, 0.95))]
        size = rng.uniform(20, 90)
    col, alpha, x0, y0 = _render(parts, cx, cy, size, angle)
    _paste(img, col, alpha, x0, y0, rng.uniform(0.6, 1.0))


def _target_size(rng: np.random.Generator) -> float:
    """Target sqrt(box area) in native pixels: mostly COCO-small, a few medium."""
    r = rng.random()
    if r < 0.2:
        return rng.uniform(4, 8)
    if r < 0.72:
        return rng.uniform(8, 16)
    if r < 0.95:
        return rng.uniform(16, 30)
    return rng.uniform(32, 56)


# ----------------------------------------------------------------------------- images


def _counts(k: float) -> tuple[tuple[int, int], tuple[int, int]]:
    """[low, high) of decoys and objects per image; k scales them with the image side (1 at 320 px)."""
    return (round(8 * k), round(41 * k)), (round(3 * k), round(26 * k))


def _make_image(
    seed: int, split: str, index: int, imgsz: int, plain: bool = False, size: tuple[int, int] | None = None
) -> tuple[np.ndarray, list[tuple[int, int, int, int, int]]]:
    """Draw one image (uint8 RGB) and its labels (cls, x0, y0, x1, y1 in pixels); plain=True: objects on black only.

    size=(width, height) draws a non-square (large) image instead of imgsz x imgsz, with object and
    clutter counts scaled by sqrt(width * height) / 320; objects keep their native pixel sizes.
    """
    # per-image generator: any image can be drawn alone, in any order, by any worker
    rng = np.random.default_rng([seed, _SPLITS[split], index])
    w, h = size or (imgsz, imgsz)
    n = max(w, h)
    (d_lo, d_hi), (o_lo, o_hi) = _counts(math.sqrt(w * h) / 320 if size else 1.0)
    img = np.zeros((h, w, 3), np.float32) if plain else _background(rng, n, (h, w) if size else None)
    if not plain:
        for _ in range(rng.integers(d_lo, d_hi)):
            _decoy(rng, img)
    boxes: list[tuple[int, int, int, int, int]] = []
    for _ in range(rng.integers(o_lo, o_hi)):
        for _try in range(20):
            cls = int(rng.integers(len(CLASSES)))
            size = _target_size(rng)
            parts = _SHAPES[cls](rng)
            cx, cy = _uniform_xy(rng, -0.2 * size, w + 0.2 * size, h + 0.2 * size)  # a few are cut by the border
            col, alpha, x0, y0 = _render(parts, cx, cy, size / _FILL[cls], rng.uniform(0, 2 * np.pi))
            full = (alpha > 0).sum()
            ys, xs = np.nonzero(alpha)
            bx0, by0, bx1, by1 = x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1
            vis = alpha[max(0, -y0) : h - y0, max(0, -x0) : w - x0]
            if (vis > 0).sum() < 0.6 * full or min(bx1, w) - max(bx0, 0) < 3 or min(by1, h) - max(by0, 0) < 3:
                continue  # mostly outside the image: unfair to label
            if any(bx0 < b[3] + 1 and b[1] < bx1 + 1 and by0 < b[4] + 1 and b[2] < by1 + 1 for b in boxes):
                continue  # labelled objects never touch, so each box holds one object
            # low-contrast objects: faded paint / haze
            opacity = rng.uniform(0.55, 0.8) if rng.random() < 0.25 else 1.0
            box = _paste(img, col, alpha, x0, y0, opacity)
            if box is None:
                continue
            boxes.append((cls, *box))
            if not plain and size >= 8 and rng.random() < 0.2:
                # partial occlusion by a canopy blob; the label keeps the whole object (amodal box)
                d = rng.uniform(0, 2 * np.pi)
                ocx, ocy = (bx0 + bx1) / 2 + 0.6 * size * math.cos(d), (by0 + by1) / 2 + 0.6 * size * math.sin(d)
                green = _hsv(rng.uniform(0.2, 0.4), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.4))
                oc, oa, ox, oy = _render([(_blob(rng, 11, 0.2), green)], ocx, ocy, size * 0.9, 0.0)
                _paste(img, oc, oa, ox, oy)
            break
    if not plain:
        # sensor noise and exposure: the same object never looks pixel-identical twice
        img = img * rng.uniform(0.85, 1.12) + rng.normal(0, rng.uniform(1, 6), img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), boxes


def _label_text(boxes: list[tuple[int, int, int, int, int]], n: int, height: int | None = None) -> str:
    """YOLO label lines: class cx cy w h, normalised (to n x n, or n wide and height high), 6 decimals."""
    lines = []
    W, H = n, height or n
    for cls, x0, y0, x1, y1 in boxes:
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
        lines.append(f"{cls} {(x0 + x1) / 2 / W:.6f} {(y0 + y1) / 2 / H:.6f} {(x1 - x0) / W:.6f} {(y1 - y0) / H:.6f}")
    return "\n".join(lines) + "\n"


def _write_one(out: Path, seed: int, split: str, index: int, imgsz: int, size: tuple[int, int] | None = None) -> None:
    """Draw one image and write its JPEG and label file."""
    img, boxes = _make_image(seed, split, index, imgsz, size=size)
    # 4:4:4 chroma: default 4:2:0 would smear the colour of 5-pixel objects
    opts = [cv2.IMWRITE_JPEG_QUALITY, 95, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    ok, buf = cv2.imencode(".jpg", img[..., ::-1], opts)
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for {split} image {index}")
    name = f"{split}_{index:05d}"
    (out / "images" / split / f"{name}.jpg").write_bytes(buf.tobytes())
    (out / "labels" / split / f"{name}.txt").write_text(_label_text(boxes, *(size or (imgsz,))))


# ----------------------------------------------------------------------------- generation and cache


def _params(n_train: int, n_val: int, imgsz: int, seed: int, size: tuple[int, int] | None = None) -> dict[str, Any]:
    """Everything the output depends on; stored in the marker and compared on reuse."""
    params = {"version": VERSION, "seed": seed, "n_train": n_train, "n_val": n_val, "imgsz": imgsz,
              "names": list(CLASSES)}
    if size:  # large non-square variant; the square sets keep their marker as it was
        params |= {"width": size[0], "height": size[1]}
    return params


def _is_cached(root: Path, params: dict[str, Any]) -> bool:
    """True if root holds a complete generation made with exactly these parameters."""
    try:
        if json.loads((root / MARKER).read_text()) != params:
            return False
    except (OSError, ValueError):
        return False
    for split in _SPLITS:
        want = params[f"n_{split}"]
        if sum(1 for _ in (root / "images" / split).glob("*.jpg")) != want:
            return False
        if sum(1 for _ in (root / "labels" / split).glob("*.txt")) != want:
            return False
    return True


def _is_ours(root: Path) -> bool:
    """True if root is absent, empty, or only holds what generate() (and ultralytics' label caches) put there."""
    if not root.exists():
        return True
    return root.is_dir() and all(p.name in {"images", "labels", MARKER} or p.suffix == ".yaml" for p in root.iterdir())


def generate(
    root: Path, n_train: int = 400, n_val: int = 100, imgsz: int = 320, seed: int = 0, workers: int | None = None,
    width: int | None = None, height: int | None = None,
) -> Path:
    """Write the synthetic dataset under root (reusing a matching cache) and return root.

    width and height (both, or neither) draw width x height images instead of imgsz x imgsz: the
    large-image variant (data/tiny-objects-large.yaml), with as many objects and as much clutter per
    image as its side length calls for (sqrt(width * height) / 320 times the square set's), all at
    the same native pixel sizes, so most objects are tiny next to the image.
    """
    root = Path(root).resolve()
    if (width is None) != (height is None):
        raise UserError(f"give both width and height for a non-square dataset, got width={width}, height={height}")
    size = (int(width), int(height)) if width is not None else None
    if size and min(size) < 64:
        raise UserError(f"need width, height >= 64, got {width}, {height}")
    params = _params(int(n_train), int(n_val), int(imgsz), int(seed), size)
    if _is_cached(root, params):
        return root
    if not _is_ours(root):
        raise UserError(f"refusing to overwrite {root}: it holds files the dataset generator did not write")
    if min(n_train, n_val) < 1 or imgsz < 64:
        raise UserError(f"need n_train, n_val >= 1 and imgsz >= 64, got {n_train}, {n_val}, {imgsz}")
    root.parent.mkdir(parents=True, exist_ok=True)
    # build in a sibling temp dir and rename it into place: an interrupted run never leaves a marker over partial data
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        for sub in ("images", "labels"):
            for split in _SPLITS:
                (tmp / sub / split).mkdir(parents=True)
        jobs = [(split, i) for split in _SPLITS for i in range(params[f"n_{split}"])]
        workers = min(4, os.cpu_count() or 1) if workers is None else max(1, workers)
        # threads, not processes: drawing is partly GIL-bound so the gain is modest, but threads need no
        # pickling or re-import of the package (which loads torch) and the default set takes ~10 s anyway
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda j: _write_one(tmp, params["seed"], j[0], j[1], params["imgsz"], size), jobs))
        (tmp / MARKER).write_text(json.dumps(params, indent=1) + "\n")
        if root.exists():
            shutil.rmtree(root)
        try:
            tmp.rename(root)
        except OSError:
            if not _is_cached(root, params):  # a concurrent run that finished first is fine, anything else is not
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
