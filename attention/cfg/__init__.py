"""The YAMLs we ship (model, hyperparameter/experiment and dataset YAMLs) and how a name becomes one of them.

In a source checkout they are the top-level folders models/, configs/ and data/; the wheel carries the
same files inside the package, as attention/cfg/models, attention/cfg/configs and attention/cfg/data
(pyproject.toml maps them). A name the user gives is used as a path when it exists, so the user's own
files always win; otherwise a shipped file of that name is looked up, from any working folder.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from attention.errors import MissingFileError, UserError

KINDS = ("models", "configs", "data")
_HERE = Path(__file__).resolve().parent
_CHECKOUT = _HERE.parents[1]  # a source checkout: attention/cfg -> the repository root


def folder(kind: str) -> Path:
    """Where the shipped YAMLs of a kind ('models', 'configs' or 'data') are."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    packaged = _HERE / kind
    return packaged if packaged.is_dir() else _CHECKOUT / kind


def shipped(kind: str) -> list[str]:
    """Names of the shipped YAMLs of a kind, sorted."""
    return sorted(p.name for p in folder(kind).glob("*.yaml"))


def scale_free(name: str) -> str:
    """yolov5s-cbam.yaml -> yolov5-cbam.yaml: ultralytics' convention, one file for every scale."""
    return re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", name)


def find(kind: str, name: str | Path) -> Path | None:
    """The shipped file a bare name (or models/NAME, configs/NAME, data/NAME) stands for, else None.

    Model names may carry a scale letter (yolov5n-p2-cbam.yaml); the file found is the scale-free one.
    """
    path = Path(name)
    if path.parent not in (Path("."), Path(kind)):
        return None  # a path into some other folder is the user's, not ours
    for candidate in (path.name, scale_free(path.name)) if kind == "models" else (path.name,):
        if (folder(kind) / candidate).is_file():
            return folder(kind) / candidate
    return None


def resolve(kind: str, name: str | Path, what: str) -> Path:
    """name as a path if it exists, else the shipped file it names; FileNotFoundError lists what we ship."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    found = find(kind, path)
    if found is None:
        raise MissingFileError(f"{what} not found: {name} (shipped: {', '.join(shipped(kind))})")
    return found


def model_yaml(name: str | Path) -> str:
    """A --cfg value as ultralytics should receive it: an existing file, or a shipped name kept with its scale.

    ultralytics reads the scale from the name (yolov5s-cbam.yaml -> s), so a shipped model keeps the name
    the user wrote; the adapter points ultralytics' YAML lookup at our folder (attention.adapter.model_files).
    """
    path = Path(name).expanduser()
    if path.suffix not in (".yaml", ".yml"):
        raise UserError(f"--cfg takes a model YAML, got {str(name)!r}")
    if path.is_file() or (path.parent / scale_free(path.name)).is_file():
        return str(path)
    if find("models", path) is None:
        raise MissingFileError(f"model YAML not found: {name} (shipped: {', '.join(shipped('models'))})")
    return path.name


def load_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """The YAML mapping in path; FileNotFoundError / ValueError name `what` and the file."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{what} not found: {path}")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise UserError(f"{what} {path} is not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(values, dict):
        raise UserError(f"{what} {path} must be a mapping of name: value")
    return values
