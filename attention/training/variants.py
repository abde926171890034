"""Variants named on the command line: a base model YAML and what to add to it, without writing a YAML.

    yolov5s+CBAM@neck   yolov5s+SE@backbone+CBAM@neck   yolov5n-p2.yaml+ECA,3@sppf   yolov5n+nwd,ratio=0.5

A spec is BASE+ITEM+ITEM...: BASE is any model YAML --cfg takes (a shipped name with its scale, with or without
.yaml, or a path); an ITEM is BLOCK[,ARG...]@PLACE (an attention block and its own arguments, positional) or
nwd[,ratio=R][,c=C|auto][,assigner] (the box loss, a top-level ``loss:`` mapping). PLACE is a role found in the
base's rows, or a row index:

- backbone: the backbone rows the neck reads (an SPPF read by the neck stands for the stage it pools): a block after
  each, read by every later row that read it. yolov5: rows 4, 6, 8 (P3, P4, P5); with P2 also row 2.
- sppf: after each SPPF (or SPP) row, read by every later row that read it.
- neck: on each layer Detect reads, appended before Detect and read only by it (the shipped yolov5-cbam.yaml).
- c3: the C3 rows Detect reads (through blocks) become C3Attn with the block inside (the shipped yolov5-c3cbam.yaml).
- N: after row N of the base, read by every later row that read it.

The spec only uses characters that bash and zsh leave alone unquoted and every filesystem takes in a name
(letters, digits, + @ , = . - _), so its canonical form is the variant's name: its run folders, its table rows and
its generated YAML (NAME.yaml, from which ultralytics reads the scale as from the base's name). The YAML is
generated from the spec wherever the spec is resolved (the same bytes on every machine: a Ray worker needs only the
base, which for a shipped name is in the package), built through the same parser hook, and written into the run
folder by the job that trains it (keep), so `--cfg that/NAME.yaml` builds the same model by hand.
"""

from __future__ import annotations

import difflib
import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import torch
import yaml

from attention import cfg as shipped
from attention.adapter.api import DetectionModel
from attention.adapter.model_files import read_model_yaml, scale_in_name
from attention.adapter.parser import how_to_write
from attention.blocks.registry import available, spec
from attention.errors import UserError
from attention.losses.choice import LossChoice

ROLES = ("backbone", "sppf", "neck", "c3")
SPP = ("SPPF", "SPP")
LOSS_OPTIONS = ("ratio", "c", "assigner")  # nwd's options, in the order a canonical spec writes them
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


class SpecError(UserError):
    """A variant spec that cannot be read or placed; the message names the spec, the culprit and what is possible."""


@dataclass(frozen=True)
class Insertion:
    """An attention block with its own arguments, at a role of the base or after a row index."""

    block: str
    args: tuple[Any, ...]
    place: str | int

    def __str__(self) -> str:
        return ",".join([self.block, *map(_text, self.args)]) + f"@{self.place}"


@dataclass(frozen=True)
class Loss:
    """The NWD box loss with the options the user gave (name -> value), written as the YAML's loss mapping."""

    options: tuple[tuple[str, Any], ...]

    def __str__(self) -> str:
        return ",".join(["nwd", *(k if v is True and k == "assigner" else f"{k}={_text(v)}" for k, v in self.options)])

    def mapping(self) -> dict[str, Any]:
        """The YAML's top-level loss mapping: box plus only the options given."""
        return {"box": "nwd", **dict(self.options)}


Item = Union[Insertion, Loss]


@dataclass(frozen=True)
class Variant:
    """A parsed spec: the base as --cfg resolves it (a shipped name, or a file's absolute path) and the items."""

    base: str
    items: tuple[Item, ...]

    @property
    def name(self) -> str:
        """The canonical name: the base's file name without .yaml, then the items (yolov5n-p2+CBAM@neck)."""
        return Path(self.base).stem + "".join(f"+{item}" for item in self.items)

    def __str__(self) -> str:
        """The canonical spec: the name, with a user file's path in front of the base (it resolves anywhere)."""
        return self.name if Path(self.base).name == self.base else self.base + self.name[len(Path(self.base).stem):]

    @property
    def insertions(self) -> list[Insertion]:
        return [item for item in self.items if isinstance(item, Insertion)]

    @property
    def loss(self) -> Loss | None:
        return next((item for item in self.items if isinstance(item, Loss)), None)


