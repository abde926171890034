"""Where the project's model YAMLs live, and how a --cfg / --weights argument becomes a file."""

from __future__ import annotations

import re
from pathlib import Path

from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES

REPO_ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = REPO_ROOT / "models"


def model_yamls() -> list[str]:
    """Names of the shipped model YAMLs (scale-free, e.g. yolov5-cbam.yaml)."""
    return sorted(p.name for p in MODELS_DIR.glob("*.yaml"))


def resolve_cfg(cfg: str | Path) -> str:
    """A model YAML path: as given if it exists, else looked up in models/ (yolov5s-cbam.yaml -> models/...).

    The scale letter stays in the returned name: ultralytics reads it from there and opens the
    scale-free file (yolov5-cbam.yaml) itself.
    """
    path = Path(cfg)
    if path.suffix not in {".yaml", ".yml"}:
        raise ValueError(f"--cfg takes a model YAML, got {str(cfg)!r}")
    if path.is_file():
        return str(path)
    unified = re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", path.stem) + path.suffix  # yolov5s-cbam -> yolov5-cbam
    for candidate in (path.parent / unified, MODELS_DIR / path.name, MODELS_DIR / unified):
        if candidate.is_file():
            return str(candidate.with_name(path.name))
    raise FileNotFoundError(f"model YAML not found: {cfg} (shipped in models/: {', '.join(model_yamls())})")


def resolve_weights(weights: str | Path) -> str:
    """A checkpoint path; an ultralytics release name (yolov5su.pt) is left for ultralytics to download."""
    path = Path(weights)
    if path.is_file() or (path.parent == Path(".") and path.name in GITHUB_ASSETS_NAMES):
        return str(path)
    raise FileNotFoundError(f"weights not found: {weights}")
