"""yolov5-attention: attention blocks for YOLOv5 small-object detection, as a plugin to ultralytics.

``import attention`` registers the blocks and wires them into ultralytics (attention.adapter): any
model YAML can then name a block (``[-1, 1, CBAM, []]``) without a channel count, the shipped
variants load by name from any folder (``YOLO("yolov5s-cbam.yaml")``), and checkpoints with blocks
load under ultralytics' restricted loading. The blocks themselves (attention.blocks) are plain torch.
"""

from attention import blocks  # noqa: F401  (registers the built-in blocks)
from attention.adapter import install
from attention.blocks.gate import IdentityGate
from attention.blocks.registry import AttentionConfigError, available, get, register, registered

install()

__all__ = ["AttentionConfigError", "IdentityGate", "available", "get", "install", "register", "registered"]
__version__ = "0.2.0"