def _text(value: Any) -> str:
    """A block argument or loss option as a spec writes it: true/false, 16, 0.5."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def is_spec(cfg: str | Path) -> bool:
    """cfg names a base and items (a '+' in its file name), not a model YAML: a file of that name always wins."""
    path = Path(str(cfg)).expanduser()
    return "+" in path.name and path.suffix not in (".yaml", ".yml") and not path.is_file()


def _fail(text: str, message: str) -> SpecError:
    return SpecError(f"--cfg {text}: {message}")


def _value(text: str, arg: str, what: str) -> bool | int | float:
    """A spec's number or true/false."""
    if arg.lower() in ("true", "false"):
        return arg.lower() == "true"
    if _INT.fullmatch(arg):
        return int(arg)
    if _FLOAT.fullmatch(arg):
        return float(arg)
    raise _fail(text, f"{what} {arg!r} is not a number or true/false")


def _base(text: str, head: str, parts: list[str]) -> tuple[str, list[str]]:
    """The base (as --cfg resolves it) and the item texts. The longest existing file wins, so a generated YAML
    (yolov5s+CBAM@neck.yaml) can be a base itself."""
    for k in range(len(parts) - 1, 1, -1):
        if Path(head + "+".join(parts[:k])).expanduser().is_file():
            parts = ["+".join(parts[:k]), *parts[k:]]
            break
    base = head + parts[0]
    if Path(base).suffix not in (".yaml", ".yml"):
        base += ".yaml"
    try:
        resolved = shipped.model_yaml(base)
    except UserError as e:
        raise _fail(text, f"base {e}") from None
    path = Path(resolved).expanduser()
    # a bare name is shipped (in the package on every machine); a file keeps its name (it carries the scale) in its
    # absolute folder, so the canonical spec resolves from any working folder
    return (resolved if str(path) == path.name and not path.is_file() else str(path.parent.resolve() / path.name),
            parts[1:])


def _block(text: str, name: str) -> str:
    """A registered attention block's name, matched regardless of case."""
    lowered = {b.lower(): b for b in available()}
    found = lowered.get(name.lower())
    if found is None:
        close = difflib.get_close_matches(name.lower(), list(lowered), n=1)
        hint = f" (did you mean {lowered[close[0]]}?)" if close else ""
        c3 = "; for a block inside C3 write BLOCK@c3" if name.lower() == "c3attn" else ""
        raise _fail(text, f"unknown block {name!r}{hint}; blocks: {', '.join(available())}{c3}")
    return found


def _insertion(text: str, item: str) -> Insertion:
    head, _, place = item.partition("@")
    name, *args = head.split(",")
    block = _block(text, name)
    values = tuple(_value(text, a, f"{block} argument") for a in args)
    params = list(inspect.signature(spec(block).cls.__init__).parameters.values())[2:]  # after self, c1
    most = len([p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)])
    if len(values) > most:
        raise _fail(text, f"{block} takes at most {most} argument{'s' * (most != 1)}, got {len(values)} "
                          f"(a row: {how_to_write(block)})")
    if not place.isalnum():
        raise _fail(text, f"{item!r}: a place is a role ({', '.join(ROLES)}) or a row index, got {place!r}")
    return Insertion(block, values, int(place) if place.isdigit() else place.lower())  # roles: checked on the base


def _loss(text: str, item: str) -> Loss:
    """nwd[,ratio=R][,c=C|auto][,assigner[=true|false]]: the syntax only; what the values mean is the loss's own
    validator's (LossChoice.from_yaml), which reads the generated YAML's loss mapping."""
    given: dict[str, Any] = {}
    for option in item.split(",")[1:]:
        key, eq, arg = option.partition("=")
        key = key.lower()
        if key not in LOSS_OPTIONS or (key != "assigner" and not eq):
            raise _fail(text, f"nwd option {option!r}: write ratio=R, c=C (or c=auto), assigner")
        if key in given:
            raise _fail(text, f"nwd option {key} is given twice")
        value = True if not eq else "auto" if key == "c" and arg.lower() == "auto" else _value(text, arg, f"nwd {key}")
        if (key == "assigner") != isinstance(value, bool):
            raise _fail(text, f"nwd {key} must be {'true or false' if key == 'assigner' else 'a number'}, got {arg!r}")
        given[key] = value
    return Loss(tuple((k, given[k]) for k in LOSS_OPTIONS if k in given))


