"""Registered modules in model YAMLs: the hook on ultralytics' model parser that builds them with their channels.

``ultralytics.nn.tasks.parse_model`` looks each YAML module name up in its own module namespace and resolves
string arguments against its local variables (that is how ``[nc]`` reaches Detect). We wrap it and rewrite
the rows that name a registered module (attention.blocks.registry): each points at a private alias whose
builder receives the parser's channel list ``ch`` through that same string mechanism, so the module gets its
input channels and the user writes none. Everything else in the parser runs unchanged. Three more things
for modules that are not plain attention blocks (registry.Spec):

- Output channels. For a module it does not know, the parser records the input's channel count as the
  output's. A module that changes channels corrects that entry of ``ch`` just before the parser reads it
  again: the next row's ``number`` is an int that does it when the parser first compares it (``n > 1``
  comes before any read of ``ch`` in a row; compat's "parser" feature checks this on the installed release).
- Several inputs. The parser reads ``ch[f]`` for an unknown module, which a list ``f`` cannot index; the row
  is handed to it with its last input, and the built layer gets its real ``f`` (and the save list its
  inputs) back afterwards.
- Repeats. The row's number is applied by the builder: passed to the module (``repeat="inside"``) or as a
  chain of copies, first c1 -> c2 then c2 -> c2; the parser itself always sees one.
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
from attention.blocks.registry import AttentionConfigError, Spec, is_registered, registered, spec

# Local variables of parse_model our rows rely on (compat's "parser" feature checks they exist).
PARSER_LOCALS = ("ch", "width", "max_channels")
_ALIAS = "attention:{}"  # not an identifier, so it can never clash with an ultralytics name


def _where(d: dict, i: int) -> str:
    scale = f" (scale {d['scale']})" if d.get("scale") and d.get("scales") else ""
    return f"row {i} of {d.get('yaml_file') or 'the model YAML'}{scale}"


def how_to_write(name: str, f: Any = -1) -> str:
    """'[-1, 1, CBAM, []] or [-1, 1, CBAM, [ratio, kernel]] (defaults: ratio=8, kernel=7)', per the module's Spec."""
    s = spec(name)
    params = list(inspect.signature(s.cls.__init__).parameters.values())[1:]  # drop self
    fixed = 1 + (s.channels == "arg") + (s.repeat == "inside")  # c1 (or c1 list), c2, n: the parser's part
    own = [p for p in params[fixed:] if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    defaults = ", ".join(f"{p.name}={p.default!r}" for p in own if p.default is not p.empty)
    head = ["c2"] if s.channels == "arg" else []
    frm = "[a, b]" if s.inputs == "many" and f == -1 else f
    text = f"[{frm}, 1, {name}, [{', '.join(head)}]]"
    if own:
        text += f" or [{frm}, 1, {name}, [{', '.join(head + [p.name for p in own])}]]"
    return text + (f" (defaults: {defaults})" if defaults else "")


def _scaled(c2: Any, width: float, max_channels: float) -> int:
    """ultralytics' width scaling of a layer's channel argument: make_divisible(min(c2, max_channels) * width, 8)."""
    return int(math.ceil(min(c2, max_channels) * width / 8) * 8)


def _looks_like_channels(arg: Any, c1: int, width: float, max_channels: float) -> bool:
    """A classic YOLOv5 tutorial row passes the layer's channel count first (``[1024]``)."""
    if not isinstance(arg, int) or isinstance(arg, bool) or arg < 64:  # no block hyperparameter is that big
        return False
    return c1 in (arg, _scaled(arg, width, max_channels))


class _Pending:
    """The true output channels of one rewritten row, to be written into the parser's ``ch`` before it is read."""

    def __init__(self, index: int) -> None:
        self.index, self.ch, self.c2 = index, None, None

    def apply(self) -> None:
        if self.ch is not None:
            self.ch[self.index] = self.c2
            self.ch = None


class _Number(int):
    """The next row's ``number``: comparing it (the parser's first step in a row) applies a pending correction."""

    def __new__(cls, value: int, pending: _Pending) -> _Number:
        obj = super().__new__(cls, value)
        obj.pending = pending
        return obj

    def __gt__(self, other: Any) -> bool:
        self.pending.apply()
        return int(self) > other

    def __reduce__(self):  # a plain int wherever it is kept (a model's args, a checkpoint)
        return int, (int(self),)


def _build(s: Spec, name: str, c1: Any, n: int, args: list, width: float, max_channels: float, where: str,
           f: Any) -> tuple[torch.nn.Module, int]:
    """The module of one row and its output channels."""
    written, args = list(args), list(args)
    if s.channels == "same" and s.inputs == 1 and args and _looks_like_channels(args[0], c1, width, max_channels):
        LOGGER.warning(f"{where}: {name} infers its channels ({c1} here); ignoring the channel count {args[0]} in "
                       f"its arguments. Write {how_to_write(name, f)}")
        args = args[1:]
    try:
        if s.channels == "arg":
            if not args or isinstance(args[0], bool) or not isinstance(args[0], int):
                raise ValueError(f"its first argument must be the output channel count, got {args[:1] or 'none'}")
            c2 = _scaled(args.pop(0), width, max_channels)
        elif s.inputs == "many":
            if len(set(c1)) > 1:
                raise ValueError(f"its inputs must have equal channels, got {c1}")
            c2 = c1[0]
        else:
            c2 = c1
        head = [c1, c2] if s.channels == "arg" else [c1]
        if s.repeat == "inside" or n == 1:
            module = s.cls(*head, *([n] if s.repeat == "inside" else []), *args)
        else:  # n copies in a chain: the first maps the input's channels, the others keep c2
            module = torch.nn.Sequential(s.cls(*head, *args),
                                         *(s.cls(*([c2, c2] if s.channels == "arg" else [c2]), *args)
                                           for _ in range(n - 1)))
    except (TypeError, ValueError, KeyError) as e:
        what = f"{len(c1)} inputs of {c1}" if isinstance(c1, list) else f"{c1}"
        reason = str(e)[1:-1] if isinstance(e, KeyError) else str(e)  # a KeyError's message comes quoted
        how = "Attention rows take no channel count: write" if s.is_attention else "Write the row as"
        raise AttentionConfigError(f"{where}: {name}{written} cannot be built on {what} channels: {reason}. "
                                   f"{how} {how_to_write(name, f)}") from None
    return module, c2


def _builder(name: str, pending: _Pending | None) -> type:
    """An nn.Module type the parser can call with its resolved args; returns the real module."""
    s = spec(name)

    def __new__(cls, ch, width, max_channels, where, f, n, *args):
        c1 = [ch[x] for x in f] if isinstance(f, list) else ch[f]
        module, c2 = _build(s, name, c1, n, list(args), width, max_channels, where, f)
        if pending is not None:
            pending.ch, pending.c2 = ch, c2
        return module

    # Same printed name as the module, so the parser's summary shows e.g. attention.blocks.cbam.CBAM.
    b = type(s.cls.__name__, (torch.nn.Module,), {"__new__": __new__, "__module__": s.cls.__module__})
    b.__qualname__ = s.cls.__qualname__
    return b


def _depth(d: dict) -> tuple[float, float, float]:
    """(depth, width, max_channels) as parse_model will choose them."""
    scales = d.get("scales")
    if scales:
        scale = d.get("scale") or next(iter(scales))
        if scale not in scales:
            raise AttentionConfigError(f"{d.get('yaml_file')}: unknown scale {scale!r}; known: {', '.join(scales)}")
        return float(scales[scale][0]), float(scales[scale][1]), float(scales[scale][2])
    return float(d.get("depth_multiple", 1.0)), float(d.get("width_multiple", 1.0)), float("inf")


def _rewrite(d: dict, token: str) -> tuple[dict, dict[int, Any]]:
    """A copy of the model dict whose registered rows call our builders (named attention:<module>:<row>:<token>
    in the parser's namespace); and the real 'from' of multi-input rows."""
    d = dict(d)
    depth, _, _ = _depth(d)
    rows, n_backbone, real_f, pending = [], len(d.get("backbone") or []), {}, None
    for i, row in enumerate(list(d.get("backbone") or []) + list(d.get("head") or [])):
        if not (isinstance(row, (list, tuple)) and len(row) == 4):
            raise AttentionConfigError(f"{_where(d, i)}: expected [from, number, module, args], got {row!r}")
        f, n, m, args = row
        if not isinstance(m, str):
            raise AttentionConfigError(f"{_where(d, i)}: module name must be a string, got {m!r}")
        args = list(args or []) if isinstance(args, (list, tuple)) or args is None else [args]
        before, pending = pending, None  # a row before that changes channels: this row's number corrects ch
        if is_registered(m):
            s = spec(m)
            many = isinstance(f, (list, tuple))
            if many != (s.inputs == "many") or (many and not f) or not all(
                    isinstance(x, int) and not isinstance(x, bool) for x in (f if many else [f])):
                takes, want = ("several inputs", "a list of layer indices") if s.inputs == "many" else (
                    "one input", "one layer index")
                raise AttentionConfigError(f"{_where(d, i)}: {m} takes {takes}; 'from' must be {want}, got {f}")
            if s.channels == "arg" or s.inputs == "many":
                if not compat.enabled("module_channels"):
                    feature = compat.FEATURES["module_channels"]
                    raise AttentionConfigError(f"{_where(d, i)}: {m} needs ultralytics {feature.works} "
                                               f"({feature.title}); this is {compat.VERSION}")
                if i == 0:
                    raise AttentionConfigError(f"{_where(d, i)}: {m} cannot be the first row")
                pending = _Pending(i)
            if many:
                real_f[i] = list(f)
            alias = _ALIAS.format(f"{m}:{i}:{token}")
            vars(tasks)[alias] = _builder(m, pending)
            n_scaled = max(round(n * depth), 1) if n > 1 else n  # ultralytics' depth gain; the builder repeats
            # Strings are resolved by the parser: names of its locals, else Python literals.
            row = [f[-1] if many else f, _Number(1, before) if before else 1, alias,
                   [*PARSER_LOCALS, repr(_where(d, i)), repr(list(f) if many else f), repr(n_scaled), *args]]
        elif not (m.startswith(("nn.", "torchvision.ops.")) or m in vars(tasks)):
            close = difflib.get_close_matches(m, registered(), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise AttentionConfigError(
                f"{_where(d, i)}: unknown module {m!r}{hint}; registered modules: {', '.join(registered())}"
            )
        else:
            row = [f, _Number(n, before) if before and isinstance(n, int) else n, m, args]
        rows.append(list(row))
    d["backbone"], d["head"] = rows[:n_backbone], rows[n_backbone:]
    return d, real_f


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
        token = f"{id(d)}.{id(rows)}"
        tidy = _TidyArgs(ours)
        try:
            rewritten, real_f = _rewrite(d, token)
            LOGGER.addFilter(tidy)
            layers, save = original(rewritten, ch, verbose)
        finally:
            LOGGER.removeFilter(tidy)
            for key in [k for k in vars(tasks) if k.startswith("attention:") and k.endswith(f":{token}")]:
                del vars(tasks)[key]  # our builders live in the parser's namespace only while it parses
        for i, f in real_f.items():  # multi-input rows get their inputs back, and the save list keeps them
            layers[i].f = f
            save = sorted(set(save) | {x % i for x in f if x != -1})
        return layers, save

    parse_model._attention_hook = True
    tasks.parse_model = parse_model
