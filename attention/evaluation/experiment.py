"""A comparison's settings as one typed object: what an experiment YAML and compare's flags may say.

Experiment.from_mapping() checks names and types once, so a typo in an experiment YAML is one line naming
the key, and the rest of the code reads attributes instead of passing twenty keyword arguments along.

Each field carries its command-line help in its metadata (setting()): compare's flags are generated from the
fields (attention.cli.compare), so a setting is declared once, with its type, default and help.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from attention.errors import UserError

DEFAULT_DATA = "tiny-objects.yaml"  # the embedded set (attention.data.prepare.EMBEDDED_DATA; not imported: it is a string)

# What must be equal for two invocations to share run folders (saved in settings.json): what trains a run, and
# the seed plan of adaptive seeding (its looks are fixed in advance). Scoring options (infer, size_bins, max_det
# and the thresholds in attention.evaluation.scored_run.Scoring) only rescore: each score file names its own; the
# summary options (metric, margin) only re-tabulate, except under a seed plan, whose decisions they steer.
RUN_SETTINGS = ("data", "hyp", "weights", "epochs", "imgsz", "batch_size", "workers", "attn_init", "finetune", "base",
                "plan")


def setting(default: Any = dataclasses.MISSING, help: str = "", *, flags: tuple[str, ...] = (),
            cli_type: type | None = None, **argparse: Any) -> Any:
    """A field of Experiment with its command-line help; flags: extra names (--img, -j); cli_type: what the flag
    takes where the field's type says more (--seeds takes a count; a YAML may list the seeds); argparse: more
    add_argument keywords (choices, metavar)."""
    meta = {"help": help, "flags": flags, "cli_type": cli_type, "argparse": argparse}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Experiment:
    """Every variant trained alike over seeds, each run scored every way asked, levers judged against the first."""

    cfg: list[str] = setting(help="model YAMLs or variant specs (yolov5s+CBAM@neck, yolov5n+nwd: "
                             "docs/placements.md), the baseline first")
    seeds: int | list[int] = setting(3, "number of seeds (0, 1, ...); an experiment YAML may list them",
                                     cli_type=int)
    epochs: int = setting(30, "epochs of every run")
    data: str = setting(DEFAULT_DATA, "dataset YAML (or an embedded set's name)")
    hyp: str = setting("", "hyperparameter YAML")
    weights: str = setting("", "base checkpoint every variant starts from (transferred by layer role)")
    finetune: bool = setting(False, "train one base (the first --cfg, seed 0) or take --weights, and fine-tune "
                                    "every variant from it")
    base_epochs: int = setting(30, "epochs of the base with --finetune")
    base_hyp: str = setting("", "hyperparameter YAML of the base (default: --hyp)")
    base_data: str = setting("", "dataset YAML the base trains on (default: --data)")
    base_imgsz: int = setting(0, "image size the base trains at (default: --imgsz)")
    imgsz: int = setting(640, "training image size", flags=("--img",))
    batch_size: int = setting(16, "batch size of every run")
    device: str = setting("", "cuda device(s) like 0 or 0,1,2,3, or cpu; with --jobs the runs share them out")
    workers: int = setting(8, "data-loader processes per run (they change augmentation order: part of the runs' "
                              "settings)")
    attn_init: str | None = setting(None, "how inserted blocks start: as the paper initialises them, or as the "
                                          "identity (default identity with --finetune, else paper)",
                                    choices=("paper", "identity"))
    infer: list[str] | None = setting(None, "ways of inferring to score each run with: full:SIZE (whole image at "
                                            "SIZE px) and/or sliced:TILE; default full:IMGSZ")
    size_bins: str = setting("coco", "coco, tiny, fine, or edges in px like 0,16,32,inf")
    metric: str | None = setting(None, "the metric the verdicts are on (default: AP_small, or AP_tiny with tiny "
                                       "bins)")
    max_det: int | None = setting(None, "detection budget per image: the prediction cap and COCO maxDets (default: "
                                        "ultralytics' 300; VisDrone's protocol: 500)")
    margin: float | None = setting(None, "differences within +-margin of the metric count as equivalent (default "
                                         "0.01)")
    max_seeds: int = setting(0, "after --seeds, add seeds to levers still undecided, up to this many")
    max_hours: float = setting(0.0, "with --max-seeds: add no more seeds once the runs took this long")
    jobs: int = setting(1, "runs at once on this machine, each in a fresh process of its own: one per GPU of "
                           "--device in turn (several per GPU if more), or each with its share of the CPU cores",
                        flags=("-j",))
    ray: str = setting("", "run every run as a task on a running Ray cluster: auto, or its address; --project must "
                           "be on a filesystem every node mounts", metavar="ADDRESS")
    ray_gpus: float | None = setting(None, "GPUs each Ray task asks for (default 1 if the cluster has GPUs, else 0)")
    ray_cpus: float = setting(1.0, "CPUs each Ray task asks for (its torch threads on the CPU)")
    project: str = setting("runs/compare", "folder the comparison folders live in")
    name: str = setting("exp", "comparison folder under --project (an experiment YAML's name by default)")

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
        """Every value that can be judged without the data or the models, judged: one line naming the first bad one."""
        from attention.evaluation.coco import metric_names, size_bins

        if isinstance(self.cfg, str):
            self.cfg = [self.cfg]
        if len(self.cfg) < 2 and len(self.infer or []) < 2:
            raise UserError("compare needs two levers: two --cfg (the baseline first) or two --infer modes")
        if not self.seed_list:
            raise UserError("--seeds must be at least 1")
        if min(self.seed_list) < 0 or len(set(self.seed_list)) < len(self.seed_list):
            raise UserError(f"seeds must be distinct numbers >= 0, got {self.seeds}")
        for key in ("epochs", "imgsz", "batch_size", "jobs"):
            if getattr(self, key) < 1:
                raise UserError(f"--{key.replace('_', '-')} must be at least 1, got {getattr(self, key)}")
        if self.workers < 0:
            raise UserError(f"--workers must be 0 or more, got {self.workers}")
        if self.max_det is not None and self.max_det < 1:
            raise UserError(f"--max-det must be at least 1, got {self.max_det}")
        if self.margin is not None and not (math.isfinite(self.margin) and self.margin >= 0):
            raise UserError(f"--margin must be a finite number >= 0 (a difference in {self.metric or 'AP'}), "
                            f"got {self.margin}")
        if self.max_seeds and self.max_seeds <= len(self.seed_list):
            raise UserError(f"--max-seeds {self.max_seeds} must exceed the {len(self.seed_list)} first seeds")
        if not math.isfinite(self.max_hours) or self.max_hours < 0 or (self.max_hours and not self.max_seeds):
            raise UserError("--max-hours caps the seeds --max-seeds adds: give --max-seeds too (and hours > 0)")
        if self.jobs > 1 and self.ray:
            raise UserError("--jobs runs several runs on this machine, --ray on a cluster: give one of them")
        if self.attn_init not in (None, "paper", "identity"):
            raise UserError(f"--attn-init takes paper or identity, got {self.attn_init!r}")
        names = metric_names(size_bins(self.size_bins))  # a bad --size-bins is one line here too
        if self.metric is not None and self.metric not in names:
            raise UserError(f"--metric {self.metric!r} is not among the scores with --size-bins {self.size_bins}: "
                            f"{', '.join(names)}")
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

    def plan_settings(self, metric: str, margin: float) -> dict[str, Any] | None:
        """The seed plan of adaptive seeding (None without --max-seeds): its looks follow from the first seeds and
        the cap, and metric and margin decide which levers get more seeds, so none of them may change midway."""
        if not self.max_seeds:
            return None
        return dict(seeds=self.seed_list, max_seeds=self.max_seeds, metric=metric, margin=margin)

    def run_settings(self, plan: dict[str, Any] | None = None) -> dict[str, Any]:
        """What defines the runs (RUN_SETTINGS): saved in settings.json and compared on every later invocation."""
        return dict(data=str(self.data), hyp=str(self.hyp), weights=str(self.weights), epochs=self.epochs,
                    imgsz=self.imgsz, batch_size=self.batch_size, workers=self.workers, attn_init=self.start_as,
                    finetune=bool(self.finetune), base=self.base, plan=plan)

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
