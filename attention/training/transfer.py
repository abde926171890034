"""Pretrained weights into a variant whose layers moved: layers are aligned by role, not by index.

Inserting a block shifts every later layer index, so loading by state_dict key keeps only the
layers before the first insertion, and a shifted key whose shape happens to match loads another
layer's weights silently. Here a layer of the target takes the weights of the base layer that
has the same type and is fed by the counterparts of its own inputs; attention blocks are
transparent when inputs are traced, so inserted blocks are skipped and everything else keeps
its counterpart, wherever the blocks sit.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attention.adapter.weights import load
from attention.blocks.gate import IdentityGate, is_attention, unwrap
from attention.blocks.registry import stands_in_for

INPUT = -1  # the image, as the source of layer 0


@dataclass
class LayerTransfer:
    """What one target layer received: from which base layer, and how many of its tensors."""

    index: int
    type: str
    base: int | None  # None: a new layer, left as initialised
    loaded: int
    total: int
    skipped: list[str] = field(default_factory=list)  # tensors whose shapes differ from the base's
    new_branches: list[int] = field(default_factory=list)  # a head's inputs with no base counterpart (P2 added)


@dataclass
class TransferReport:
    """Tensors transferred per layer, base layers left unused, and totals."""

    source: str
    layers: list[LayerTransfer]
    unused: list[int]  # base layers with no counterpart in the target
    base_tensors: int

    @property
    def loaded(self) -> int:
        return sum(layer.loaded for layer in self.layers)

    @property
    def total(self) -> int:
        return sum(layer.total for layer in self.layers)

    @property
    def new(self) -> list[int]:
        return [layer.index for layer in self.layers if layer.base is None]

    def summary(self) -> str:
        lines = [
            f"Transfer from {self.source}: {self.loaded}/{self.total} target tensors loaded "
            f"({self.loaded}/{self.base_tensors} of the base's tensors used)",
            f"{'layer':>5} {'type':<12} {'from base':>9} {'tensors':>9}  note",
        ]
        for t in self.layers:
            src = "new" if t.base is None else str(t.base)
            more = f" and {len(t.skipped) - 3} more" if len(t.skipped) > 3 else ""
            note = f"shape differs: {', '.join(t.skipped[:3])}{more}" if t.skipped else ""
            if t.new_branches:
                fresh = f"branches on input{'s' if len(t.new_branches) > 1 else ''} {', '.join(map(str, t.new_branches))}"
                note = "; ".join(filter(None, [note, f"{fresh} new: left as initialised"]))
            if t.base is None and t.total:
                note = "new: left as initialised"
            lines.append(f"{t.index:>5} {t.type:<12} {src:>9} {t.loaded:>4}/{t.total:<4}  {note}".rstrip())
        if self.unused:
            lines.append(f"base layers without a counterpart: {self.unused}")
        if self.loaded < self.base_tensors / 2:
            lines.append("most of the base did not fit: is it another scale (n/s/m/l/x) or another architecture?")
        return "\n".join(lines)

    def write(self, folder: str | Path) -> Path:
        """Save transfer.txt and transfer.json in folder; returns the .txt path."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "transfer.json").write_text(
            json.dumps({**asdict(self), "loaded": self.loaded, "total": self.total, "new": self.new}, indent=1)
        )
        path = folder / "transfer.txt"
        path.write_text(self.summary() + "\n")
        return path


def _inputs(layers: nn.Sequential, i: int) -> list[int]:
    f = layers[i].f
    return [INPUT if i == 0 else i - 1 if x == -1 else x for x in ([f] if isinstance(f, int) else f)]


def _roots(layers: nn.Sequential, i: int) -> list[int]:
    """Inputs of layer i, looking through attention blocks (they keep their input's role)."""
    out = []
    for x in _inputs(layers, i):
        while x != INPUT and is_attention(layers[x]):
            x = _inputs(layers, x)[0]
        out.append(x)
    return out


def _kind(layer: nn.Module) -> str:
    """The layer's type for alignment: a registered drop-in counts as the layer it replaces (C3Attn as C3)."""
    inner = unwrap(layer)
    return stands_in_for(inner) or type(inner).__name__


