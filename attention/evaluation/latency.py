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


def ms_per_image(model, images: Sequence, mode: tuple[str, int], device: str | None = None, conf: float = 0.25,
                 limit: int = 10) -> float:
    """Median milliseconds to detect on one image, end to end (read excluded), the whole image at a size or sliced.

    The first image warms up and is not counted; at most `limit` images are timed.
    """
    import cv2

    kind, size = mode
    if kind == "sliced":
        from attention.inference.slicing import SlicedPredictor

        sliced = SlicedPredictor(model, slice_size=size, overlap=0.2, conf=conf, device=device)
        run = sliced
    else:
        run = lambda img: model.predict(img, imgsz=size, conf=conf, device=device, verbose=False)  # noqa: E731
    times = []
    for path in list(images)[: limit + 1]:
        img = cv2.imread(str(path))
        t = time.perf_counter()
        run(img)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times[1:] or times)
