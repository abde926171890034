"""Every ultralytics name we rely on beyond its public API, feature by feature, and the switch for each.

ultralytics changes its internals from one weekly release to the next. Each Feature below lists what it
touches; `enabled(key)` checks it the first time the feature is used (by a small call where one can tell,
such as parsing a six-row model, else by name), and when something is missing the feature is switched off
with one warning that names it and the releases where it works. Nothing else is affected. Beside the
features, the version facts: names and behaviour that moved between releases, each with the
releases it was seen on. `python -m attention.adapter.compat` prints the table for the installed release.

The public API we use (YOLO, DetectionModel, the trainer and validator classes, IMG_FORMATS,
img2label_paths, check_det_dataset, ...) is imported in attention/adapter/api.py.
"""

from __future__ import annotations

import copy
import functools
import importlib
import inspect
from dataclasses import dataclass
from typing import Any, Callable

import torch
import ultralytics
from torch import nn
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


# Version facts: names that moved and behaviour that changed between releases, each with the releases it was seen
# on. Every release in the range has one of the answers, so none of them switches a feature off. One more, for
# whoever letterboxes an image with api.LetterBox: its keyword scaleFill (seen on 8.3.5) is scale_fill from
# 8.3.154 on; new_shape, auto, scaleup, center and stride are the same on 8.3.5 - 8.4.190.


def _first(*dotted: str) -> Any:
    """The object at the first of these names that the installed release has."""
    for name in dotted:
        if (obj := _get(name)) is not _ABSENT:
            return obj
    raise ImportError(f"ultralytics {VERSION} has none of {', '.join(dotted)}")


def checkpoint_loader() -> Callable:
    """ultralytics' loader of a .pt file into (model, checkpoint dict): load_checkpoint (seen on 8.3.253 - 8.4.190),
    named attempt_load_one_weight before (seen on 8.3.5 - 8.3.154)."""
    return _first("ultralytics.nn.tasks.load_checkpoint", "ultralytics.nn.tasks.attempt_load_one_weight")


def model_unwrapper() -> Callable:
    """The model inside DDP (and torch.compile) wrappers: unwrap_model (seen on 8.3.253 - 8.4.190), de_parallel
    before (seen on 8.3.5 - 8.3.154)."""
    return _first("ultralytics.utils.torch_utils.unwrap_model", "ultralytics.utils.torch_utils.de_parallel")


def pil_fallback_suffixes() -> tuple[str, ...]:
    """Image suffixes ultralytics reads through PIL rather than OpenCV (HEIF, AVIF): PIL_FALLBACK_SUFFIXES (seen on
    8.4.190); none before (seen on 8.3.5 - 8.4.126)."""
    found = _get("ultralytics.utils.patches.PIL_FALLBACK_SUFFIXES")
    return () if found is _ABSENT else tuple(found)


@functools.lru_cache(maxsize=None)
def verify_takes_single_cls() -> bool:
    """verify_image_label's argument tuple ends in single_cls, 8 items (seen on 8.3.154 - 8.4.190), else 7 (seen on
    8.3.5). Asked by a call: it unpacks the tuple before reading anything, and a file that does not exist is fine."""
    from ultralytics.data.utils import verify_image_label

    try:
        verify_image_label(("", "", "", False, 1, 0, 0, False))
    except ValueError:  # too many values to unpack
        return False
    return True


