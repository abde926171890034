"""Registered modules in model YAMLs: the hook on ultralytics' model parser that builds them with their channels.

ultralytics' ``parse_model(d, ch)`` turns a model dict into an ``nn.Sequential`` of one layer per row, each with
its row's index ``i``, inputs ``f``, ``type`` and parameter count ``np``; it knows only its own modules and works
out every layer's channels itself. We parse a copy of the dict in which each of our rows is a stock *stand-in* as
wide as our module will be, followed, after the last row, by one *probe* per input of ours:

- stand-in: ``nn.Identity``, which keeps its input's width, for a module that keeps its channels; a 1x1 ``Conv
  [c2, 1]``, scaled like any Conv, for one whose first argument is its output channels. A multi-input row's
  stand-in reads its last input. So the rows after ours are parsed against the right widths.
- probe: ``[x, n, Conv, [c, 1]]`` on input x, built with layer x's width as input channels and, on the first
  input, as many copies as the row's depth-scaled number; ``c`` is 8, or the row's first argument where that may
  be a classic channel count, which the probe then shows scaled.

Each of our modules is then built with what its probes show (``_build``) and takes its stand-in's place, with
``i``, ``f`` (a multi-input row's whole list), ``type`` and ``np``; the probes are dropped, ``save`` lists the
layers later rows read, and DetectionModel's stride pass runs through our modules. compat's "parser" feature
parses a small model to check that the installed release builds stand-ins and probes like this.

A model dict's ``detect_widths_from: k`` (the P2 configs) then resizes the head's branches on inputs k onwards
(attention.adapter.heads), before DetectionModel computes strides and initialises biases.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn
from ultralytics.nn import tasks
from ultralytics.utils import LOGGER

from attention.adapter import compat, heads
from attention.blocks.registry import AttentionConfigError, Spec, is_registered, registered, spec
from attention.errors import UserError


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


def _count(arg: Any) -> bool:
    """arg can be a channel count."""
    return type(arg) is int and arg > 0


def _classic(s: Spec, args: list) -> bool:
    """The row may be a classic YOLOv5 tutorial's, whose first argument is the layer's channel count ([1024])."""
    return s.channels == "same" and s.inputs == 1 and bool(args) and _count(args[0]) and args[0] >= 64


@dataclass
class _Row:
    """One row naming a registered module, and where its probes stand among the parsed layers."""

    i: int
    name: str
    f: Any  # as written: an index, or a list of them
    n: int
    args: list
    where: str
    probes: list[int] = field(default_factory=list)  # the layer index of the probe on each input


def _check_row(d: dict, i: int, row: Any) -> tuple[Any, Any, str, list]:
    if not (isinstance(row, (list, tuple)) and len(row) == 4):
        raise AttentionConfigError(f"{_where(d, i)}: expected [from, number, module, args], got {row!r}")
    f, n, m, args = row
    if not isinstance(m, str):
        raise AttentionConfigError(f"{_where(d, i)}: module name must be a string, got {m!r}")
    if not (is_registered(m) or m.startswith(("nn.", "torchvision.ops.")) or m in vars(tasks)):
        close = difflib.get_close_matches(m, registered(), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise AttentionConfigError(f"{_where(d, i)}: unknown module {m!r}{hint}; registered modules: "
                                   f"{', '.join(registered())}")
    return f, n, m, list(args or []) if isinstance(args, (list, tuple)) or args is None else [args]


def _check_ours(d: dict, i: int, f: Any, n: Any, m: str) -> None:
    s, many = spec(m), isinstance(f, (list, tuple))
    inputs = list(f) if many else [f]
    if many != (s.inputs == "many") or not inputs or not all(type(x) is int for x in inputs):
        takes, want = ("several inputs", "a list of layer indices") if s.inputs == "many" else (
            "one input", "one layer index")
        raise AttentionConfigError(f"{_where(d, i)}: {m} takes {takes}; 'from' must be {want}, got {f}")
    if inputs != [-1] and not all(0 <= (x if x >= 0 else i + x) < i for x in inputs):  # -1 on row 0: the image
        raise AttentionConfigError(f"{_where(d, i)}: 'from' {f} must name earlier layers")
    if not _count(n):
        raise AttentionConfigError(f"{_where(d, i)}: the number of {m} must be a positive integer, got {n!r}")
    if (s.channels == "arg" or s.inputs == "many") and not compat.enabled("module_channels"):
        feature = compat.FEATURES["module_channels"]
        raise AttentionConfigError(f"{_where(d, i)}: {m} needs ultralytics {feature.works} ({feature.title}); "
                                   f"this is {compat.VERSION}")


def _stand_ins(d: dict) -> tuple[dict, list[_Row]]:
    """A copy of the model dict with stand-ins for our rows and probes after the last row; and our rows."""
    scales, scale = d.get("scales"), d.get("scale")
    if scales and scale and scale not in scales:
        raise AttentionConfigError(f"{d.get('yaml_file')}: unknown scale {scale!r}; known: {', '.join(scales)}")
    backbone, head = list(d.get("backbone") or []), list(d.get("head") or [])
    rows, ours = [], []
    for i, row in enumerate(backbone + head):
        f, n, m, args = _check_row(d, i, row)
        if not is_registered(m):
            rows.append([f, n, m, args])
            continue
        _check_ours(d, i, f, n, m)
        s = spec(m)
        ours.append(_Row(i, m, list(f) if isinstance(f, (list, tuple)) else f, n, args, _where(d, i)))
        last = f[-1] if isinstance(f, (list, tuple)) else f
        wide = s.channels == "arg" and args and _count(args[0])  # else the row fails once its input width is known
        rows.append([last, 1, "Conv", [args[0], 1]] if wide else [last, 1, "nn.Identity", []])
    probes = []
    for row in ours:
        for k, x in enumerate(row.f if isinstance(row.f, list) else [row.f]):
            row.probes.append(len(rows) + len(probes))
            source = max(x if x >= 0 else row.i + x, 0)  # -1 on row 0 is the image: any layer shows the number
            c = row.args[0] if k == 0 and _classic(spec(row.name), row.args) else 8
            probes.append([source, row.n if k == 0 else 1, "Conv", [c, 1]])
    return {**d, "backbone": rows[:len(backbone)], "head": rows[len(backbone):] + probes}, ours


def _build(s: Spec, name: str, c1: Any, n: int, c2: int | None, args: list, scaled: int, where: str,
           f: Any) -> nn.Module:
    """The module of one row: c1 its input channels (a list for several inputs), n its depth-scaled number, c2 its
    output channels as the parser scaled them (channels="arg"), scaled its first argument as the parser scales it."""
    written, args = list(args), list(args)
    if _classic(s, args) and c1 in (args[0], scaled):
        LOGGER.warning(f"{where}: {name} infers its channels ({c1} here); ignoring the channel count {args[0]} in "
                       f"its arguments. Write {how_to_write(name, f)}")
        args = args[1:]
    try:
        if s.channels == "arg":
            if not args or not _count(args[0]):
                raise UserError(f"its first argument must be the output channel count, got {args[:1] or 'none'}")
            args.pop(0)
        elif s.inputs == "many":
            if len(set(c1)) > 1:
                raise UserError(f"its inputs must have equal channels, got {c1}")
            c2 = c1[0]
        else:
            c2 = c1
        head = [c1, c2] if s.channels == "arg" else [c1]
        if s.repeat == "inside" or n == 1:
            return s.cls(*head, *([n] if s.repeat == "inside" else []), *args)
        # n copies in a chain: the first maps the input's channels, the others keep c2
        return nn.Sequential(s.cls(*head, *args),
                             *(s.cls(*([c2, c2] if s.channels == "arg" else [c2]), *args) for _ in range(n - 1)))
    except (TypeError, ValueError, KeyError) as e:
        what = f"{len(c1)} inputs of {c1}" if isinstance(c1, list) else f"{c1}"
        reason = str(e)[1:-1] if isinstance(e, KeyError) else str(e)  # a KeyError's message comes quoted
        how = "Attention rows take no channel count: write" if s.is_attention else "Write the row as"
        raise AttentionConfigError(f"{where}: {name}{written} cannot be built on {what} channels: {reason}. "
                                   f"{how} {how_to_write(name, f)}") from None


def _conv(layer: nn.Module) -> nn.Conv2d:
    """The convolution of a parsed 1x1 Conv row (the first copy where the row's number made several)."""
    return (layer[0] if isinstance(layer, nn.Sequential) else layer).conv


def _swap(layers: nn.Sequential, row: _Row, ch: int) -> tuple[nn.Module, int]:
    """Build our module from what the parser built for the row, put it in its stand-in's place; and its number."""
    s, stand_in, probes = spec(row.name), layers[row.i], [layers[k] for k in row.probes]
    c1s = [ch if row.i == 0 else _conv(p).in_channels for p in probes]  # row 0 reads the image
    n = len(probes[0]) if isinstance(probes[0], nn.Sequential) else 1
    c2 = None if isinstance(stand_in, nn.Identity) else _conv(stand_in).out_channels
    module = _build(s, row.name, c1s if s.inputs == "many" else c1s[0], n, c2, row.args,
                    _conv(probes[0]).out_channels, row.where, row.f)
    module.i, module.f, module.type = row.i, row.f, f"{s.cls.__module__}.{s.cls.__qualname__}"
    module.np = sum(p.numel() for p in module.parameters())
    layers[row.i] = module
    return module, n


class _Held(logging.Filter):
    """Holds back ultralytics' log lines while the parser runs: its summary names stand-ins and lists probes."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.params: dict[int, int] = {}  # row -> its parameter count, where changed after the parser built it

    def filter(self, record: logging.LogRecord) -> bool:
        self.records.append(record)
        return False

    def replay(self, n_rows: int, ours: dict[int, str]) -> None:
        """Log the held lines, with our rows' summary lines (where built) for their stand-ins' and no probes'."""
        for record in self.records:
            head = record.getMessage()[:3].strip()  # a summary line starts with its row index
            row = int(head) if head.isdigit() else None
            if row is not None and row >= n_rows:
                continue  # a probe's
            if row in ours:
                if not ours[row]:
                    continue  # an error stopped us before this row was built
                record.msg, record.args = ours[row], ()
            elif row in self.params:  # the parameter count: columns 26-35 of ultralytics' summary line
                text = record.getMessage()
                record.msg, record.args = f"{text[:26]}{self.params[row]:10.0f}{text[36:]}", ()
            LOGGER.handle(record)


def _parse(original: Callable, d: dict, ch: int, verbose: bool) -> tuple[nn.Sequential, list[int]]:
    stand_in, ours = _stand_ins(d)
    widths = heads.widths_from(d)  # the head's later levels as wide as a base's (P2 configs); None: as parsed
    if not ours and widths is None:
        return original(stand_in, ch, verbose)
    n_rows = len(d.get("backbone") or []) + len(d.get("head") or [])
    held, lines = _Held(), {r.i: "" for r in ours}
    LOGGER.addFilter(held)
    try:
        try:
            layers, _ = original(stand_in, ch, verbose)
        finally:
            LOGGER.removeFilter(held)
        for r in ours:
            module, n = _swap(layers, r, ch)
            lines[r.i] = f"{r.i:>3}{r.f!s:>20}{n:>3}{module.np:10.0f}  {module.type:<45}{r.args!s:<30}"  # its columns
        if widths is not None:
            held.params[n_rows - 1] = heads.resize(layers[n_rows - 1], widths, _where(d, n_rows - 1))
    finally:
        held.replay(n_rows, lines)
    layers = layers[:n_rows]
    save = {x % i for i, layer in enumerate(layers) for x in ([layer.f] if isinstance(layer.f, int) else layer.f)
            if x != -1}  # the layers whose outputs a later row reads, other than the one just before it
    return layers, sorted(save)


def install() -> None:
    """Wrap ultralytics' parse_model once (our one change to its namespace); idempotent, and safe in workers."""
    if getattr(tasks.parse_model, "_attention_hook", False) or not compat.enabled("parser"):
        return
    original = tasks.parse_model

    @functools.wraps(original)
    def parse_model(d, ch, verbose=True):
        return _parse(original, d, ch, verbose)

    parse_model._attention_hook = True
    tasks.parse_model = parse_model
