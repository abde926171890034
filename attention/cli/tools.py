"""Model commands: maps (where each block looks), export (ONNX or TorchScript), compat."""

from __future__ import annotations

import argparse

from attention.inference.export import FORMATS

MAPS_HELP = "save one attention-map PNG per attention block of a checkpoint, for one image"
EXPORT_HELP = f"export a checkpoint with ultralytics' exporter, to {' or '.join(FORMATS)}"
COMPAT_HELP = "which features work with the installed ultralytics release"


def add_maps(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, help="checkpoint (.pt) of a model with attention blocks")
    p.add_argument("--source", required=True, help="one image file (any format OpenCV reads)")
    p.add_argument("--imgsz", "--img", "--img-size", type=int, default=640, help="inference size in px, the long side "
                   "(default 640)")
    p.add_argument("--project", default="runs/maps")
    p.add_argument("--name", default="exp")
    p.add_argument("--exist-ok", action="store_true")


def maps(a: argparse.Namespace) -> object:
    from attention.inference.maps import attention_maps

    return attention_maps(a.weights, a.source, a.imgsz, a.project, a.name, a.exist_ok)


def add_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, help="checkpoint (.pt)")
    p.add_argument("--format", default="onnx", choices=FORMATS, help="onnx (the default; needs the onnx package) or "
                   "torchscript; for ultralytics' other formats call YOLO('best.pt').export(format=...) after "
                   "import attention")
    p.add_argument("--imgsz", "--img", "--img-size", type=int, default=640, help="input size in px (default 640)")
    p.add_argument("--batch", type=int, default=1, help="batch size of the exported input (default 1)")
    p.add_argument("--dynamic", action="store_true", help="symbolic batch, height and width")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: ultralytics' choice)")
    p.add_argument("--simplify", action="store_true", help="simplify the ONNX graph (needs onnxslim and onnxruntime)")
    p.add_argument("--half", action="store_true", help="fp16 (GPU exports)")
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or cpu")


def export(a: argparse.Namespace) -> object:
    from attention.inference.export import export

    return export(a.weights, a.format, imgsz=a.imgsz, batch=a.batch, dynamic=a.dynamic, opset=a.opset,
                  simplify=a.simplify, half=a.half, device=a.device or None)


def add_compat(p: argparse.ArgumentParser) -> None:
    pass


def compat(a: argparse.Namespace) -> object:
    from attention.adapter import compat as c

    print(f"ultralytics {c.VERSION}; yolov5-attention is tested on {c.OLDEST} - {c.NEWEST}")
    rows = c.table()
    for row in rows:
        print(f"  {'on ' if row['on'] == 'yes' else 'OFF'}  {row['feature']} (works on {row['works on']})")
    return rows
