"""yolov5-attention compare: every variant trained alike over several seeds, paired differences with intervals.

The flags are made from the settings object's fields (attention.evaluation.experiment.Experiment): name, type,
default and help are declared there once. A flag left out is None here, so an experiment YAML's value stands.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from pathlib import Path
from typing import Any

HELP = "compare levers (variants x ways of inferring) over seeds: paired intervals against the baseline, 95%% jointly"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from attention.evaluation.experiment import Experiment

    p.add_argument("experiment", nargs="?", help="experiment YAML (e.g. compare-n.yaml); flags override it")
    hints = typing.get_type_hints(Experiment)
    for f in dataclasses.fields(Experiment):
        p.add_argument(f"--{f.name.replace('_', '-')}", *f.metadata.get("flags", ()), dest=f.name,
                       **_argparse_of(f, hints[f.name]))


def _argparse_of(f: dataclasses.Field, hint: Any) -> dict[str, Any]:
    """add_argument's keywords for a field: its type (the non-None one of an Optional), its help and default."""
    meta = f.metadata
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    options = [o for o in (typing.get_args(hint) if union else (hint,)) if o is not type(None)]
    kind = meta.get("cli_type") or (options[0] if len(options) == 1 else str)
    default = f.default if f.default is not dataclasses.MISSING else (
        f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
    text = meta.get("help", "")
    if default not in (None, "", False) and "default" not in text:
        text += f" (default: {default:g})" if isinstance(default, float) else f" (default: {default})"
    keywords: dict[str, Any] = {"help": text.replace("%", "%%"), "default": None, **meta.get("argparse", {})}
    if kind is bool:
        return keywords | {"action": "store_true"}
    if typing.get_origin(kind) is list:
        return keywords | {"nargs": "+", "type": (typing.get_args(kind) or (str,))[0]}
    return keywords | {"type": kind}


def run(args: argparse.Namespace) -> object:
    from attention import cfg as shipped
    from attention.evaluation.compare import compare
    from attention.evaluation.experiment import Experiment
    from attention.evaluation.workers import stop_on_sigterm

    given = {k: v for k, v in vars(args).items() if v is not None}
    settings: dict[str, Any] = {}
    if "experiment" in given:
        path = shipped.resolve("configs", given.pop("experiment"), "experiment YAML")
        settings = Experiment.coerce(shipped.load_mapping(path, "experiment YAML"), where=f"experiment YAML {path}")
        settings.setdefault("name", Path(path).stem)
    settings.update(given)
    experiment = Experiment.from_mapping(settings)
    try:
        with stop_on_sigterm():  # a scheduler's SIGTERM stops the workers as Ctrl-C does
            return compare(experiment)
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: the workers are stopped by now, their saved epochs kept
        print(f"compare: stopped ({str(e) or 'Ctrl-C'}); every saved epoch is kept: the same command carries on",
              file=sys.stderr)
        sys.exit(130)