# What ultralytics' detection validator writes into predictions.json, and the attributes of it that
# attention/adapter/validator.py reads. Scoring does not depend on the ids: ScoringValidator records the image
# file and class of each prediction as pred_to_json writes it (either signature below), and validate() falls back
# on these ids only where it cannot (refusing files whose ids collide).
PREDICTION_IDS = {
    "category_id": "the class index (seen on 8.3.5), class + 1 (seen on 8.4.190); COCO's 91-id map (coco80_to_coco91) "
                   "for a val list whose path contains 'coco' and ends in /val2017.txt or /test-dev2017.txt (both)",
    "image_id": "the file stem, an int where it is numeric (both); the file name beside it (seen on 8.4.190)",
    "pred_to_json": "(predn: an (n, 6) tensor, filename) (seen on 8.3.5); (predn: a dict with 'cls', pbatch: a dict "
                    "with 'im_file') (seen on 8.4.190); one jdict entry per box, in order (both)",
    "attributes": "jdict, class_map, args.max_det and dataloader.dataset.im_files after init_metrics (both)",
    "max_det": "a max_det left at its default (300) is raised to the most labels in one image of the split, by "
               "DetectionValidator._check_max_det in init_metrics (seen on 8.4.190, not on 8.3.5); ScoringValidator "
               "makes that a no-op and puts back the budget it was given",
    "eval_json": "eval_json(stats) -> stats runs ultralytics' own COCO evaluation after the metrics, at maxDets 100: "
                 "for any split with save_json (faster-coco-eval, seen on 8.4.190), for a COCO-named list only (seen on "
                 "8.3.5); ScoringValidator returns stats unchanged",
}


# A model that uses ultralytics' parser as the parser hook does (attention/adapter/parser.py), at depth and
# width 0.5: a 1x1 Conv row, an nn.Identity row (a stand-in keeping the width), a Conv row after it (a stand-in
# changing it), an nn.Identity row, and two probes: Conv rows that read earlier layers by index, one repeated.
_SAMPLE = {"nc": 1, "depth_multiple": 0.5, "width_multiple": 0.5, "head": [], "backbone": [
    [-1, 1, "Conv", [32, 1]],  # 0: 3 -> 16 channels
    [-1, 1, "nn.Identity", []],  # 1: 16
    [-1, 1, "Conv", [64, 1]],  # 2: 16 -> 32
    [-1, 1, "nn.Identity", []],  # 3: 32
    [1, 3, "Conv", [16, 1]],  # 4: reads layer 1 (16); round(3 * 0.5) = 2 copies of 16 -> 8
    [3, 1, "Conv", [16, 1]]]}  # 5: reads layer 3 (32)


@functools.lru_cache(maxsize=None)
def _parsed_sample() -> tuple[str, ...]:
    """What of the parser hook's reliance the installed parse_model fails to do with _SAMPLE (empty: all of it)."""
    parse_model = _get("ultralytics.nn.tasks.parse_model")
    if parse_model is _ABSENT:
        return ("ultralytics.nn.tasks.parse_model",)
    try:
        with torch.random.fork_rng(devices=[]):  # a probe must not move the random numbers a seeded build draws
            layers, _ = inspect.unwrap(parse_model)(copy.deepcopy(_SAMPLE), 3, verbose=False)
        rows = _SAMPLE["backbone"]
        first = [m[0] if isinstance(m, nn.Sequential) else m for m in layers]
        convs = [getattr(m, "conv", None) for m in first]
        width = [(c.in_channels, c.out_channels) if isinstance(c, nn.Conv2d) else None for c in convs]
        checks = {
            "parse_model(d, ch) returning an nn.Sequential of one layer per row, each with its i, f and type":
                isinstance(layers, nn.Sequential) and len(layers) == len(rows) and all(
                    (m.i, m.f, isinstance(m.type, str)) == (i, row[0], True) for i, (m, row) in
                    enumerate(zip(layers, rows))),
            "a [c, 1] Conv row built on its input's width with c scaled by the model's width (Conv.conv)":
                width[0] == (3, 16),
            "an nn.Identity row keeping its input's width": isinstance(layers[1], nn.Identity) and width[2] == (16, 32),
            "a row's number scaled by the model's depth into that many copies in an nn.Sequential":
                isinstance(layers[4], nn.Sequential) and len(layers[4]) == 2,
            "a row reading the width of the earlier layer its 'from' names": width[4] == (16, 8),
            "a Conv row's width reaching the rows after it": width[5] == (32, 8),
        }
    except Exception as e:  # a parser that cannot build the sample at all
        return (f"parse_model(d, ch) building a model dict's rows ({type(e).__name__}: {e})",)
    return tuple(what for what, holds in checks.items() if not holds)


def _parser_missing() -> list[str]:
    return list(_parsed_sample())


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


