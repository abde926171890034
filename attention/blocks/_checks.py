"""Argument checks shared by the blocks: a YAML typo fails at build time with a sentence, not deep in torch."""

from __future__ import annotations

import numbers

from attention.registry import AttentionConfigError


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
