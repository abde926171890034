"""Every ultralytics name we rely on beyond its public API, feature by feature, and the switch for each.

ultralytics changes its internals from one weekly release to the next. Each Feature below lists what it
touches; `enabled(key)` checks those names the first time the feature is used, and when one is missing
the feature is switched off with one warning that names it and the releases where it works. Nothing else
is affected. `python -m attention.adapter.compat` prints the table for the installed release.

The public API we use (YOLO, DetectionModel, the trainer and validator classes, IMG_FORMATS,
img2label_paths, check_det_dataset, ...) is imported in attention/adapter/api.py.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from dataclasses import dataclass
from typing import Callable

import torch
import ultralytics
from ultralytics.utils import LOGGER

VERSION = ultralytics.__version__
OLDEST, NEWEST = "8.3.5", "8.4.190"  # the range requirements.txt declares and CI tests (both ends)


def release(version: str) -> tuple[int, ...]:
    """'2.14.1+cu130' -> (2, 14, 1)."""
    return tuple(int("".join(c for c in part if c.isdigit()) or 0) for part in version.split("+")[0].split(".")[:3])


def onnx_needs_onnxscript() -> bool:
    """True if ultralytics' ONNX export will go through torch's dynamo exporter, which needs onnxscript.

    Before 8.3.215 ultralytics leaves the exporter to torch's default, and from torch 2.9 that default is dynamo.
    """
    return release(VERSION) < (8, 3, 215) and release(torch.__version__) >= (2, 9)


_ABSENT = object()


def _get(dotted: str) -> object:
    """The object at 'module.attr.attr' (which may be None, e.g. a cache built lazily), or _ABSENT."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr, _ABSENT)
            if obj is _ABSENT:
                return _ABSENT
        return obj
    return _ABSENT


def _code(dotted: str) -> str:
    obj = _get(dotted)
    try:
        return inspect.getsource(obj) if obj is not _ABSENT else ""
    except (OSError, TypeError):
        return ""


def _missing_names(*names: str) -> list[str]:
    return [n for n in names if _get(n) is _ABSENT]


def _parser_missing() -> list[str]:
    parse_model = _get("ultralytics.nn.tasks.parse_model")
    if parse_model is _ABSENT:
        return ["ultralytics.nn.tasks.parse_model"]
    code = getattr(inspect.unwrap(parse_model), "__code__", None)
    lost = [v for v in ("ch", "f", "width", "max_channels") if code is None or v not in code.co_varnames]
    out = [f"parse_model local {v!r}" for v in lost]
    if "locals()" not in _code("ultralytics.nn.tasks.parse_model"):
        out.append("parse_model resolving string arguments through locals()")
    return out


def _module_channels_missing() -> list[str]:
    code = _code("ultralytics.nn.tasks.parse_model")
    first_compare, first_read = code.find("if n > 1"), code.find("ch[f]")
    if first_compare < 0 or first_read < 0 or first_compare > first_read:
        return ["parse_model comparing a row's number (n > 1) before it reads the channel list ch"]
    return []


def _model_files_missing() -> list[str]:
    out = _missing_names("ultralytics.nn.tasks.check_yaml", "ultralytics.nn.tasks.yaml_model_load")
    if not out and "check_yaml(" not in _code("ultralytics.nn.tasks.yaml_model_load"):
        out.append("yaml_model_load calling check_yaml")
    return out


def _safe_load_missing() -> list[str]:
    safe = "ultralytics.nn.tasks._SafeLoad"
    return _missing_names(safe, f"{safe}.loading", f"{safe}._build", f"{safe}._registry", f"{safe}._lock",
                          f"{safe}.SUPPORTED", "ultralytics.nn.tasks.SAFE_LOAD", "ultralytics.nn.tasks.torch_safe_load")


def _resume_missing() -> list[str]:
    trainer = "ultralytics.engine.trainer.BaseTrainer"
    out = _missing_names(f"{trainer}.save_model", f"{trainer}.resume_training", f"{trainer}.final_eval",
                         f"{trainer}.optimizer_step", f"{trainer}._close_dataloader_mosaic",
                         "ultralytics.engine.trainer.strip_optimizer", "ultralytics.data.build.InfiniteDataLoader.reset")
    if not out and "self.last.write_bytes(" not in _code(f"{trainer}.save_model"):
        out.append("BaseTrainer.save_model writing last.pt with self.last.write_bytes")
    if not out and "last_opt_step" not in _code(f"{trainer}._do_train"):
        out.append("BaseTrainer._do_train stepping on ni - last_opt_step >= self.accumulate")
    return out


def _audit_missing() -> list[str]:
    return _missing_names("ultralytics.data.utils.verify_image_label", "ultralytics.data.utils.get_hash",
                          "ultralytics.utils.patches.imread")