def align(base: nn.Sequential, target: nn.Sequential) -> dict[int, int]:
    """target layer index -> base layer index, for layers of the same type fed by counterpart inputs."""
    mapping: dict[int, int] = {}
    to_base = {INPUT: INPUT}
    start = 0  # base layers are taken in order: a match never jumps back
    for t in range(len(target)):
        if is_attention(target[t]):
            # A block keeps the role of its input; it only receives weights from a base block on the same input.
            src = to_base.get(_roots(target, t)[0])
            cand = [b for b in range(len(base)) if is_attention(base[b]) and _kind(base[b]) == _kind(target[t])
                    and _roots(base, b)[0] == src and b not in mapping.values()]
            if src is not None and cand:
                mapping[t] = cand[0]
            continue
        want = [to_base.get(x) for x in _roots(target, t)]
        for b in range(start, len(base)):
            if is_attention(base[b]) or _kind(base[b]) != _kind(target[t]):
                continue
            if None not in want and _roots(base, b) == want:
                mapping[t] = to_base[t] = b
                start = b + 1
                break
        else:  # a head with a branch per input (Detect): it may share only some inputs, e.g. P2 added
            shared = [b for b in range(start, len(base)) if _kind(base[b]) == _kind(target[t]) and _branches(base[b])
                      and set(_roots(base, b)) & set(want)]
            if _branches(target[t]) and shared:
                mapping[t] = shared[0]  # its output has another role: nothing downstream aligns to it
    return mapping


def _branches(layer: nn.Module) -> list[str]:
    """Names of a layer's per-input submodule lists (Detect's cv2, cv3: one entry per input level)."""
    f = getattr(layer, "f", None)
    n = len(f) if isinstance(f, (list, tuple)) else 0
    return [k for k, m in unwrap(layer).named_children() if isinstance(m, nn.ModuleList) and n > 1 and len(m) == n]


def _branch_names(base: nn.Sequential, target: nn.Sequential, b: int, t: int, to_base: dict[int, int]) -> dict:
    """Tensor-name prefixes of target layer t's branches -> those of base layer b's branch on the same input."""
    b_roots, renames = _roots(base, b), {}
    for k, root in enumerate(_roots(target, t)):
        if to_base.get(root) in b_roots:
            j = b_roots.index(to_base[root])
            renames |= {f"{attr}.{k}.": f"{attr}.{j}." for attr in _branches(target[t])}
    return renames


def _branch_of(key: str, layer: nn.Module) -> bool:
    return key.split(".", 1)[0] in _branches(layer)


def plain_name(name: str, gates: list[str]) -> str:
    """A tensor name with the 'block.' a gate adds removed (gates: the gates' own names in the layer, '' for itself),
    so that plain and gated blocks match: 'block.mlp.0.weight' -> 'mlp.0.weight', 'attn.block.x' -> 'attn.x'."""
    for g in gates:
        inside = f"{g}.block." if g else "block."
        if name.startswith(inside):
            return (f"{g}." if g else "") + name[len(inside):]
    return name


def _gates(layer: nn.Module) -> list[str]:
    return [name for name, m in layer.named_modules() if isinstance(m, IdentityGate)]


def _state(layer: nn.Module) -> dict[str, torch.Tensor]:
    """A layer's tensors by plain name (plain_name)."""
    gates = _gates(layer)
    return {plain_name(k, gates): v for k, v in layer.state_dict().items()}


def transfer(weights: Any, target: nn.Module) -> TransferReport:
    """Load a base checkpoint (path, ckpt dict or model) into target, layer by aligned layer."""
    source = str(weights) if isinstance(weights, (str, Path)) else type(weights).__name__
    if isinstance(weights, (str, Path)):
        weights, _ = load(weights)
    elif isinstance(weights, dict):
        weights = weights.get("ema") or weights["model"]
    base_layers, target_layers = weights.float().model, target.model
    mapping = align(base_layers, target_layers)
    to_base = {INPUT: INPUT, **{t: b for t, b in mapping.items() if not is_attention(target_layers[t])}}
    layers = []
    for t, layer in enumerate(target_layers):
        dst = layer.state_dict()
        b = mapping.get(t)
        loaded, skipped, fresh = 0, [], []
        if b is not None:
            src = _state(base_layers[b])
            renames = _branch_names(base_layers, target_layers, b, t, to_base) if _branches(layer) else {}
            if renames:
                attr = _branches(layer)[0]
                fresh = [k for k in range(len(getattr(unwrap(layer), attr))) if f"{attr}.{k}." not in renames]
            gates = _gates(layer)
            for name in dst:
                key = plain_name(name, gates)
                prefix = next((p for p in renames if key.startswith(p)), None)
                if renames and _branch_of(key, layer) and prefix is None:
                    continue  # a branch on an input the base has no counterpart for: it starts fresh
                key = renames[prefix] + key[len(prefix):] if prefix else key
                if key in src and src[key].shape == dst[name].shape:
                    dst[name] = src[key].to(dst[name].dtype)
                    loaded += 1
                elif key in src:
                    skipped.append(name)
            layer.load_state_dict(dst)
        layers.append(LayerTransfer(t, type(unwrap(layer)).__name__, b, loaded, len(dst), skipped, fresh))
    unused = [b for b in range(len(base_layers)) if b not in mapping.values() and base_layers[b].state_dict()]
    base_tensors = sum(len(m.state_dict()) for m in base_layers)
    return TransferReport(source, layers, unused, base_tensors)
