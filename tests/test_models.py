"""The shipped model YAMLs: every variant builds and runs at n and s, backbone and neck as in the base."""

from __future__ import annotations

import pytest
import torch
import yaml
from ultralytics import YOLO

import attention

from conftest import BLOCKS, MODELS

VARIANTS = ["yolov5"] + [f"yolov5-{b.lower()}" for b in BLOCKS]


def rows(name):
    d = yaml.safe_load((MODELS / f"{name}.yaml").read_text())
    return d["backbone"], d["head"]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("scale", ["n", "s"])
def test_variant_builds_and_runs(variant, scale):
    model = YOLO(str(MODELS / f"{variant.replace('yolov5', f'yolov5{scale}')}.yaml")).model.eval()
    assert model.yaml["scale"] == scale
    out, raw = model(torch.zeros(1, 3, 96, 128))
    # Detect: one map per level (strides 8, 16, 32), 4 box + nc class channels per location.
    assert out.shape == (1, 4 + 80, 12 * 16 + 6 * 8 + 3 * 4)
    assert [f.shape[-2:] for f in (raw["feats"] if isinstance(raw, dict) else raw)]  # 8.3: a list == [(12, 16), (6, 8), (3, 4)]
    assert torch.isfinite(out).all()
    assert model.stride.tolist() == [8, 16, 32]


@pytest.mark.parametrize("block", BLOCKS)
def test_variant_inserts_one_block_per_neck_output_and_keeps_the_rest(block):
    base_backbone, base_head = rows("yolov5")
    backbone, head = rows(f"yolov5-{block.lower()}")
    assert backbone == base_backbone
    assert head[: len(base_head) - 1] == base_head[:-1]  # neck rows 10-23 unchanged
    n = len(backbone) + len(base_head) - 1  # index of the first appended row (24)
    assert head[-4:-1] == [[17, 1, block, []], [20, 1, block, []], [23, 1, block, []]]
    assert head[-1] == [[n, n + 1, n + 2], 1, "Detect", ["nc"]]


@pytest.mark.parametrize("block", BLOCKS)
def test_base_weights_fit_the_variant_by_name_up_to_the_neck(block):
    base = YOLO(str(MODELS / "yolov5n.yaml")).model.state_dict()
    variant = YOLO(str(MODELS / f"yolov5n-{block.lower()}.yaml")).model.state_dict()
    shared = [k for k in base if not k.startswith("model.24.")]  # everything but Detect
    assert all(k in variant and variant[k].shape == base[k].shape for k in shared)
    blocks = [m for m in YOLO(str(MODELS / f"yolov5n-{block.lower()}.yaml")).model.model
              if isinstance(m, attention.get(block))]
    assert len(blocks) == 3