def _sliced_val_missing() -> list[str]:
    out = _missing_names("ultralytics.models.yolo.detect.DetectionValidator._process_batch",
                         "ultralytics.utils.metrics.DetMetrics.update_stats")
    if not out and "preds[\"cls\"]" not in _code("ultralytics.models.yolo.detect.DetectionValidator._process_batch"):
        out.append("DetectionValidator._process_batch(preds: dict, batch: dict)")
    return out


@dataclass(frozen=True)
class Feature:
    """One feature of ours and the ultralytics internals it touches."""

    title: str
    touches: tuple[str, ...]  # for people: what we rely on
    works: str  # releases where it was tested to work
    missing: Callable[[], list[str]]  # what the installed release lacks of it


FEATURES: dict[str, Feature] = {
    "parser": Feature(
        "attention blocks in model YAMLs",
        ("ultralytics.nn.tasks.parse_model: its locals ch, f, width, max_channels, and string arguments "
         "resolved through locals() (that is how our rows receive their input channels)",),
        f"{OLDEST} - {NEWEST}", _parser_missing),
    "module_channels": Feature(
        "registered modules that change channels or take several inputs (C3Attn, WeightedFusion, your own)",
        ("ultralytics.nn.tasks.parse_model: a row's number compared (n > 1) before the row reads ch, and ch "
         "the list it reads channels from (a registered row corrects its entry then)",),
        f"{OLDEST} - {NEWEST}", _module_channels_missing),
    "model_files": Feature(
        "shipped model YAMLs by name from any folder",
        ("ultralytics.nn.tasks.check_yaml, as called by tasks.yaml_model_load",),
        f"{OLDEST} - {NEWEST}", _model_files_missing),
    "safe_load": Feature(
        "checkpoints with attention blocks under ULTRALYTICS_SAFE_LOAD=1",
        ("ultralytics.nn.tasks._SafeLoad (loading, _build, _registry, _lock, SUPPORTED)",
         "ultralytics.nn.tasks.torch_safe_load(weight, safe_only)", "ultralytics.nn.tasks.SAFE_LOAD"),
        f"8.4.126 - {NEWEST}", _safe_load_missing),
    "exact_resume": Feature(
        "crash-safe checkpoints and exact --resume",
        ("BaseTrainer.save_model writing last.pt/best.pt through self.last.write_bytes",
         "BaseTrainer._do_train stepping when ni - last_opt_step >= self.accumulate",
         "BaseTrainer.resume_training, final_eval, optimizer_step, _close_dataloader_mosaic",
         "ultralytics.engine.trainer.strip_optimizer (swapped for an atomic one during final_eval)",
         "InfiniteDataLoader.reset and .generator; the dataset's mosaic buffer, ims and load_image"),
        f"{OLDEST} - {NEWEST}", _resume_missing),
    "data_audit": Feature(
        "bad-data audit (data_report.txt)",
        ("ultralytics.data.utils.verify_image_label((im_file, lb_file, prefix, keypoint, num_cls, nkpt, ndim"
         "[, single_cls])) and its 10 results", "ultralytics.data.utils.get_hash", "ultralytics.utils.patches.imread",
         "ultralytics.utils.patches.PIL_FALLBACK_SUFFIXES where it exists"),
        f"{OLDEST} - {NEWEST}", _audit_missing),
    "sliced_val": Feature(
        "val --slice-size (sliced predictions scored by ultralytics' matcher)",
        ("ultralytics.models.yolo.detect.DetectionValidator._process_batch(preds: dict, batch: dict)",
         "ultralytics.utils.metrics.DetMetrics.update_stats"),
        f"8.3.154 - {NEWEST}", _sliced_val_missing),
}


@functools.lru_cache(maxsize=None)
def missing(key: str) -> tuple[str, ...]:
    """What the installed ultralytics lacks of feature `key` (empty: the feature works); no warning."""
    return tuple(FEATURES[key].missing())


@functools.lru_cache(maxsize=None)
def enabled(key: str) -> bool:
    """True if the installed ultralytics has what feature `key` needs; else warns once and returns False."""
    feature, lacking = FEATURES[key], missing(key)
    if lacking:
        LOGGER.warning(f"yolov5-attention: {feature.title} is switched off: ultralytics {VERSION} lacks "
                       f"{'; '.join(lacking)} (it works on ultralytics {feature.works})")
    return not lacking


def table() -> list[dict[str, str]]:
    """One row per feature: whether it is on with the installed release, and what it touches."""
    return [{"feature": f.title, "on": "no" if missing(key) else "yes", "works on": f.works,
             "touches": "; ".join(f.touches)} for key, f in FEATURES.items()]


if __name__ == "__main__":
    print(f"ultralytics {VERSION} (declared range {OLDEST} - {NEWEST}):")
    for row in table():
        print(f"  {row['on']:>3}  {row['feature']}  [works on {row['works on']}]")
