"""Units a test's executor runs instead of attention.evaluation.scored_run.execute (importable in worker processes).

Each has execute's signature, (spec, slot) -> RunResult, and does one thing a test can check from outside.
"""

from __future__ import annotations

import json
import os
import signal
import time

from attention.errors import UserError
from attention.evaluation.scored_run import RunResult, RunSpec, Slot, placement


def _result(spec: RunSpec) -> RunResult:
    return RunResult(spec.variant, spec.seed, spec.folder, {}, {}, 0.0, False)


def where_it_trains(spec: RunSpec, slot: Slot) -> RunResult:
    """Select the slot's device as ultralytics' trainer does, then record where this process computes."""
    from ultralytics.utils.torch_utils import select_device  # the adapter's business in the package; a test may

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    device = select_device(slot.device, verbose=False)
    spec.folder.mkdir(parents=True, exist_ok=True)
    (spec.folder / "where.json").write_text(json.dumps({"visible_at_start": visible, "torch_device": str(device),
                                                        **placement(slot)}))
    return _result(spec)


def sleepy(spec: RunSpec, slot: Slot) -> RunResult:
    """Say its pid, then wait to be stopped; a graceful stop leaves `stopped` with the reason."""
    spec.folder.mkdir(parents=True, exist_ok=True)
    (spec.folder / "pid").write_text(str(os.getpid()))
    try:
        while True:
            time.sleep(0.05)
    except KeyboardInterrupt as e:
        (spec.folder / "stopped").write_text(str(e) or type(e).__name__)
        raise


def flaky(spec: RunSpec, slot: Slot) -> RunResult:
    """Seed 0 finishes, seed 1 fails (a UserError), seed 2's process dies every time (SIGKILL) where it has a
    process of its own (a quiet slot; in the caller's process it raises); each call adds its pid to calls.txt."""
    spec.folder.mkdir(parents=True, exist_ok=True)
    with open(spec.folder / "calls.txt", "a") as fh:
        fh.write(f"{os.getpid()}\n")
    if spec.seed == 1:
        raise UserError(f"{spec.variant} seed 1 cannot be trained")
    if spec.seed == 2:
        if not slot.quiet:
            raise RuntimeError("seed 2 broke")
        os.kill(os.getpid(), signal.SIGKILL)
    return _result(spec)
