"""Everything that touches ultralytics, and the only code that imports it.

compat.py lists every private name we rely on, per feature; a feature whose names the installed
release lacks is switched off with one warning. install() wires the parser hook (blocks in YAMLs),
the model-file lookup (shipped YAMLs by name) and the restricted-loading allow-list; it is
idempotent and runs on `import attention` (in DDP workers too).
"""

from __future__ import annotations


def install() -> None:
    from attention.adapter import model_files, modules, parser, safe_load  # noqa: F401  (modules registers C3Attn)

    parser.install()
    model_files.install()
    safe_load.install()
