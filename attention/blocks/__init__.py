"""The built-in attention blocks; importing this package registers SE, ECA, CA and CBAM.

Every block is ``Block(c1, *hyper)``: input channels first, then the paper's hyperparameters,
and returns a tensor shaped like its input.
"""

from __future__ import annotations

from attention.blocks.ca import CA
from attention.blocks.cbam import CBAM
from attention.blocks.eca import ECA
from attention.blocks.se import SE

__all__ = ["CA", "CBAM", "ECA", "SE"]
