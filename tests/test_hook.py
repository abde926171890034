"""The parser hook: blocks by name in any YAML, channels inferred, and loud failure if ultralytics moves."""

from __future__ import annotations

import logging
import math
import re
from importlib.metadata import version

import pytest
import torch
from packaging.specifiers import SpecifierSet
from torch import nn
from ultralytics import YOLO
from ultralytics.nn import tasks
from ultralytics.utils import LOGGER

import attention
from attention.adapter import compat
from attention.adapter import parser as hook
from attention.blocks.registry import AttentionConfigError, register, registered, unregister

from pathlib import Path

from conftest import BLOCKS, MODELS, REPO

WIDTH = {"n": 0.25, "s": 0.50, "m": 0.75, "l": 1.00, "x": 1.25}

# A small model that exercises every way a row can name a block.
TINY = """
nc: 2
scales:
  n: [0.33, 0.25, 1024]
  s: [0.33, 0.50, 1024]
backbone:
  - [-1, 1, Conv, [64, 3, 2]]
  - [-1, 1, Conv, [128, 3, 2]]
  - [-1, 1, {block}, {args}]
  - [-1, 1, Conv, [256, 3, 2]]
head:
  - [[2, 3], 1, Detect, [nc]]
"""


def tiny(write_yaml, block="CBAM", args="[]", scale="n"):
    return write_yaml(f"yolov5{scale}-tiny-{block.lower()}.yaml", TINY.format(block=block, args=args))


def make_divisible(x: float) -> int:
    return math.ceil(x / 8) * 8


def test_hook_installed_and_parser_still_builds_what_it_relies_on():
    # compat parses a small model with the installed parse_model: stand-ins and probes must come out as expected.
    assert getattr(tasks.parse_model, "_attention_hook", False)
    assert tasks.parse_model.__wrapped__.__module__ == "ultralytics.nn.tasks"
    assert not compat.missing("parser") and not compat.missing("module_channels")


def test_installed_ultralytics_is_in_the_declared_range():
    spec = next(
        line.split("#")[0].strip()
        for line in (REPO / "requirements.txt").read_text().splitlines()
        if line.startswith("ultralytics")
    )
    assert version("ultralytics") in SpecifierSet(spec[len("ultralytics"):]), (spec, version("ultralytics"))
    assert spec.startswith(f"ultralytics>={compat.OLDEST},")  # one declared oldest release, in both places


def _clear_compat():
    compat.missing.cache_clear(), compat.enabled.cache_clear(), compat._parsed_sample.cache_clear()


@pytest.mark.parametrize("kind", ["broken", "no depth"])
def test_a_parser_that_builds_otherwise_switches_the_hook_off_with_one_warning(monkeypatch, ul_log, kind):
    original = tasks.parse_model.__wrapped__

    def broken(d, ch, verbose=True):  # builds nothing
        return None

    def no_depth(d, ch, verbose=True):  # ignores the model's depth: a row's number is built as written
        return original({**d, "depth_multiple": 1.0}, ch, verbose)

    parse_model = broken if kind == "broken" else no_depth
    monkeypatch.setattr(tasks, "parse_model", parse_model)
    _clear_compat()
    try:
        hook.install()
        hook.install()
        assert tasks.parse_model is parse_model  # left alone: nothing else breaks
        said = [m for m in ul_log if "yolov5-attention" in m]
        assert len(said) == 1 and "yolov5-attention: attention blocks in model YAMLs is switched off" in said[0]
        assert "works on ultralytics" in said[0]
        if kind == "broken":
            assert "lacks parse_model(d, ch) building a model dict's rows (TypeError: cannot unpack" in said[0]
        else:
            assert "lacks a row's number scaled by the model's depth into that many copies in an nn.Sequential (it " \
                   "works on" in said[0]
    finally:
        _clear_compat()


def test_install_is_idempotent():
    wrapped = tasks.parse_model
    attention.install()
    assert tasks.parse_model is wrapped


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("scale", ["n", "s"])
def test_block_gets_the_channels_of_its_input_layer(write_yaml, block, scale):
    model = YOLO(str(tiny(write_yaml, block, scale=scale))).model
    layer = model.model[2]
    assert type(layer) is attention.get(block)
    x = torch.randn(1, make_divisible(128 * WIDTH[scale]), 8, 8)
    assert layer(x).shape == x.shape  # would fail inside the block if c1 were wrong


