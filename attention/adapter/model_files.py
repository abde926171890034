"""YOLO("yolov5s-cbam.yaml") from any folder: ultralytics' model-YAML lookup also searches the YAMLs we ship.

ultralytics' yaml_model_load turns yolov5s-cbam.yaml into the scale-free yolov5-cbam.yaml and finds it
with check_yaml, which searches the working folder and ultralytics' own cfg folder. We wrap that lookup:
a name that is not an existing file and that we ship resolves to our file; everything else goes to
ultralytics as before. The scale still comes from the name the user wrote.
"""

from __future__ import annotations

import functools
from pathlib import Path

from ultralytics.nn import tasks

from attention import cfg
from attention.adapter import compat


def install() -> None:
    """Wrap tasks.check_yaml once (yaml_model_load looks it up there at call time); idempotent."""
    if getattr(tasks.check_yaml, "_attention_hook", False) or not compat.enabled("model_files"):
        return
    original = tasks.check_yaml

    @functools.wraps(original)
    def check_yaml(file, *args, **kwargs):
        if not Path(str(file)).exists():
            ours = cfg.find("models", str(file))
            if ours is not None:
                return str(ours)
        return original(file, *args, **kwargs)

    check_yaml._attention_hook = True
    tasks.check_yaml = check_yaml


def read_model_yaml(name: str | Path) -> dict:
    """The model dict ultralytics builds from a --cfg value: the file its lookup finds (ours included), with
    'scale' read from the name as written and 'yaml_file' the name. Variant specs start from it (training.variants)."""
    return tasks.yaml_model_load(name)


def scale_in_name(name: str | Path) -> str:
    """The scale letter ultralytics reads from a model YAML's file name (yolov5s+SE@sppf.yaml -> 's'), '' if none."""
    return tasks.guess_model_scale(name)
