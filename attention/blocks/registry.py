"""Name -> module class, and how a model YAML row builds it, so that a YAML names modules without channel counts.

An attention block (the default) keeps its input's channels and takes one input: ``Block(c1, *hyper)``,
the parser hook supplies ``c1`` and the YAML row gives only the paper's hyperparameters. Other modules say
where they register how they are built (``Spec``):

- ``channels="arg"``: the row's first argument is the output channel count, scaled by the model's width and
  capped by its max_channels as ultralytics scales its own layers: ``Module(c1, c2, *args)``;
- ``inputs="many"``: the row's ``from`` is a list and the module gets the list of input channels first:
  ``Module([c1, c1b, ...], *args)``; with ``channels="same"`` they must all be equal, and so is the output;
- ``repeat="inside"``: the row's number (depth-scaled, like C3's) is passed after the channels,
  ``Module(c1, c2, n, *args)``; by default a number n > 1 chains n copies of the module;
- ``replaces="C3"``: the module is a drop-in for that ultralytics layer, with the same tensor names for the
  part they share, so weight transfer moves a base's C3 into it (attention.training.transfer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, TypeVar

from torch import nn

from attention.errors import UserError

T = TypeVar("T", bound=type[nn.Module])


class AttentionConfigError(UserError):
    """A model YAML asked for a registered module in a way that cannot be built."""


@dataclass(frozen=True)
class Spec:
    """How a YAML row builds a registered module (see the module docstring)."""

    cls: type[nn.Module]
    channels: Literal["same", "arg"] = "same"
    inputs: Literal[1, "many"] = 1
    repeat: Literal["module", "inside"] = "module"
    replaces: str | None = None

    @property
    def is_attention(self) -> bool:
        """Keeps its input's channels, one input, no stand-in for another layer: a block inserted after a layer."""
        return self.channels == "same" and self.inputs == 1 and self.replaces is None


_SPECS: dict[str, Spec] = {}
_BLOCKS: dict[str, type[nn.Module]] = {}  # the attention blocks among them, name -> class


def register(cls: T | None = None, *, name: str | None = None, channels: str = "same", inputs: int | str = 1,
             repeat: str = "module", replaces: str | None = None) -> T | Callable[[T], T]:
    """Register a module class under ``name`` (default: the class name); usable as ``@register`` or
    ``@register(channels="arg", repeat="inside")``. Registering after ``import attention`` is enough."""
    if channels not in ("same", "arg") or inputs not in (1, "many") or repeat not in ("module", "inside"):
        raise UserError(f"register(): channels must be 'same' or 'arg', inputs 1 or 'many', repeat 'module' or "
                         f"'inside'; got channels={channels!r}, inputs={inputs!r}, repeat={repeat!r}")

    def add(block: T) -> T:
        if not (isinstance(block, type) and issubclass(block, nn.Module)):
            raise TypeError(f"register() takes an nn.Module subclass, got {block!r}")
        key = name or block.__name__
        if not key.isidentifier():
            raise UserError(f"module name {key!r} is not a valid YAML module name (letters, digits, _)")
        old = _SPECS.get(key)
        if old is not None and (old.cls.__module__, old.cls.__qualname__) != (block.__module__, block.__qualname__):
            raise UserError(f"module name {key!r} is already registered by {old.cls.__module__}."
                             f"{old.cls.__qualname__}")
        spec = Spec(block, channels, inputs, repeat, replaces)
        _SPECS[key] = spec
        _BLOCKS.pop(key, None)
        if spec.is_attention:
            _BLOCKS[key] = block
        return block

    return add(cls) if cls is not None else add


def unregister(name: str) -> None:
    """Forget a registered name (tests, notebooks)."""
    _SPECS.pop(name, None)
    _BLOCKS.pop(name, None)


def available() -> list[str]:
    """Sorted names of the registered attention blocks."""
    return sorted(_BLOCKS)


def registered() -> list[str]:
    """Sorted names of every registered module: attention blocks and the others."""
    return sorted(_SPECS)


def get(name: str) -> type[nn.Module]:
    """The class registered as ``name``; KeyError lists the known names."""
    return spec(name).cls


def spec(name: str) -> Spec:
    try:
        return _SPECS[name]
    except KeyError:
        raise KeyError(f"unknown module {name!r}; registered: {', '.join(registered())}") from None


def is_registered(name: str) -> bool:
    return name in _SPECS


def is_block(module: object) -> bool:
    """module is an instance of a registered attention block class."""
    return type(module) in set(_BLOCKS.values())


def stands_in_for(module: object) -> str | None:
    """The layer type a registered drop-in module replaces (C3 for C3Attn), else None."""
    return next((s.replaces for s in _SPECS.values() if type(module) is s.cls), None)


def classes() -> list[type[nn.Module]]:
    """Every registered class (what restricted loading must allow in a checkpoint)."""
    return [s.cls for s in _SPECS.values()]