@pytest.mark.parametrize("scale", "nsmlx")
def test_channels_inferred_at_every_scale(scale):
    model = YOLO(str(MODELS / f"yolov5{scale}-cbam.yaml")).model
    blocks = [m for m in model.model if isinstance(m, attention.get("CBAM"))]
    expected = [make_divisible(c * WIDTH[scale]) for c in (256, 512, 1024)]
    assert [b.mlp[0].in_channels for b in blocks] == expected
    assert [b.mlp[0].out_channels for b in blocks] == [c // 8 for c in expected]  # default ratio 8


def test_block_hyperparameters_from_yaml(write_yaml):
    cbam = YOLO(str(tiny(write_yaml, "CBAM", "[16, 3]"))).model.model[2]
    assert cbam.mlp[0].out_channels == 32 // 16 and cbam.spatial.kernel_size == (3, 3)


@pytest.fixture
def log_lines():
    """Messages ultralytics' logger emits during the test."""
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    LOGGER.addHandler(handler)
    yield lines
    LOGGER.removeHandler(handler)


def test_classic_channel_count_row_works_with_a_warning(write_yaml, log_lines):
    # Classic tutorials write the (unscaled) channel count first; at scale s, 128 -> 64 channels.
    se = YOLO(str(tiny(write_yaml, "SE", "[128, 4]", scale="s"))).model.model[2]
    assert se.fc1.in_features == 64 and se.fc1.out_features == 64 // 4
    assert any("SE infers its channels (64 here); ignoring the channel count 128" in m for m in log_lines)


def test_unknown_block_names_the_row_and_lists_known_names(write_yaml):
    path = write_yaml("yolov5n-tiny-cbm.yaml", TINY.format(block="CBAM", args="[]").replace("[-1, 1, Conv, [256, 3, 2]]", "[-1, 1, CBM, []]"))
    with pytest.raises(AttentionConfigError) as e:
        YOLO(str(path))
    msg = str(e.value)
    assert msg.startswith(f"row 3 of {path} (scale n): unknown module 'CBM' (did you mean CBAM?); registered modules: ")
    assert msg.endswith(", ".join(registered())) and "CA, CBAM" in msg
    assert not [k for k in vars(tasks) if k.startswith("attention:")]  # our builders are gone, even after an error


def test_wrong_block_arguments_say_how_to_write_the_row(write_yaml):
    path = tiny(write_yaml, "CBAM", "[8, 5]")
    with pytest.raises(AttentionConfigError) as e:
        YOLO(str(path))
    msg = str(e.value)
    assert f"row 2 of {path} (scale n): CBAM[8, 5] cannot be built on 32 channels" in msg
    assert "kernel must be 3 or 7, got 5" in msg
    assert msg.endswith("write [-1, 1, CBAM, []] or [-1, 1, CBAM, [ratio, kernel]] (defaults: ratio=8, kernel=7)")


def test_too_many_arguments_are_refused(write_yaml):
    with pytest.raises(AttentionConfigError, match=r"row 2 of .*: SE\[4, 4, 4\] cannot be built on 32 channels"):
        YOLO(str(tiny(write_yaml, "SE", "[4, 4, 4]")))


def test_block_with_several_inputs_is_refused(write_yaml):
    text = TINY.format(block="Conv", args="[128, 1, 1]").replace("[-1, 1, Conv, [256, 3, 2]]",
                                                                  "[[1, 2], 1, ECA, []]")
    with pytest.raises(AttentionConfigError, match=r"row 3 of .*: ECA takes one input"):
        YOLO(str(write_yaml("yolov5n-tiny-multi.yaml", text)))


def test_user_block_registered_with_decorator(write_yaml):
    @register
    class Gate(nn.Module):
        """x * sigmoid(w), one learnable weight per channel."""

        def __init__(self, c1, init=0.0):
            super().__init__()
            self.w = nn.Parameter(torch.full((1, c1, 1, 1), float(init)))

        def forward(self, x):
            return x * torch.sigmoid(self.w)

    try:
        model = YOLO(str(tiny(write_yaml, "Gate", "[2.0]", scale="s"))).model
        gate = model.model[2]
        assert isinstance(gate, Gate) and gate.w.shape == (1, 64, 1, 1)
        assert torch.allclose(gate.w, torch.full_like(gate.w, 2.0))
        assert "Gate" in attention.available()
    finally:
        unregister("Gate")


def test_our_cbam_shadows_ultralytics_cbam_in_yaml(write_yaml):
    from ultralytics.nn.modules import CBAM as UltralyticsCBAM

    layer = YOLO(str(tiny(write_yaml, "CBAM"))).model.model[2]
    assert type(layer) is attention.get("CBAM") and not isinstance(layer, UltralyticsCBAM)
    assert getattr(tasks, "CBAM", UltralyticsCBAM) is UltralyticsCBAM  # ultralytics' own name is left alone


def test_plain_models_are_untouched():
    import ultralytics
    import yaml

    ours = YOLO("yolov5n.yaml").model  # a shipped name: ours
    own = Path(ultralytics.__file__).parent / "cfg" / "models" / "v5" / "yolov5.yaml"
    theirs = tasks.DetectionModel({**yaml.safe_load(own.read_text()), "scale": "n"}, verbose=False)  # ultralytics' own
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    assert [type(m) for m in ours.model] == [type(m) for m in theirs.model]
    assert ours.state_dict().keys() == theirs.state_dict().keys()


def test_summary_shows_the_yaml_arguments(write_yaml, log_lines):
    YOLO(str(tiny(write_yaml, "CBAM", "[16, 3]")), verbose=True)
    row = next(m for m in log_lines if re.match(r"\s*2\s+-1", m))
    assert "attention.blocks.cbam.CBAM" in row and row.rstrip().endswith("[16, 3]")


def test_a_parse_writes_nothing_into_ultralytics_namespace(write_yaml):
    seen = []

    @register(channels="arg")
    class Spy(nn.Module):
        """A 1x1 convolution that notes ultralytics' parser namespace when the hook builds it."""

        def __init__(self, c1, c2):
            super().__init__()
            seen.append(dict(vars(tasks)))
            self.conv = nn.Conv2d(c1, c2, 1)

        def forward(self, x):
            return self.conv(x)

    before = dict(vars(tasks))
    try:
        YOLO(str(tiny(write_yaml, "Spy", "[96]")))
    finally:
        unregister("Spy")
    assert seen and all(ns.keys() == before.keys() and all(ns[k] is v for k, v in before.items()) for ns in seen)
    assert dict(vars(tasks)).keys() == before.keys()


def test_summary_lists_each_row_once_and_no_probes(write_yaml, log_lines):
    model = YOLO(str(tiny(write_yaml, "CBAM", "[16, 3]")), verbose=True).model
    rows = [int(m.split()[0]) for m in log_lines if re.match(r"\s*\d+\s+(-?\d+|\[)", m)]
    assert rows == list(range(len(model.model))) == [0, 1, 2, 3, 4]


def test_a_channel_changing_module_on_the_first_row_reads_the_image(write_yaml):
    @register(channels="arg")
    class Stem(nn.Module):
        """A 1x1 convolution c1 -> c2."""

        def __init__(self, c1, c2):
            super().__init__()
            self.conv = nn.Conv2d(c1, c2, 1)

        def forward(self, x):
            return self.conv(x)

    try:
        text = TINY.format(block="SE", args="[]").replace("[-1, 1, Conv, [64, 3, 2]]", "[-1, 1, Stem, [64]]")
        model = YOLO(str(write_yaml("yolov5n-stem.yaml", text))).model
    finally:
        unregister("Stem")
    assert (model.model[0].conv.in_channels, model.model[0].conv.out_channels) == (3, 16)  # 64 at width 0.25
    assert model.model[1].conv.in_channels == 16  # ultralytics' Conv after it reads our width


def test_a_row_reading_a_later_layer_is_refused(write_yaml):
    path = write_yaml("yolov5n-ahead.yaml", TINY.format(block="CBAM", args="[]").replace("[-1, 1, CBAM, []]",
                                                                                         "[3, 1, CBAM, []]"))
    with pytest.raises(AttentionConfigError, match=r"row 2 of .*: 'from' 3 must name earlier layers"):
        YOLO(str(path))
