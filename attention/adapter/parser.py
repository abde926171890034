"""Attention blocks in model YAMLs: the hook on ultralytics' model parser that gives each block its channels.

``ultralytics.nn.tasks.parse_model`` looks each YAML module name up in its own module namespace
and resolves string arguments against its local variables (that is how ``[nc]`` reaches Detect).
We wrap it: rows that name a registered block are renamed to a private alias whose builder
receives the parser's channel list through that same string mechanism, so the block gets its
input channel count and the user writes none. Everything else in the parser runs unchanged.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import logging
import math
from typing import Any

import torch
from ultralytics.nn import tasks
from ultralytics.utils import LOGGER

from attention.adapter import compat
from attention.blocks.registry import AttentionConfigError, available, get, is_registered

# Local variables of parse_model our rows rely on (compat's "parser" feature checks they exist).
PARSER_LOCALS = ("ch", "f", "width", "max_channels")
_ALIAS = "attention:{}"  # not an identifier, so it can never clash with an ultralytics name
_BUILDERS: dict[type, type] = {}


def _where(d: dict, i: int) -> str:
    scale = f" (scale {d['scale']})" if d.get("scale") and d.get("scales") else ""
    return f"row {i} of {d.get('yaml_file') or 'the model YAML'}{scale}"


def _how_to_write(block: type, f: int) -> str:
    """'[-1, 1, CBAM, []] or [-1, 1, CBAM, [ratio, kernel]] (defaults: ratio=8, kernel=7)'."""
    name = block.__name__
    params = list(inspect.signature(block.__init__).parameters.values())[2:]  # drop self, c1
    defaults = ", ".join(f"{p.name}={p.default!r}" for p in params if p.default is not p.empty)
    text = f"[{f}, 1, {name}, []]"
    if params:
        text += f" or [{f}, 1, {name}, [{', '.join(p.name for p in params)}]]"
    return text + (f" (defaults: {defaults})" if defaults else "")


def _looks_like_channels(arg: Any, c1: int, width: float, max_channels: float) -> bool:
    """A classic YOLOv5 tutorial row passes the layer's channel count first (``[1024]``)."""
    if not isinstance(arg, int) or isinstance(arg, bool) or arg < 64:  # no block hyperparameter is that big
        return False
    scaled = math.ceil(min(arg, max_channels) * width / 8) * 8  # ultralytics' make_divisible(x, 8)
    return c1 in (arg, scaled)


def _builder(block: type) -> type:
    """An nn.Module type the parser can call with its resolved args; returns the real block."""
    if block in _BUILDERS:
        return _BUILDERS[block]

    def __new__(cls, ch, f, width, max_channels, where, *args):
        name = block.__name__
        c1 = ch[f]
        if args and _looks_like_channels(args[0], c1, width, max_channels):
            LOGGER.warning(
                f"{where}: {name} infers its channels ({c1} here); ignoring the channel count {args[0]} "
                f"in its arguments. Write {_how_to_write(block, f)}"
            )
            args = args[1:]
        try:
            built = block(c1, *args)
        except (TypeError, ValueError) as e:
            raise AttentionConfigError(
                f"{where}: {name}{list(args)} cannot be built on {c1} channels: {e}. "
                f"Attention rows take no channel count: write {_how_to_write(block, f)}"
            ) from None
        return built

    # Same printed name as the block, so the parser's summary shows e.g. attention.blocks.cbam.CBAM.
    b = type(block.__name__, (torch.nn.Module,), {"__new__": __new__, "__module__": block.__module__})
    b.__qualname__ = block.__qualname__
    _BUILDERS[block] = b
    return b


def _scale(d: dict) -> tuple[float, float]:
    """(width, max_channels) as parse_model will choose them, for the channel-count check."""
    scales = d.get("scales")
    if scales:
        scale = d.get("scale") or next(iter(scales))
        if scale not in scales:
            raise AttentionConfigError(f"{d.get('yaml_file')}: unknown scale {scale!r}; known: {', '.join(scales)}")
        return float(scales[scale][1]), float(scales[scale][2])
    return float(d.get("width_multiple", 1.0)), float("inf")


def _rewrite(d: dict) -> dict:
    """A copy of the model dict whose attention rows call our builders with the parser's channels."""
    d = dict(d)
    width, max_channels = _scale(d)
    rows, n_backbone = [], len(d.get("backbone") or [])
    for i, row in enumerate(list(d.get("backbone") or []) + list(d.get("head") or [])):
        if not (isinstance(row, (list, tuple)) and len(row) == 4):
            raise AttentionConfigError(f"{_where(d, i)}: expected [from, number, module, args], got {row!r}")
        f, n, m, args = row
        if not isinstance(m, str):
            raise AttentionConfigError(f"{_where(d, i)}: module name must be a string, got {m!r}")
        args = list(args or []) if isinstance(args, (list, tuple)) or args is None else [args]
        if is_registered(m):
            if not isinstance(f, int) or isinstance(f, bool):
                raise AttentionConfigError(f"{_where(d, i)}: {m} takes one input; 'from' must be one layer index, got {f}")
            alias = _ALIAS.format(m)
            vars(tasks)[alias] = _builder(get(m))
            # Strings are resolved by the parser: names of its locals, else Python literals.
            row = [f, n, alias, [*PARSER_LOCALS, repr(_where(d, i)), *args]]
        elif not (m.startswith(("nn.", "torchvision.ops.")) or m in vars(tasks)):
            close = difflib.get_close_matches(m, available(), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise AttentionConfigError(
                f"{_where(d, i)}: unknown module {m!r}{hint}; known attention blocks: {', '.join(available())}"
            )
        rows.append(list(row))
    d["backbone"], d["head"] = rows[:n_backbone], rows[n_backbone:]
    return d


class _TidyArgs(logging.Filter):
    """Show our rows' YAML arguments in the parser's summary instead of the channel list it passed."""

    def __init__(self, user_args: dict[int, list]):
        super().__init__()
        self.user_args = user_args

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        head = msg[:3].strip()
        if head.isdigit() and int(head) in self.user_args and "[[" in msg:
            record.msg, record.args = msg[: msg.index("[[")] + str(self.user_args[int(head)]), ()
        return True


def install() -> None:
    """Wrap ultralytics' parse_model once; idempotent, and safe to call in worker processes."""
    if getattr(tasks.parse_model, "_attention_hook", False) or not compat.enabled("parser"):
        return
    original = tasks.parse_model

    @functools.wraps(original)
    def parse_model(d, ch, verbose=True):
        rows = list(d.get("backbone") or []) + list(d.get("head") or [])
        ours = {i: list(r[3] or []) for i, r in enumerate(rows) if isinstance(r, (list, tuple)) and len(r) == 4
                and isinstance(r[2], str) and is_registered(r[2])}
        tidy = _TidyArgs(ours)
        LOGGER.addFilter(tidy)
        try:
            return original(_rewrite(d), ch, verbose)
        finally:
            LOGGER.removeFilter(tidy)

    parse_model._attention_hook = True
    tasks.parse_model = parse_model
