"""Name -> attention block class, so a model YAML can name a block without a channel count.

A registered block is an ``nn.Module`` whose constructor takes the input channel count first,
then its own hyperparameters with the paper's defaults: ``Block(c1, *hyper)``. Its output has
the same number of channels as its input. The parser hook (``attention.hook``) supplies ``c1``.
"""

from __future__ import annotations

from typing import Callable, TypeVar

from torch import nn

T = TypeVar("T", bound=type[nn.Module])

_BLOCKS: dict[str, type[nn.Module]] = {}


class AttentionConfigError(ValueError):
    """A model YAML asked for an attention block in a way that cannot be built."""


def register(cls: T | None = None, *, name: str | None = None) -> T | Callable[[T], T]:
    """Register a block class under ``name`` (default: the class name); usable as ``@register``.

    Registering after ``import attention`` is enough: the hook looks names up at parse time.
    """

    def add(block: T) -> T:
        if not (isinstance(block, type) and issubclass(block, nn.Module)):
            raise TypeError(f"register() takes an nn.Module subclass, got {block!r}")
        key = name or block.__name__
        if not key.isidentifier():
            raise ValueError(f"block name {key!r} is not a valid YAML module name (letters, digits, _)")
        old = _BLOCKS.get(key)
        if old is not None and old is not block and (old.__module__, old.__qualname__) != (
            block.__module__,
            block.__qualname__,
        ):
            raise ValueError(f"block name {key!r} is already registered by {old.__module__}.{old.__qualname__}")
        _BLOCKS[key] = block
        return block

    return add(cls) if cls is not None else add


def available() -> list[str]:
    """Sorted names of every registered block."""
    return sorted(_BLOCKS)


def get(name: str) -> type[nn.Module]:
    """The block class registered as ``name``; KeyError lists the known names."""
    try:
        return _BLOCKS[name]
    except KeyError:
        raise KeyError(f"unknown attention block {name!r}; known: {', '.join(available())}") from None


def is_registered(name: str) -> bool:
    return name in _BLOCKS


def is_block(module: object) -> bool:
    """module is an instance of a registered block class."""
    return type(module) in set(_BLOCKS.values())