def _c3_missing() -> list[str]:
    """C3Attn (attention/adapter/modules.py) subclasses C3 and recomputes its forward from C3's own layers."""
    try:
        from ultralytics.nn.modules import C3

        with torch.random.fork_rng(devices=[]):  # a probe must not move the random numbers a seeded build draws
            c3, x = C3(8, 8, 1, True, 1, 0.5).eval(), torch.randn(1, 8, 4, 4)
        with torch.no_grad():
            same = torch.allclose(c3(x), c3.cv3(torch.cat((c3.m(c3.cv1(x)), c3.cv2(x)), 1)))
        hidden = c3.cv1.conv.out_channels
    except Exception as e:
        return [f"C3(c1, c2, n, shortcut, g, e) with layers cv1 (a Conv), cv2, cv3 and m ({type(e).__name__}: {e})"]
    return ([] if same else ["C3.forward computing cv3(cat(m(cv1(x)), cv2(x)))"]) + (
        [] if hidden == 4 else ["C3's cv1 having c2 * e output channels"])


def _sliced_val_missing() -> list[str]:
    out = _missing_names("ultralytics.models.yolo.detect.DetectionValidator._process_batch",
                         "ultralytics.utils.metrics.DetMetrics.update_stats")
    if not out and "preds[\"cls\"]" not in _code("ultralytics.models.yolo.detect.DetectionValidator._process_batch"):
        out.append("DetectionValidator._process_batch(preds: dict, batch: dict)")
    return out


def _cpu_share_missing() -> list[str]:
    return _missing_names("ultralytics.utils.NUM_THREADS", "ultralytics.utils.torch_utils.NUM_THREADS")


_BOX_LOSS_ARGS = ["pred_dist", "pred_bboxes", "anchor_points", "target_bboxes", "target_scores", "target_scores_sum",
                  "fg_mask"]


