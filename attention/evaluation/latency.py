"""Latency measured side by side: every model timed in each round, so load changes hit all of them alike."""

from __future__ import annotations

import statistics
import time
from typing import Sequence

import torch


def latency_ms(models: Sequence[torch.nn.Module], imgsz: int, device: torch.device, repeats: int = 30) -> list[float]:
    """Median batch-1 forward latency of each model, measured interleaved (3 warm-up rounds first)."""
    x = torch.zeros(1, 3, imgsz, imgsz, device=device)
    times: list[list[float]] = [[] for _ in models]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        for r in range(repeats + 3):
            for k, m in enumerate(models):
                sync()
                t = time.perf_counter()
                m(x)
                sync()
                if r >= 3:
                    times[k].append((time.perf_counter() - t) * 1e3)
    return [statistics.median(t) for t in times]


def ms_per_image(models: Sequence, images: Sequence, mode: tuple[str, int], device: str | None = None,
                 conf: float = 0.25, limit: int = 10) -> list[float]:
    """Median milliseconds to detect on one image, end to end (read excluded), for each model side by side.

    The whole image at a size, or sliced into tiles of that size. Every model detects on the same images: each is
    warmed up on the first, then each of the next `limit` images is given to every model in an order that rotates
    from image to image, so a slow spell of the machine falls on all of them alike.
    """
    import cv2

    kind, size = mode
    if kind == "sliced":
        from attention.inference.slicing import SlicedPredictor

        runs = [SlicedPredictor(m, slice_size=size, overlap=0.2, conf=conf, device=device) for m in models]
    else:
        runs = [lambda img, m=m: m.predict(img, imgsz=size, conf=conf, device=device, verbose=False) for m in models]
    paths = list(images)[: limit + 1]
    times: list[list[float]] = [[] for _ in runs]
    for i, path in enumerate(paths):
        img = cv2.imread(str(path))
        for j in range(len(runs)):
            k = (i + j) % len(runs)
            t = time.perf_counter()
            runs[k](img)
            times[k].append((time.perf_counter() - t) * 1e3)
    return [statistics.median(ts[1:] or ts) for ts in times]
