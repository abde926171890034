"""The model a run starts from: built from its YAML under the run's seed, base weights moved in by role, blocks gated.

Everything a run draws before ultralytics' trainer seeds itself happens here, under the run's own seed:
the layers that start fresh after a transfer (inserted blocks, a Detect head resized for another class
count) therefore take the same values every time the same command runs.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from attention.adapter.api import DetectionModel
from attention.adapter.weights import load
from attention.blocks.gate import INITS, gate_blocks, has_gate
from attention.errors import UserError
from attention.training.transfer import TransferReport, transfer
from attention.training.variants import model_dict


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """torch's CPU generator seeded for the block, and restored after it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def build(cfg: str | dict, nc: int | None = None, seed: int = 0, attn_init: str = "paper") -> DetectionModel:
    """DetectionModel of a model YAML (name, path, dict, or a variant spec such as yolov5s+CBAM@neck) with nc classes,
    its blocks gated if attn_init says so."""
    if attn_init not in INITS:
        raise UserError(f"--attn-init must be one of {', '.join(INITS)}, got {attn_init!r}")
    with seeded(seed):
        model = DetectionModel(model_dict(cfg), nc=nc, verbose=False)
    if attn_init == "identity":
        gate_blocks(model.model)
    return model


def starting_model(cfg: str | None, weights: str | None = None, nc: int | None = None, seed: int = 0,
                   attn_init: str = "paper") -> tuple[DetectionModel, TransferReport | None]:
    """The model a run trains, and the transfer report when weights were moved into it.

    cfg and weights: the variant, built fresh, with the base's weights moved in by role.
    weights alone: that checkpoint's own model as it is; built anew (seeded) only for another class count.
    """
    if attn_init != "paper" and not weights:
        raise UserError(f"--attn-init {attn_init} makes a variant start as its base: it needs --weights")
    if cfg is None:
        base, _ = load(weights)
        if nc is None or base.yaml.get("nc") == nc:
            return base, None
        model = build(base.yaml, nc, seed)
        gate_blocks(model.model, only={i for i, layer in enumerate(base.model) if has_gate(layer)})
        return model, transfer(base, model)
    model = build(cfg, nc, seed, attn_init)
    return model, (transfer(weights, model) if weights else None)
