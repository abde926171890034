"""Reading the YAML files users hand us (hyperparameters, experiments) with one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def load_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """The YAML mapping in path; FileNotFoundError / ValueError name `what` and the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{what} {path} is not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(values, dict):
        raise ValueError(f"{what} {path} must be a mapping of name: value")
    return values
