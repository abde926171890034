"""The normalized Gaussian Wasserstein distance between boxes (Wang et al. 2021, arXiv 2110.13389).

A box (cx, cy, w, h) is read as the 2-D Gaussian N([cx, cy], diag(w²/4, h²/4)). The 2-Wasserstein distance of two
such Gaussians has a closed form, the Euclidean distance between the vectors (cx, cy, w/2, h/2); NWD maps it into
(0, 1] as exp(-W2 / C). Unlike IoU it is not flat at zero when two small boxes do not overlap and it changes as
smoothly for a 4 px box as for a 400 px one, which is why the paper uses it for tiny objects.

C is in the boxes' units (pixels of the network input here): the paper sets it to the average absolute object size
of the dataset (12.8 px on AI-TOD), so NWD of a box one object size away is exp(-1).
"""

from __future__ import annotations

import torch


def _centre_and_half_size(boxes: torch.Tensor, xywh: bool) -> torch.Tensor:
    """(..., 4) boxes as (cx, cy, w/2, h/2): the Gaussian's mean and the square roots of its variances."""
    if xywh:
        return torch.cat((boxes[..., :2], boxes[..., 2:] / 2), -1)
    return torch.cat(((boxes[..., :2] + boxes[..., 2:]) / 2, (boxes[..., 2:] - boxes[..., :2]) / 2), -1)


def wasserstein(a: torch.Tensor, b: torch.Tensor, xywh: bool = False) -> torch.Tensor:
    """W2 distance between the Gaussians of boxes a and b ((..., 4), xyxy or xywh, broadcast): (...)."""
    # vector_norm, not sqrt of a sum of squares: its gradient at equal boxes is 0 (sqrt's derivative is infinite at
    # 0), and it keeps the distance of boxes a hair apart from underflowing.
    return torch.linalg.vector_norm(_centre_and_half_size(a, xywh) - _centre_and_half_size(b, xywh), dim=-1)


def nwd(a: torch.Tensor, b: torch.Tensor, c: float, xywh: bool = False) -> torch.Tensor:
    """Normalized Gaussian Wasserstein distance exp(-W2(a, b) / c) of boxes a and b, in (0, 1]; 1 for equal boxes.

    c: the normalizing constant, in the boxes' units. Computed in float32 at least (half-precision boxes of a few
    hundred pixels would round the distance away).
    """
    if c <= 0:
        raise ValueError(f"NWD's constant c must be positive, got {c}")
    dtype = torch.promote_types(a.dtype, torch.float32)
    return torch.exp(-wasserstein(a.to(dtype), b.to(dtype), xywh) / c)
