"""--weights values: a file on disk, or an ultralytics release name (yolov5su.pt) fetched by ultralytics when online."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES, attempt_download_asset

from attention.adapter import compat
from attention.errors import MissingFileError

# (model, checkpoint dict) from a .pt file, through ultralytics' loader (ULTRALYTICS_SAFE_LOAD included)
load_checkpoint = compat.checkpoint_loader()


def resolve_weights(weights: str | Path) -> str:
    """A checkpoint path; a bare release name not on disk is downloaded, or fails in one line saying what to do."""
    path = Path(weights).expanduser()
    if path.is_file():
        return str(path)
    if path.parent == Path(".") and path.name in GITHUB_ASSETS_NAMES:
        try:
            found = attempt_download_asset(path.name)  # also finds it in ultralytics' weights folder
            why = "the download left no file"
        except Exception as e:  # offline: ConnectionError after ultralytics' retries; anything else alike
            found, why = None, " ".join(str(e).replace("❌", "").split()) or type(e).__name__
        if found and Path(found).is_file():
            return str(found)
        raise MissingFileError(
            f"weights {path.name}: not on this machine and not downloadable now ({why}); fetch it where there is "
            f"internet (https://github.com/ultralytics/assets/releases) and pass its path: --weights path/to/{path.name}"
        )
    raise MissingFileError(f"weights not found: {weights}")


def load(weights: str | Path) -> tuple[Any, dict]:
    """(model in float32, checkpoint dict) of a checkpoint file, read by ultralytics' loader."""
    return load_checkpoint(resolve_weights(weights))
