"""yolov5-attention: attention blocks for YOLOv5 small-object detection on the ultralytics engine.

``import attention`` registers every block and installs the parser hook, after which any
ultralytics model YAML can name a block (``[-1, 1, CBAM, []]``) without a channel count.
It also puts the blocks on ultralytics' restricted-loading allow-list (attention.safe_load).
"""

from attention.blocks.registry import AttentionConfigError, available, get, register
from attention import blocks  # noqa: F401  (registers the built-in blocks)
from attention.hook import install
from attention import safe_load

install()
safe_load.install()  # checkpoints with our blocks load under ULTRALYTICS_SAFE_LOAD=1

__all__ = ["AttentionConfigError", "available", "get", "register", "install"]
__version__ = "0.1.0"
