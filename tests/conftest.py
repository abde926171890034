"""Shared fixtures: tiny model YAMLs, datasets and checkpoints are built on the fly, never downloaded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("YOLO_OFFLINE", "1")  # ultralytics must not look for the network in tests
# Subprocesses run in temporary folders: a relative PYTHONPATH (an older ultralytics release under test) would
# silently stop applying there and they would run the installed release instead.
if os.environ.get("PYTHONPATH"):
    os.environ["PYTHONPATH"] = os.pathsep.join(str(Path(p).resolve()) if p else p
                                               for p in os.environ["PYTHONPATH"].split(os.pathsep))

import attention  # noqa: E402,F401  (registers the blocks and installs the hook)

REPO = Path(__file__).resolve().parents[1]

# The core: blocks in YAMLs (parser hook), the variant YAMLs, transfer, training and validation. CI runs these on
# the oldest ultralytics release we declare too (-m core), besides the full suite on the newest.
# Packaging (test_wheel.py) does not depend on the release, so it runs on the newest only.
CORE = {"test_hook.py", "test_models.py", "test_p2.py", "test_zoo.py", "test_transfer.py", "test_seeds.py",
        "test_scripts.py", "test_coco.py", "test_compare.py", "test_modules.py", "test_placements.py", "test_nwd.py"}


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.name in CORE:
            item.add_marker(pytest.mark.core)
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


def data_yaml(root: Path, path: Path) -> Path:
    """A data YAML for a generated dataset folder."""
    cfg = {"path": str(root), "train": "images/train", "val": "images/val", "names": ["vehicle", "person", "boat"]}
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """16 train and 8 val images of the embedded generator at 160 px: its data YAML."""
    from attention.data.embedded import generate

    root = generate(tmp_path_factory.mktemp("data") / "tiny", n_train=16, n_val=8, imgsz=160, seed=1)
    return data_yaml(root, root.parent / "tiny.yaml")


@pytest.fixture
def ul_log():
    """The messages ultralytics' LOGGER emits during the test (it does not propagate to pytest's caplog)."""
    import logging

    from ultralytics.utils import LOGGER

    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = Collect(level=logging.DEBUG)
    LOGGER.addHandler(handler)
    yield messages
    LOGGER.removeHandler(handler)
