"""A comparison's settings as one typed object: what an experiment YAML and compare's flags may say.

Experiment.from_mapping() checks names and types once, so a typo in an experiment YAML is one line naming
the key, and the rest of the code reads attributes instead of passing twenty keyword arguments along.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from attention.errors import UserError

DEFAULT_DATA = "tiny-objects.yaml"  # the embedded set (attention.data.prepare.EMBEDDED_DATA; not imported: it is a string)

# What must be equal for two invocations to share run folders. Scoring options (infer, size_bins, max_det)
# only rescore, and the summary options (metric, margin) only re-tabulate.
RUN_SETTINGS = ("data", "hyp", "weights", "epochs", "imgsz", "batch_size", "attn_init", "finetune", "base")


@dataclass
class Experiment:
    """Every variant trained alike over seeds, each run scored every way asked, levers judged against the first."""

    cfg: list[str]  # model YAMLs, the baseline first
    seeds: int | list[int] = 3  # a count (0, 1, ...) or the seeds themselves
    epochs: int = 30
    data: str = DEFAULT_DATA
    hyp: str = ""
    weights: str = ""  # base checkpoint every variant starts from
    finetune: bool = False  # train one base (first cfg, seed 0) or take weights; fine-tune every variant from it
    base_epochs: int = 30
    base_hyp: str = ""
    base_data: str = ""
    base_imgsz: int = 0
    imgsz: int = 640
    batch_size: int = 16
    device: str = ""
    workers: int = 8
    attn_init: str | None = None  # paper, identity; default identity with finetune
    infer: list[str] | None = None  # full:SIZE and/or sliced:TILE; default full:imgsz
    size_bins: str = "coco"
    metric: str | None = None
    max_det: int | None = None  # detection budget: prediction cap and COCO maxDets; default ultralytics' own
    margin: float | None = None  # practical-equivalence margin on the metric; default attention.evaluation.stats'
    max_seeds: int = 0  # > seeds: add seeds to undecided levers only, up to this many
    max_hours: float = 0.0  # with max_seeds: stop adding seeds once the runs so far took this long in all
    jobs: int = 1  # runs at once on this machine, each pinned to its share of --device
    ray: str = ""  # a running Ray cluster (auto or an address): each run is a Ray task
    ray_gpus: float | None = None  # GPUs a Ray task asks for (default 1 if the cluster has GPUs, else 0)
    ray_cpus: float = 1.0  # CPUs a Ray task asks for (its torch threads on a CPU-only cluster)
    project: str = "runs/compare"
    name: str = "exp"

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def coerce(cls, settings: Mapping[str, Any], where: str = "compare") -> dict[str, Any]:
        """settings with each value as its field's type; an unknown key or a wrong type is one line naming it."""
        unknown = sorted(set(settings) - set(cls.keys()))
        if unknown:
            raise UserError(f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(cls.keys())}")
        hints = typing.get_type_hints(cls)
        return {k: _coerce(k, v, hints[k], where) for k, v in settings.items()}

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any], where: str = "compare") -> "Experiment":
        """Settings from an experiment YAML and/or flags, checked (see coerce() and checked())."""
        values = cls.coerce(settings, where)
        if "cfg" not in values:
            raise UserError("name the variants with --cfg (the baseline first) or an experiment YAML")
        return cls(**values).checked()

    def checked(self) -> "Experiment":
        if isinstance(self.cfg, str):
            self.cfg = [self.cfg]
        if len(self.cfg) < 2 and len(self.infer or []) < 2:
            raise UserError("compare needs two levers: two --cfg (the baseline first) or two --infer modes")
        if not self.seed_list:
            raise UserError("--seeds must be at least 1")
        for key in ("epochs", "imgsz", "batch_size", "jobs"):
            if getattr(self, key) < 1:
                raise UserError(f"--{key.replace('_', '-')} must be at least 1, got {getattr(self, key)}")
        if self.max_det is not None and self.max_det < 1:
            raise UserError(f"--max-det must be at least 1, got {self.max_det}")
        if self.margin is not None and self.margin < 0:
            raise UserError(f"--margin must be 0 or more (a difference in {self.metric or 'AP'}), got {self.margin}")
        if self.max_seeds and self.max_seeds <= len(self.seed_list):
            raise UserError(f"--max-seeds {self.max_seeds} must exceed the {len(self.seed_list)} first seeds")
        if self.max_hours < 0 or (self.max_hours and not self.max_seeds):
            raise UserError("--max-hours caps the seeds --max-seeds adds: give --max-seeds too (and hours > 0)")
        if self.jobs > 1 and self.ray:
            raise UserError("--jobs runs several runs on this machine, --ray on a cluster: give one of them")
        if self.attn_init not in (None, "paper", "identity"):
            raise UserError(f"--attn-init takes paper or identity, got {self.attn_init!r}")
        return self

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)

    @property
    def start_as(self) -> str:
        """How inserted blocks start: as the paper initialises them, or as the identity (the fine-tune default)."""
        return self.attn_init or ("identity" if self.finetune else "paper")

    @property
    def trains_base(self) -> bool:
        return bool(self.finetune and not self.weights)

    @property
    def base(self) -> dict[str, Any] | None:
        """The base run's own settings with --finetune and no --weights (None otherwise)."""
        if not self.trains_base:
            return None
        return dict(epochs=self.base_epochs, hyp=str(self.base_hyp or self.hyp), data=str(self.base_data or self.data),
                    imgsz=self.base_imgsz or self.imgsz)

    @property
    def root(self) -> Path:
        return Path(self.project).resolve() / self.name

    def run_settings(self) -> dict[str, Any]:
        """What defines the runs (RUN_SETTINGS): saved in settings.json and compared on every later invocation."""
        return dict(data=str(self.data), hyp=str(self.hyp), weights=str(self.weights), epochs=self.epochs,
                    imgsz=self.imgsz, batch_size=self.batch_size, attn_init=self.start_as, finetune=bool(self.finetune),
                    base=self.base)

    def replace(self, **changes: Any) -> "Experiment":
        return dataclasses.replace(self, **changes)


def _coerce(key: str, value: Any, hint: Any, where: str) -> Any:
    """value as the field's type (a YAML number for a float, one string for a list of strings), else a UserError."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for option in options:
        if option is type(None) and value is None:
            return None
        origin = typing.get_origin(option) or option
        if origin is list and isinstance(value, (list, tuple)):
            inner = (typing.get_args(option) or (object,))[0]
            if all(isinstance(v, inner) or inner is object for v in value):
                return list(value)
        if origin is list and isinstance(value, str) and (typing.get_args(option) or (object,))[0] is str:
            return [value]
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option is str and isinstance(value, (str, Path)):
            return str(value)
    expected = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise UserError(f"{where}: setting {key!r} must be {expected}, got {value!r}")
