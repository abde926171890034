"""Checkpoints with attention blocks under ultralytics' restricted loading (ULTRALYTICS_SAFE_LOAD=1).

Restricted loading unpickles with ``torch.load(weights_only=True)``: only tensors and the globals
on ultralytics' allow-list (``_SafeLoad._registry``: its own and torch's model classes) may appear,
so a checkpoint cannot run code while it loads. That list does not know our classes, so every
checkpoint with a block was refused. We add exactly our classes to it: each registered block,
IdentityGate, and the nn.Module classes defined in a block's own file (its helpers), nothing else.

A refused checkpoint raises ultralytics' TypeError, which names the file but not the global; we
re-raise it as UnsafeCheckpointError, one line naming both.
"""

from __future__ import annotations

import contextlib
import functools
import pickle
import pickletools
import re
import sys
from pathlib import Path

from torch import nn
from ultralytics.nn import tasks

from attention.adapter import compat
from attention.blocks.gate import IdentityGate
from attention.blocks.registry import classes as registered_classes
from attention.errors import UserError


class UnsafeCheckpointError(UserError, TypeError):
    """Restricted loading refused a checkpoint: it names a global outside the allow-list. Nothing in it ran.

    A TypeError, as ultralytics raises for the same refusal, so callers catching that still catch it.
    """


def allowed() -> dict[str, type[nn.Module]]:
    """'module.Class' -> class for every class of ours a checkpoint may name under restricted loading.

    Read at each load, so blocks registered after ``import attention`` are included.
    """
    classes = {IdentityGate, *registered_classes()}
    for block in registered_classes():
        # Helpers a block builds itself from (e.g. a sub-layer class) live in the block's file.
        module = sys.modules.get(block.__module__)
        for obj in vars(module).values() if module else ():
            if isinstance(obj, type) and issubclass(obj, nn.Module) and obj.__module__ == block.__module__:
                classes.add(obj)
    return {f"{c.__module__}.{c.__qualname__}": c for c in classes}


def refusal(weight: str | Path, error: BaseException) -> UnsafeCheckpointError | None:
    """Our one-line error for a restricted load of weight that the weights-only unpickler refused, else None.

    Call it only for restricted loads: there ultralytics turns every unpickling error into its TypeError.
    """
    cause = next((e for e in (error, error.__cause__) if isinstance(e, pickle.UnpicklingError)), None)
    if cause is None:
        return None
    text = str(cause)
    found = re.search(r"GLOBAL (\S+)", text)  # torch names the first global it refused
    if found:
        name = found.group(1)
        name = name if "." in name else f"builtins.{name}"  # torch drops the 'builtins.' prefix
        what = f"it references {name}, which is not an allowed global"
    elif opcode := re.search(r"Unsupported operand (\d+)", text):  # e.g. protocol-4 framing around a global
        op = pickletools.code2op.get(chr(int(opcode.group(1))))
        name = op.name if op else opcode.group(1)
        what = f"it uses the pickle opcode {name}, which the weights-only unpickler does not run"
    else:  # refused for another reason, e.g. building an object of a class that is not allowed
        detail = text.split("WeightsUnpickler error:")[-1].split("Check the documentation")[0]
        what = f"the weights-only unpickler refused it ({' '.join(detail.split()) or type(cause).__name__})"
    return UnsafeCheckpointError(
        f"{weight}: refused by restricted loading (ULTRALYTICS_SAFE_LOAD=1): {what}; only tensors, plain data, "
        "ultralytics/torch model classes and registered attention blocks may appear in a checkpoint. "
        "Nothing in the file was run"
    )


def requested() -> bool:
    """ULTRALYTICS_SAFE_LOAD=1 is set: restricted loading is asked for (ultralytics reads it at import)."""
    import os

    return os.environ.get("ULTRALYTICS_SAFE_LOAD", "").strip().lower() in ("1", "true", "yes", "on")


def install() -> None:
    """Put our classes on ultralytics' allow-list and name refused globals; idempotent.

    Where the release lacks what we extend, the feature's one warning is given only if ULTRALYTICS_SAFE_LOAD
    asks for restricted loading: otherwise there is nothing the user would miss.
    """
    if compat.missing("safe_load"):
        if requested():
            compat.enabled("safe_load")  # the warning
        return
    safe = tasks._SafeLoad
    if getattr(safe.loading, "_attention_hook", False):
        return
    loading = safe.loading.__func__  # the context manager behind the classmethod

    @contextlib.contextmanager
    @functools.wraps(loading)
    def loading_with_ours(cls, weight):
        # ultralytics allows (add_safe_globals) only the registry entries this checkpoint names.
        with cls._lock:
            if cls._registry is None:
                cls._registry = cls._build()
            for name, obj in allowed().items():
                cls._registry.setdefault(name, obj)  # never shadow an ultralytics entry
        with loading(cls, weight):
            yield

    loading_with_ours._attention_hook = True
    safe.loading = classmethod(loading_with_ours)

    original = tasks.torch_safe_load

    @functools.wraps(original)
    def torch_safe_load(weight, safe_only=None):
        try:
            return original(weight, safe_only)
        except (TypeError, pickle.UnpicklingError) as e:
            restricted = tasks.SAFE_LOAD if safe_only is None else safe_only
            refused = refusal(weight, e) if restricted and safe.SUPPORTED else None
            if refused is None:
                raise
            raise refused from e

    tasks.torch_safe_load = torch_safe_load  # load_checkpoint (YOLO(), trainer, our transfer) calls it from here