def _item(text: str, item: str) -> Item:
    if not item:
        raise _fail(text, "an empty item between '+' signs; write BASE+BLOCK@PLACE or BASE+nwd")
    if item.count("@") > 1:
        raise _fail(text, f"{item!r} names more than one place; write one item per place: +SE@4+SE@6")
    if "@" in item:
        return _insertion(text, item)
    name = item.split(",")[0]
    if name.lower() == "nwd":
        return _loss(text, item)
    if name.lower() in {b.lower() for b in available()}:
        raise _fail(text, f"{item!r} needs a place: {item}@neck (places: {', '.join(ROLES)} or a row index)")
    raise _fail(text, f"unknown item {item!r}; write BLOCK@PLACE (blocks: {', '.join(available())}) or nwd")


def parse(cfg: str | Path) -> Variant:
    """A spec read and checked as far as it can be without the base's rows: base, block names, arguments, places."""
    text = str(cfg)
    folder, sep, last = text.rpartition("/")
    base, items = _base(text, folder + sep, last.split("+"))
    parsed = tuple(_item(text, item) for item in items)
    seen = [str(item) for item in parsed]
    twice = next((s for s in seen if seen.count(s) > 1), None)
    if twice:
        raise _fail(text, f"{twice} is named twice")
    if sum(isinstance(item, Loss) for item in parsed) > 1:
        raise _fail(text, "nwd is named twice; give its options in one item: +nwd,ratio=0.5,assigner")
    return Variant(base, parsed)


def _inputs(f: Any, i: int) -> list[int]:
    """Row i's inputs as row indices; a negative one is the image (row 0's -1)."""
    return [x if x >= 0 else i + x for x in (f if isinstance(f, (list, tuple)) else [f])]


def _through_blocks(rows: list, x: int) -> int:
    """The row x stands for, looking through attention blocks (they keep their input's role)."""
    while x >= 0 and rows[x][2] in available():
        x = _inputs(rows[x][0], x)[0]
    return x


def places(d: dict) -> tuple[dict[str, list[int]], dict[str, str]]:
    """The roles a model dict has (role -> base rows) and why each missing one is missing."""
    rows, nb = d["backbone"] + d["head"], len(d["backbone"])
    last = len(rows) - 1
    neck = sorted(set(x for x in _inputs(rows[last][0], last) if x >= 0))
    read = {x for i in range(nb, len(rows)) for x in _inputs(rows[i][0], i) if 0 <= x < nb}
    found = {"backbone": sorted({_inputs(rows[x][0], x)[0] if rows[x][2] in SPP else x for x in read}),
             "sppf": [i for i, row in enumerate(rows) if row[2] in SPP],
             "neck": neck}
    c3 = [_through_blocks(rows, x) for x in neck]
    kinds = [rows[x][2] if x >= 0 else "the image" for x in c3]
    found["c3"] = sorted(set(c3)) if c3 and all(k == "C3" for k in kinds) else []
    why = {"backbone": "its neck reads no backbone row", "sppf": "it has no SPPF or SPP row",
           "neck": "its last row reads no layer",
           "c3": f"the layers its {rows[last][2]} reads are {', '.join(kinds) or 'none'}, not all C3"}
    return {k: v for k, v in found.items() if v}, {k: why[k] for k in ROLES if not found[k]}


def _possible(d: dict) -> str:
    roles, _ = places(d)
    n = len(d["backbone"]) + len(d["head"])
    rows = [f"{k} (row{'s' * (len(v) > 1)} {', '.join(map(str, v))})" for k, v in roles.items()]
    return f"places: {', '.join(rows)}, or a row index 0-{n - 2}"


def _rows_of(text: str, item: Insertion, d: dict) -> list[int]:
    """The base rows an insertion's place names, or a one-line error naming it with what is possible."""
    n = len(d["backbone"]) + len(d["head"])
    where = Path(d.get("yaml_file") or "the base").name
    if isinstance(item.place, int):
        if item.place >= n - 1:
            last = d["head"][-1] if d["head"] else d["backbone"][-1]
            raise _fail(text, f"row {item.place} is not a layer of {where} a block can follow (row {n - 1} is its "
                              f"{last[2]}); {_possible(d)}")
        return [item.place]
    roles, why = places(d)
    if item.place not in ROLES:
        raise _fail(text, f"unknown place {item.place!r} in {item}; {_possible(d)}")
    if item.place not in roles:
        raise _fail(text, f"{item} is impossible: {where} has no {item.place} ({why[item.place]}); {_possible(d)}")
    return roles[item.place]


