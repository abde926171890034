"""Box losses for tiny objects, in pure torch: the normalized Gaussian Wasserstein distance (NWD) and the choice of
box loss a model YAML carries (its optional top-level ``loss:`` mapping).

Nothing here knows ultralytics: attention/adapter/loss.py puts NWD into ultralytics' detection loss and assigner.
"""

from attention.losses.choice import LossChoice
from attention.losses.nwd import nwd, wasserstein

__all__ = ["LossChoice", "nwd", "wasserstein"]
