"""The built-in blocks; importing this package registers each (SE, ECA, CA, CBAM, the rest of the zoo, WeightedFusion).

Every attention block is ``Block(c1, *hyper)``: input channels first, then the paper's hyperparameters,
and returns a tensor shaped like its input. WeightedFusion takes several inputs (registry.Spec).
"""

from __future__ import annotations

from attention.blocks.ca import CA
from attention.blocks.cbam import CBAM
from attention.blocks.criss_cross import CrissCrossAttention
from attention.blocks.eca import ECA
from attention.blocks.fusion import WeightedFusion
from attention.blocks.gam import GAM
from attention.blocks.mhsa import MHSA
from attention.blocks.nam import NAMAttention
from attention.blocks.s2mlp import S2Attention
from attention.blocks.se import SE
from attention.blocks.shuffle import ShuffleAttention
from attention.blocks.simam import SimAM
from attention.blocks.sk import SKAttention
from attention.blocks.soca import SOCA

__all__ = ["CA", "CBAM", "CrissCrossAttention", "ECA", "GAM", "MHSA", "NAMAttention", "S2Attention", "SE",
           "SKAttention", "SOCA", "ShuffleAttention", "SimAM", "WeightedFusion"]