def _c3attn_args(text: str, args: list, item: Insertion) -> list:
    """A C3 row's arguments [c2, shortcut, g, e] as C3Attn's: [c2, BLOCK, shortcut, g, e, *the block's own]."""
    c2, *rest = args
    own = inspect.signature(spec("C3Attn").cls.__init__).parameters
    c3_args = ("shortcut", "g", "e")
    if len(rest) > len(c3_args):
        raise _fail(text, f"a C3 row with arguments {args} cannot take a block inside")
    if item.args:  # the block's own arguments come after all of C3's
        rest += [own[k].default for k in c3_args[len(rest):]]
    return [c2, item.block, *rest, *item.args]


@dataclass
class _Rows:
    """The generated rows, each with the section it goes in and the comment that says where it comes from."""

    rows: list[list]
    backbone: list[bool]
    notes: list[str]

    def add(self, row: list, backbone: bool, note: str) -> int:
        self.rows.append(row)
        self.backbone.append(backbone)
        self.notes.append(note)
        return len(self.rows) - 1


def _remap(f: Any, i: int, new: int, reads: dict[int, int]) -> Any:
    """Row i's 'from' at its new index: each input now read where reads says (a block after it, or where it moved);
    relative inputs stay relative (-1 stays -1), the image stays the image."""

    def one(x: int) -> int:
        src = x if x >= 0 else i + x
        if src < 0:
            return x
        return reads[src] - new if x < 0 else reads[src]

    return [one(x) for x in f] if isinstance(f, (list, tuple)) else one(f)


def _generate(v: Variant, text: str) -> tuple[dict, list[str]]:
    """The model dict of a variant and a note per row saying where it comes from (see generate)."""
    d = read_model_yaml(v.base)
    rows = [list(r) for r in d["backbone"] + d["head"]]
    nb, last = len(d["backbone"]), len(rows) - 1
    after: dict[int, list[Insertion]] = {i: [] for i in range(last)}
    inside: dict[int, Insertion] = {}
    neck: list[Insertion] = []
    for item in v.insertions:
        for r in _rows_of(text, item, d):
            if item.place == "c3":
                if r in inside:
                    raise _fail(text, f"{inside[r]} and {item} both want to go inside the C3 of row {r}")
                inside[r] = item
            elif item.place != "neck":
                after[r].append(item)
        if item.place == "neck":
            neck.append(item)
    out, reads = _Rows([], [], []), {}
    for i in range(last):
        row, new = rows[i], len(out.rows)
        module, args = row[2], list(row[3] or [])
        note = "" if new == i else f"base row {i}"
        if i in inside:
            module, args = "C3Attn", _c3attn_args(text, args, inside[i])
            note = f"base row {i}: C3 with {inside[i].block} inside ({inside[i]})"
        reads[i] = out.add([_remap(row[0], i, new, reads), row[1], module, args], i < nb, note)
        for item in after[i]:
            note = f"{item.block} after base row {i} ({item})"
            reads[i] = out.add([-1, 1, item.block, list(item.args)], i < nb, note)
    final = rows[last]
    detected = list(dict.fromkeys(x for x in _inputs(final[0], last) if x >= 0))  # in the order Detect reads them
    for item in neck:  # a block on each, appended before Detect; a second neck item goes on the first's blocks
        for x in detected:
            reads[x] = out.add([reads[x], 1, item.block, list(item.args)], last < nb,
                               f"{item.block} on base row {x}, read by {final[2]} ({item})")
    out.add([_remap(final[0], last, len(out.rows), reads), final[1], final[2], final[3]], last < nb,
            "" if len(out.rows) == last else f"base row {last}")
    model = {k: val for k, val in d.items() if k not in ("backbone", "head", "scale", "yaml_file")}
    model["backbone"] = [r for r, b in zip(out.rows, out.backbone) if b]
    model["head"] = [r for r, b in zip(out.rows, out.backbone) if not b]
    if v.loss is not None:
        if "loss" in d:
            raise _fail(text, f"the base {Path(v.base).name} sets a loss already ({d['loss']}); drop +{v.loss}")
        try:  # the values checked by the loss's own validator, its line prefixed with the spec
            LossChoice.from_yaml(v.loss.mapping(), where=f"+{v.loss}")
        except UserError as e:
            raise _fail(text, str(e)) from None
        model["loss"] = v.loss.mapping()
    model["scale"], model["yaml_file"] = d.get("scale") or "", f"{v.name}.yaml"
    if scale_in_name(model["yaml_file"]) != model["scale"]:
        raise _fail(text, f"the name {v.name} reads as scale {scale_in_name(model['yaml_file'])!r}, the base as "
                          f"{model['scale']!r}; rename the base")
    notes = [n for n, b in zip(out.notes, out.backbone) if b] + [n for n, b in zip(out.notes, out.backbone) if not b]
    return model, notes