def _nwd_loss_missing() -> list[str]:
    """NWD in the box loss and the assigner (attention/adapter/loss.py): names, call signatures, and the anchor layout
    its pixel scale rests on (checked by laying out a 64 x 96 input's anchors)."""
    loss, tal = "ultralytics.utils.loss", "ultralytics.utils.tal"
    out = _missing_names("ultralytics.nn.tasks.DetectionModel.init_criterion", f"{loss}.v8DetectionLoss",
                         f"{loss}.BboxLoss.forward", f"{tal}.TaskAlignedAssigner.iou_calculation",
                         f"{tal}.make_anchors")
    if out:
        return out
    if list(inspect.signature(_get(f"{loss}.BboxLoss.forward")).parameters)[1:8] != _BOX_LOSS_ARGS:
        out.append(f"BboxLoss.forward({', '.join(_BOX_LOSS_ARGS)}, ...)")
    if list(inspect.signature(_get(f"{tal}.TaskAlignedAssigner.iou_calculation")).parameters)[1:] != ["gt_bboxes",
                                                                                                      "pd_bboxes"]:
        out.append("TaskAlignedAssigner.iou_calculation(gt_bboxes, pd_bboxes)")
    if "self.iou_calculation(" not in _code(f"{tal}.TaskAlignedAssigner"):
        out.append("TaskAlignedAssigner computing its overlaps with self.iou_calculation")
    code = _code(f"{loss}.v8DetectionLoss")
    if not all(call in code for call in ("self.bbox_loss = BboxLoss(", "self.bbox_loss(", "self.assigner(")):
        out.append("v8DetectionLoss calling its bbox_loss (a BboxLoss) and assigner attributes")
    if "self.criterion(" not in _code("ultralytics.nn.tasks.BaseModel.loss"):
        out.append("BaseModel.loss computing the loss with model.criterion")
    try:
        from attention.adapter.loss import anchor_strides

        strides = (8.0, 16.0, 32.0)
        feats = [torch.zeros(1, 1, 64 // int(s), 96 // int(s)) for s in strides]
        _, stride_tensor = _get(f"{tal}.make_anchors")(feats, torch.tensor(strides), 0.5)
        same = torch.equal(stride_tensor.view(-1), anchor_strides(len(stride_tensor), strides))
    except Exception as e:
        same = False
        out.append(f"make_anchors(feats, strides, 0.5) ({type(e).__name__}: {e})")
    if not same and not out:
        out.append("make_anchors laying out each level's h * w anchors one level after another")
    return out


def _detect_widths_missing() -> list[str]:
    """detect_widths_from (the P2 configs): checked by building a two-level Detect and resizing its second level."""
    from attention.adapter.heads import probe

    return probe()


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
        ("ultralytics.nn.tasks.parse_model(d, ch): the nn.Sequential it builds, one layer per row with i, f and "
         "type; an nn.Identity row keeping its input's width; a [c, 1] Conv row (Conv.conv) built on the width of "
         "the layer its 'from' names, c scaled by the model's width, repeated as the row's depth-scaled number "
         "(checked by parsing a six-row model)",
         "the module names in ultralytics.nn.tasks' namespace, read to tell an unknown name"),
        f"{OLDEST} - {NEWEST}", _parser_missing),
    "module_channels": Feature(
        "registered modules that change channels or take several inputs (C3Attn, WeightedFusion, your own)",
        ("ultralytics.nn.tasks.parse_model: what the parser feature touches (a stand-in Conv row's scaled width "
         "reaching the rows after it is one of its checks)",),
        f"{OLDEST} - {NEWEST}", _parser_missing),
    "c3attn": Feature(
        "C3Attn, a C3 with an attention block inside",
        ("ultralytics.nn.modules.C3(c1, c2, n, shortcut, g, e): its layers cv1 (a Conv, c2 * e wide), cv2, cv3, m and "
         "forward cv3(cat(m(cv1(x)), cv2(x))), which C3Attn keeps (checked by building a small C3)",),
        f"{OLDEST} - {NEWEST}", _c3_missing),
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
    "nwd_loss": Feature(
        "NWD box loss and assigner (a model YAML's loss: box: nwd / assigner: true, train --box-loss nwd)",
        ("ultralytics.utils.loss.v8DetectionLoss, as DetectionModel.init_criterion() builds it: its bbox_loss (a "
         "BboxLoss, swapped for one that adds NWD) called as (pred_dist, pred_bboxes, anchor_points, target_bboxes, "
         "target_scores, target_scores_sum, fg_mask) (seen on 8.3.5 - 8.3.253), then imgsz and stride too (seen on "
         "8.4.0 - 8.4.190), with boxes and anchors in grid units, returning (box, dfl); its assigner (a "
         "TaskAlignedAssigner) and stride (seen on 8.3.5 - 8.4.190)",
         "ultralytics.utils.tal.TaskAlignedAssigner.iou_calculation(gt_bboxes, pd_bboxes) on pixel xyxy boxes "
         "(swapped on the instance for NWD)",
         "ultralytics.utils.tal.make_anchors: levels one after another, h * w anchors each (each anchor's stride "
         "follows from the anchor count)",
         "BaseModel.loss using model.criterion; the trainer's model and ema.ema (validation's val loss) each keep one; "
         "BaseTrainer.save_model pickling ema.ema, its criterion too (seen on 8.3.5 - 8.4.0; dropped from 8.4.126)"),
        f"{OLDEST} - {NEWEST}", _nwd_loss_missing),
    "detect_widths": Feature(
        "P2 variants whose P3-P5 Detect branches are as wide as the base's (detect_widths_from in a model YAML)",
        ("ultralytics.nn.modules.Detect(nc=..., ch=...[, reg_max, end2end]): cv2 and cv3, nn.ModuleLists with one "
         "branch per input, each cv2 branch opening with a Conv (.conv) on its input, each cv3 branch ending in an "
         "nn.Conv2d from the class width to nc (checked by building a two-level Detect)",),
        f"{OLDEST} - {NEWEST}", _detect_widths_missing),
    "cpu_share": Feature(
        "compare --jobs N on the CPU: each run's threads set to its share of the cores",
        ("ultralytics.utils.NUM_THREADS and torch_utils.NUM_THREADS, what select_device() sets torch's CPU "
         "threads to (seen on 8.3.5 - 8.4.190)",),
        f"{OLDEST} - {NEWEST}", _cpu_share_missing),
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
