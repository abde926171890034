"""A run's share of the machine: its GPU held from the start, torch's thread count, and ultralytics' own count.

ultralytics 8.3.x's select_device(device) writes CUDA_VISIBLE_DEVICES=device into the process before it first
touches CUDA (8.4 no longer does), and CUDA reads that variable once, when it starts. A process that was given
its GPU through CUDA_VISIBLE_DEVICES (a --jobs worker, a Ray task) therefore starts CUDA itself first
(hold_visible_devices): later writes change nothing, and ultralytics' "0" is the GPU the process was given, on
every release.

ultralytics' select_device() calls torch.set_num_threads(NUM_THREADS) for CPU training, NUM_THREADS being
fixed at import from the machine's core count; several runs at once on one machine would each take that
many threads. While a run of ours holds a share of the cores, that constant says the share (compat feature
"cpu_share"; without it the run keeps ultralytics' count and is only confined to its cores).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from attention.adapter import compat

_HOLDERS = ("ultralytics.utils", "ultralytics.utils.torch_utils")  # modules with their own NUM_THREADS binding


def hold_visible_devices() -> None:
    """Start CUDA now, on the GPUs CUDA_VISIBLE_DEVICES names at this moment (nothing to do without CUDA)."""
    if torch.cuda.is_available():  # this call starts CUDA's driver, which reads CUDA_VISIBLE_DEVICES once
        torch.cuda.init()


@contextlib.contextmanager
def pin_cpu_threads(threads: int) -> Iterator[None]:
    """torch and ultralytics use `threads` CPU threads inside the block; both are restored after it."""
    import importlib

    threads = max(1, int(threads))
    before = torch.get_num_threads()
    holders = [importlib.import_module(m) for m in _HOLDERS] if compat.enabled("cpu_share") else []
    saved = [h.NUM_THREADS for h in holders]
    for h in holders:
        h.NUM_THREADS = threads
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        for h, value in zip(holders, saved):
            h.NUM_THREADS = value
        torch.set_num_threads(before)
