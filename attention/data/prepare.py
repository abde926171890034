"""A --data value becomes a data YAML ultralytics can read: shipped names found, embedded sets generated.

- A path that exists is used; otherwise a shipped data YAML of that name (tiny-objects.yaml).
- A YAML with a `generate:` mapping is an embedded synthetic set: it is drawn into the dataset cache
  (ATTENTION_DATASETS, else the user cache folder, never the installed package) on first use, and
  the YAML handed on points there.
- A relative `path:` is made relative to the YAML's own folder, or to the working folder when it is
  there instead (ultralytics would take its own datasets folder).
"""

from __future__ import annotations

import os
import tempfile
from hashlib import sha1
from pathlib import Path
from typing import Any

import yaml

from attention import cfg as shipped
from attention.data.embedded import CLASSES, GEN_KEYS, generate
from attention.errors import UserError

ENV_DATASETS = "ATTENTION_DATASETS"
EMBEDDED_DATA = "tiny-objects.yaml"  # the default --data: found among the shipped data YAMLs


def datasets_dir() -> Path:
    """Where embedded datasets are generated: $ATTENTION_DATASETS, else <user cache>/yolov5-attention/datasets."""
    env = os.environ.get(ENV_DATASETS)
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "yolov5-attention" / "datasets"


def _write_yaml(path: Path, cfg: dict[str, Any]) -> None:
    """Write cfg to path via a temp file and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))
    os.replace(tmp, path)


def _load(path: Path) -> dict[str, Any]:
    """Read and validate a data YAML."""
    cfg = shipped.load_mapping(path, "data YAML")
    missing = [k for k in ("names", "train", "val") if k not in cfg]
    if missing:
        raise UserError(f"data YAML {path} lacks required key(s): {', '.join(missing)}")
    if not isinstance(cfg["names"], (list, dict)) or not cfg["names"]:
        raise UserError(f"data YAML {path}: 'names' must be a non-empty list or mapping of class names")
    return cfg


def _generated(path: Path, cfg: dict[str, Any]) -> str:
    """Draw the embedded set a `generate:` YAML describes (or reuse the cached one); its resolved YAML."""
    gen = cfg["generate"]
    if not isinstance(gen, dict) or set(gen) - GEN_KEYS:
        raise UserError(f"data YAML {path}: 'generate' must be a mapping with keys from {sorted(GEN_KEYS)}")
    if not cfg.get("path"):
        raise UserError(f"data YAML {path}: 'generate' needs a 'path' (a folder name) to generate into")
    if len(cfg["names"]) != len(CLASSES):
        raise UserError(f"data YAML {path}: 'names' has {len(cfg['names'])} entries, the generator draws "
                         f"{len(CLASSES)} classes")
    root = generate(datasets_dir() / Path(str(cfg["path"])).name, **gen)
    resolved = root / path.name
    _write_yaml(resolved, {k: v for k, v in cfg.items() if k != "generate"} | {"path": str(root)})
    return str(resolved)


def prepare_data(data: str | Path) -> str:
    """The data YAML to hand ultralytics for a --data value (see the module docstring)."""
    path = shipped.resolve("data", data, "data YAML").resolve()
    cfg = _load(path)
    if cfg.get("generate") is not None:
        return _generated(path, cfg)
    rel = cfg.get("path")
    found = [p for p in (path.parent / str(rel), Path.cwd() / str(rel)) if p.exists()] if rel else []
    if found and not Path(str(rel)).expanduser().is_absolute():
        out = dict(cfg) | {"path": str(found[0].resolve())}
        key = sha1(f"{path}\n{path.read_text()}".encode()).hexdigest()[:12]
        resolved = Path(tempfile.gettempdir()) / "attention-data" / f"{path.stem}-{key}.yaml"
        _write_yaml(resolved, out)
        return str(resolved)
    return str(path)
