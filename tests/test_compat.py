"""compat's probes and version facts: each asks the installed release by a small call, and says what it found."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ultralytics import YOLO
from ultralytics.nn import tasks
from ultralytics.nn.modules import C3
from ultralytics.utils import torch_utils

from attention.adapter import api, compat
from attention.blocks.registry import AttentionConfigError


@pytest.fixture
def fresh_compat():
    """compat's answers are cached per process; a test that changes what it probes starts and ends afresh."""
    clear = lambda: (compat.missing.cache_clear(), compat.enabled.cache_clear(), compat._parsed_sample.cache_clear())
    clear()
    yield
    clear()


def test_every_feature_is_on_where_it_is_said_to_work_and_says_what_it_misses_elsewhere():
    for key, feature in compat.FEATURES.items():
        first, last = (compat.release(v) for v in feature.works.split(" - "))
        if first <= compat.release(compat.VERSION) <= last:
            assert compat.missing(key) == (), key
        else:
            assert compat.missing(key) and all(isinstance(m, str) and m for m in compat.missing(key)), key


def test_moved_names_resolve_to_what_the_release_has():
    assert compat.checkpoint_loader() is getattr(tasks, "load_checkpoint", getattr(tasks, "attempt_load_one_weight", 0))
    assert compat.model_unwrapper() is getattr(torch_utils, "unwrap_model", getattr(torch_utils, "de_parallel", 0))
    model = torch.nn.Linear(2, 2)
    assert compat.model_unwrapper()(torch.nn.DataParallel(model)) is model  # unwraps a parallel wrapper
    assert compat.model_unwrapper()(model) is model


def test_verify_image_label_takes_the_tuple_compat_found_and_not_the_other():
    from ultralytics.data.utils import verify_image_label

    items = ("", "", "", False, 1, 0, 0, False, False)
    n = 8 if compat.verify_takes_single_cls() else 7
    result = verify_image_label(items[:n])  # a file that does not exist: refused, but the tuple is accepted
    assert result[0] is None and "ignoring corrupt image/label" in result[-1]
    with pytest.raises(ValueError, match="values to unpack"):
        verify_image_label(items[:15 - n])


def test_probes_leave_the_random_numbers_alone(fresh_compat):
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    assert compat._parsed_sample() == () and compat._c3_missing() == []
    assert torch.equal(torch.rand(3), expected)  # a seeded build after a probe draws what it would have drawn


def test_a_c3_that_computes_otherwise_switches_c3attn_off_with_one_line(monkeypatch, fresh_compat, ul_log):
    monkeypatch.setattr(C3, "forward", lambda self, x: self.cv3(torch.cat((self.cv2(x), self.cv2(x)), 1)))
    assert compat._c3_missing() == ["C3.forward computing cv3(cat(m(cv1(x)), cv2(x)))"]
    with pytest.raises(AttentionConfigError) as e:
        YOLO("yolov5n-c3cbam.yaml")
    needs = f"C3Attn, a C3 with an attention block inside needs ultralytics {compat.OLDEST} - {compat.NEWEST}"
    assert "row 17 of " in str(e.value) and f"{needs}; this is {compat.VERSION}" in str(e.value)
    said = [m for m in ul_log if "yolov5-attention" in m]
    assert len(said) == 1 and "C3Attn, a C3 with an attention block inside is switched off" in said[0]
    YOLO("yolov5n-cbam.yaml")  # everything else still builds


def test_letterbox_through_the_api_pads_to_the_stride():
    # long side 200 -> 320 (x1.6), so 150 -> 240, padded up to 256 (a multiple of 32); the keywords of every release
    out = api.LetterBox(new_shape=320, auto=True, center=False, stride=32)(image=np.full((150, 200, 3), 7, np.uint8))
    assert out.shape == (256, 320, 3) and (out[:240] == 7).all() and (out[240:] == 114).all()
