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
