"""Argument checks shared by the blocks: a YAML typo fails at build time with a sentence, not deep in torch."""

from __future__ import annotations

import numbers

from attention.blocks.registry import AttentionConfigError


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


def check_divisible(block: str, c1: int, divisor: int, why: str) -> None:
    """``c1`` must be a multiple of ``divisor``: 'ShuffleAttention: channels 40 must be divisible by 2*G = 16 (G=8 groups)'."""
    if c1 % divisor:
        raise AttentionConfigError(f"{block}: channels {c1} must be divisible by {why}")


def check_real(block: str, arg: str, value: object, positive: bool = True) -> float:
    """``value`` as a float if it is a finite (positive) real number (bool excluded), else AttentionConfigError."""
    import math

    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (positive and value <= 0):
        raise AttentionConfigError(
            f"{block}: {arg} must be {'a positive' if positive else 'a finite'} number, got {value!r}"
        )
    return float(value)
