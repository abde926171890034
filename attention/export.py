"""ONNX export of a model with attention blocks, without ultralytics' exporter.

``YOLO(...).export(format="onnx")`` works too, but it checks (and may try to pip-install) optional
packages such as onnxslim; this module needs only torch and onnx. The graph is what ultralytics
exports: Conv+BN fused, Detect in export mode (one output, (N, 4 + nc, anchors), boxes xywh in
input pixels). Blocks export their plain definitions (CBAM's spatial convolution is one Conv node).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
from torch import nn

DEFAULT_OPSET = 17


def prepare(model: nn.Module, fuse: bool = True) -> nn.Module:
    """A copy of an ultralytics DetectionModel (or a YOLO wrapper) ready to export: eval, fused, Detect in export mode."""
    from ultralytics.engine.model import Model

    if isinstance(model, Model):  # the YOLO wrapper: export its DetectionModel
        model = model.model
    m = copy.deepcopy(model).float().eval()
    if fuse and hasattr(m, "fuse"):
        m = m.fuse(verbose=False)
    for layer in m.modules():
        if hasattr(layer, "export") and hasattr(layer, "format"):
            layer.export, layer.format = True, "onnx"
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def export_onnx(
    model: nn.Module,
    file: str | Path,
    imgsz: int | tuple[int, int] = 640,
    batch: int = 1,
    opset: int = DEFAULT_OPSET,
    dynamic: bool = False,
    fuse: bool = True,
) -> Path:
    """Export ``model`` (a DetectionModel, or a YOLO object) to ``file``; returns the path.

    ``dynamic=True`` makes batch, height and width symbolic.
    """
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    m = prepare(model, fuse)
    x = torch.zeros(batch, 3, h, w)
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    axes = {"images": {0: "batch", 2: "height", 3: "width"}, "output0": {0: "batch", 2: "anchors"}} if dynamic else None
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter announces its deprecation
        torch.onnx.export(
            m, (x,), str(file), dynamo=False, opset_version=opset, input_names=["images"],
            output_names=["output0"], dynamic_axes=axes, do_constant_folding=True,
        )
    return file
