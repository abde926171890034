"""The built-in attention blocks; importing this package registers SE, ECA, CA and CBAM.

Every block is ``Block(c1, *hyper)``: input channels first, then the paper's hyperparameters,
and returns a tensor shaped like its input.
"""

from __future__ import annotations

import numbers

from attention.registry import AttentionConfigError


# Shared argument checks. Defined before the block imports below because the block modules
# import them from here; a YAML typo should fail at build time with a sentence, not deep in torch.
def check_int(block: str, arg: str, value: object) -> int:
    """``value`` as an int if it is a positive integer (bool excluded), else AttentionConfigError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise AttentionConfigError(f"{block}: {arg} must be a positive int, got {value!r}")
    return int(value)


def check_hidden(block: str, c1: int, ratio: int) -> int:
    """Hidden width ``c1 // ratio`` of a reduction MLP; it must keep at least one channel."""
    if ratio > c1:
        raise AttentionConfigError(
            f"{block}: ratio {ratio} leaves no hidden channels for {c1} input channels (need ratio <= channels)"
        )
    return c1 // ratio


from attention.blocks.ca import CA  # noqa: E402
from attention.blocks.cbam import CBAM  # noqa: E402
from attention.blocks.eca import ECA  # noqa: E402
from attention.blocks.se import SE  # noqa: E402

__all__ = ["CA", "CBAM", "ECA", "SE"]
