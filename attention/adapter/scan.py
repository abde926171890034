"""ultralytics' own image/label check, called file by file for the data audit, and its scan messages kept quiet.

attention/data/audit.py decides and words; this module is what it needs from ultralytics (compat feature
"data_audit"): verify_image_label as ultralytics' dataset scan calls it, its image reader and file hash,
and a log filter, active only while a run trains or scores, that drops the scan's repeats of files the
audit already listed.
"""

from __future__ import annotations

import contextlib
import logging
import re
from typing import Any, Iterable, Iterator

import numpy as np
from ultralytics.data import utils as data_utils
from ultralytics.utils import LOGGER
from ultralytics.utils import patches

from attention.adapter import compat

# Suffixes ultralytics reads through PIL (HEIF, AVIF) rather than OpenCV; none on releases before 8.4.190.
PIL_FALLBACK_SUFFIXES: tuple[str, ...] = compat.pil_fallback_suffixes()
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def available() -> bool:
    return compat.enabled("data_audit")


def decodes(im_file: str) -> bool:
    """OpenCV (through ultralytics' reader, as training reads it) can decode the image."""
    return patches.imread(im_file) is not None


def files_hash(paths: list[str]) -> str:
    """ultralytics' hash of file names, sizes and times: changes when any file does."""
    return data_utils.get_hash(paths)


def verify(im_file: str, lb_file: str, nc: int) -> dict[str, Any]:
    """ultralytics' verdict on one image/label pair, as its dataset scan reaches it.

    {"ok": kept or not, "labels": (n, 5) array, "missing"/"read"/"empty": label file counts, "message": its note}.
    """
    args: tuple = (im_file, lb_file, "", False, nc, 0, 0)
    if compat.verify_takes_single_cls():
        args += (False,)
    im, lb, _, _, _, nm, nf, ne, _, msg = data_utils.verify_image_label(args)
    labels = np.zeros((0, 5), np.float32) if lb is None else lb
    return {"ok": im is not None, "labels": labels, "missing": nm, "read": nf, "empty": ne, "message": msg or ""}


class _AlreadyReported(logging.Filter):
    """Drops the lines of ultralytics' dataset-scan messages that name a file our report already listed
    (it repeats them at every dataset build: train, val, and again from its cache)."""

    def __init__(self, files: Iterable[str]) -> None:
        super().__init__()
        self.files = set(files)

    def _names_one(self, line: str) -> bool:
        text = _ANSI.sub("", line)
        return any(f"{f}: " in text for f in self.files)  # "<file>: <what ultralytics found>", after any prefix

    def filter(self, record: logging.LogRecord) -> bool:
        lines = record.getMessage().split("\n")
        kept = [x for x in lines if not self._names_one(x)]
        if len(kept) == len(lines):
            return True
        if not any(x.strip() for x in kept):
            return False
        record.msg, record.args = "\n".join(kept), ()
        return True


@contextlib.contextmanager
def quiet_about(files: Iterable[str]) -> Iterator[None]:
    """While the block runs, ultralytics' log leaves out its lines about these (already reported) files."""
    files = set(files)
    if not files:
        yield
        return
    flt = _AlreadyReported(files)
    LOGGER.addFilter(flt)
    try:
        yield
    finally:
        LOGGER.removeFilter(flt)
