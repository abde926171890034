"""Everything that touches ultralytics, and the only code that imports it.

compat.py lists every private name we rely on, per feature; a feature whose names the installed
release lacks is switched off with one warning. install() wires the parser hook (blocks in YAMLs),
the model-file lookup (shipped YAMLs by name) and the restricted-loading allow-list; it is
idempotent and runs on `import attention` (in DDP workers too).
"""

from __future__ import annotations

import importlib
import os
import sys

from attention.errors import UserError

ENV_MODULES = "ATTENTION_MODULES"  # comma-separated modules of the user's that register modules of their own


def install() -> None:
    from attention.adapter import model_files, modules, parser, safe_load  # noqa: F401  (modules registers C3Attn)

    parser.install()
    model_files.install()
    safe_load.install()
    import_user_modules()


def import_user_modules(names: str | None = None) -> None:
    """Import the user's modules named in names (or $ATTENTION_MODULES), from the working folder too.

    Set in the environment, this reaches every process of a run (DDP workers import attention first).
    """
    names = os.environ.get(ENV_MODULES, "") if names is None else names
    for name in filter(None, (n.strip() for n in names.split(","))):
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())  # a console script does not look in the working folder by itself
        try:
            importlib.import_module(name)
        except ImportError as e:  # a user's mistake: one line, not a traceback
            raise UserError(f"--modules / ${ENV_MODULES}: cannot import {name!r} ({e})") from None