def generate(cfg: str | Path | Variant) -> dict:
    """The model dict of a spec: the base's rows with the blocks placed (and the loss mapping), 'scale' the base's
    and 'yaml_file' NAME.yaml: what ultralytics reads from the written file (yaml_text), so both build alike."""
    v = cfg if isinstance(cfg, Variant) else parse(cfg)
    return _generate(v, str(cfg))[0]


def model_yaml(cfg: str | Path) -> str:
    """A --cfg value as a run takes it: a model YAML as attention.cfg.model_yaml gives it, or a spec in its canonical
    form, checked here (generated and built once) so that a wrong spec stops before anything trains: a block argument
    the block refuses (SE,0) stops with the parser's line naming the generated row."""
    if not is_spec(cfg):
        return shipped.model_yaml(cfg)
    v = parse(cfg)
    with torch.random.fork_rng(devices=[]):  # the check draws nothing from the run's random numbers
        DetectionModel(_generate(v, str(cfg))[0], verbose=False)
    return str(v)


def name_of(cfg: str | Path) -> str:
    """A variant's name: a spec's canonical name, a model YAML's file name without .yaml."""
    return parse(cfg).name if is_spec(cfg) else Path(str(cfg)).stem


def model_dict(cfg: Any) -> Any:
    """What DetectionModel takes for cfg: a spec's generated dict; anything else (a YAML name, path, dict) as it is."""
    return generate(cfg) if isinstance(cfg, (str, Path)) and is_spec(cfg) else cfg


def yaml_text(cfg: str | Path) -> str:
    """The generated model YAML of a spec, commented: where it comes from, each row's origin, how to reuse it."""
    v = parse(cfg)
    d, notes = _generate(v, str(cfg))
    notes = iter(notes)
    lines = [f"# Generated by yolov5-attention from --cfg {v.name} (base: {v.base}); see docs/placements.md.",
             f"# Build it again: --cfg path/to/{v.name}.yaml (ultralytics reads the scale, {d['scale'] or 'none'}, "
             f"from the file name: keep it)"]
    index = 0
    for key, value in d.items():
        if key in ("scale", "yaml_file"):
            continue
        if key not in ("backbone", "head"):  # scalars in block style (nc: 80), lists and leaf mappings in flow style
            flow = None if isinstance(value, (dict, list)) else False
            lines.append(yaml.safe_dump({key: value}, default_flow_style=flow, sort_keys=False, width=120).rstrip())
            continue
        lines.append(f"{key}:")
        for row in value:
            note = next(notes)
            flow = yaml.safe_dump(row, default_flow_style=True, width=10**6).strip()
            lines.append(f"  - {flow} # {index}{' ' + note if note else ''}")
            index += 1
    return "\n".join(lines) + "\n"


def write(cfg: str | Path, folder: str | Path) -> Path | None:
    """A spec's generated YAML as folder/NAME.yaml (None for a plain model YAML: nothing to write)."""
    if not is_spec(cfg):
        return None
    path = Path(folder) / f"{name_of(cfg)}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml_text(cfg))
    return path


def keep(cfg: str | Path | None, trainer: Any) -> None:
    """A spec's YAML into the trainer's run folder, named as the run's model: what checkpoints record and what
    DDP workers that rebuild the model from the run's arguments read (ultralytics cannot read a spec)."""
    path = write(cfg, trainer.save_dir) if cfg else None
    if path is not None:
        trainer.args.model = str(path)
