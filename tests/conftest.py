"""Shared fixtures: tiny model YAMLs, datasets and checkpoints are built on the fly, never downloaded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("YOLO_OFFLINE", "1")  # ultralytics must not look for the network in tests

import attention  # noqa: E402,F401  (registers the blocks and installs the hook)

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
BLOCKS = ("SE", "ECA", "CA", "CBAM")


@pytest.fixture
def write_yaml(tmp_path):
    """Write text to tmp_path/name and return the path."""

    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write
