"""Export a checkpoint with ultralytics' exporter, for the formats whose packages we declare.

ultralytics installs a missing export package on the fly. We call it only for ONNX (onnx, our `export`
extra; --simplify also needs onnxslim and onnxruntime) and TorchScript (nothing extra), and check the
packages first, so nothing is installed behind the user's back. Blocks export as their plain PyTorch
graphs; other formats go through ultralytics directly (`YOLO("best.pt").export(format=...)` after
`import attention`), which may install what they need.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from attention.adapter.api import YOLO
from attention.adapter.compat import onnx_needs_onnxscript
from attention.adapter.weights import resolve_weights
from attention.errors import UserError

NEEDS = {"onnx": ("onnx",), "torchscript": ()}  # the formats this command exports, and the packages each needs
FORMATS = tuple(NEEDS)
SIMPLIFY_NEEDS = ("onnxslim", "onnxruntime")


def missing_packages(fmt: str, simplify: bool = False) -> list[str]:
    """The packages an export to fmt needs that are not installed."""
    wanted = NEEDS[fmt] + (SIMPLIFY_NEEDS if simplify and fmt == "onnx" else ())
    wanted += ("onnxscript",) if fmt == "onnx" and onnx_needs_onnxscript() else ()
    return [m for m in wanted if importlib.util.find_spec(m) is None]


def export(weights: str | Path, fmt: str = "onnx", imgsz: int = 640, batch: int = 1, dynamic: bool = False,
           opset: int | None = None, simplify: bool = False, half: bool = False, device: str | None = None) -> Path:
    """Export the checkpoint next to it (best.pt -> best.onnx); returns the exported file."""
    if fmt not in NEEDS:
        raise UserError(f"export --format {fmt}: this command exports {' and '.join(NEEDS)}; for {fmt} call "
                         f"ultralytics directly, YOLO({str(weights)!r}).export(format={fmt!r}) after import attention "
                         "(ultralytics may install packages for it)")
    missing = missing_packages(fmt, simplify)
    if missing:
        raise UserError(f"export --format {fmt}{' --simplify' if simplify else ''} needs {', '.join(missing)}: "
                         f"pip install {' '.join(missing)}")
    model = YOLO(resolve_weights(weights))
    options = dict(format=fmt, imgsz=imgsz, batch=batch, dynamic=dynamic, half=half, device=device)
    if fmt == "onnx":
        options["simplify"] = simplify  # ultralytics' default (True) would install onnxslim
        if opset:
            options["opset"] = opset
    out = Path(model.export(**options))
    print(f"Exported {weights} to {out}")
    return out
