"""Which box loss a model trains with: the optional top-level ``loss:`` mapping of a model YAML, as one typed object.

    loss:
      box: nwd         # iou | nwd: the box regression term
      ratio: 1.0       # share of NWD in it: (1 - ratio)·(1 - CIoU) + ratio·(1 - NWD); read for box: nwd only
      c: auto          # NWD's constant in px of the network input; auto: the mean object size of the train split
      assigner: false  # true: NWD instead of CIoU as the overlap in ultralytics' task-aligned assigner

No mapping is ultralytics' own loss (CIoU, with CIoU in the assigner). ultralytics keeps unknown top-level keys in
model.yaml, so the mapping travels in checkpoints (a resumed run keeps its loss) and stock ultralytics ignores it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Mapping

from attention.errors import UserError

BOX_TERMS = ("iou", "nwd")
KEYS = ("box", "ratio", "c", "assigner")
AUTO = "auto"


def _number(value: Any) -> float | None:
    """value as a finite float, or None when it is no number (booleans are none: YAML's yes/no is not 1/0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


@dataclass(frozen=True)
class LossChoice:
    """A model's box loss: the box term, NWD's share in it and constant, and the assigner's overlap."""

    box: str = "iou"
    ratio: float = 1.0
    c: float | None = None  # px of the network input; None: auto, resolved from the data before training
    assigner: bool = False

    @classmethod
    def from_yaml(cls, mapping: Any, where: str) -> LossChoice:
        """The choice a ``loss:`` mapping (missing keys: their defaults) makes; UserError naming where and the key.

        where: what holds the mapping, for the message (a YAML file, 'the command line').
        """
        if mapping is None:
            return cls()
        if not isinstance(mapping, Mapping):
            raise UserError(f"{where}: loss must be a mapping with keys {', '.join(KEYS)}, got {mapping!r}")
        unknown = [str(k) for k in mapping if k not in KEYS]
        if unknown:
            raise UserError(f"{where}: loss: unknown key {unknown[0]!r}; known: {', '.join(KEYS)}")
        box = mapping.get("box", cls.box)
        if not isinstance(box, str) or box.lower() not in BOX_TERMS:
            raise UserError(f"{where}: loss.box must be {' or '.join(BOX_TERMS)}, got {box!r}")
        ratio = _number(mapping.get("ratio", cls.ratio))
        if ratio is None or not 0 <= ratio <= 1:
            raise UserError(f"{where}: loss.ratio must be a number from 0 to 1 (the share of NWD in the box term), "
                            f"got {mapping['ratio']!r}")
        c = mapping.get("c", AUTO)
        if not (isinstance(c, str) and c.lower() == AUTO):
            c = _number(c)
            if c is None or c <= 0:
                raise UserError(f"{where}: loss.c must be {AUTO} or a positive number of pixels, got {mapping['c']!r}")
        else:
            c = None
        assigner = mapping.get("assigner", cls.assigner)
        if not isinstance(assigner, bool):
            raise UserError(f"{where}: loss.assigner must be true or false, got {assigner!r}")
        return cls(box.lower(), ratio, c, assigner)

    def to_yaml(self) -> dict[str, Any]:
        """The ``loss:`` mapping of this choice (from_yaml(to_yaml()) gives it back)."""
        return {"box": self.box, "ratio": self.ratio, "c": AUTO if self.c is None else self.c,
                "assigner": self.assigner}

    @property
    def uses_nwd(self) -> bool:
        """True when NWD enters training anywhere (box term or assigner); False is ultralytics' own loss."""
        return self.box == "nwd" or self.assigner

    @property
    def nwd_share(self) -> float:
        """The weight of (1 - NWD) in the box term (that of 1 - CIoU is 1 minus it)."""
        return self.ratio if self.box == "nwd" else 0.0

    def resolved(self, c: float) -> LossChoice:
        """This choice with NWD's constant set (what c: auto came to)."""
        return replace(self, c=float(c))

    def describe(self) -> str:
        """One line for logs: 'box loss 1 - NWD (C 12.8 px); assigner overlap CIoU'."""
        share = self.nwd_share
        if share == 0:
            term = "1 - CIoU"
        elif share == 1:
            term = "1 - NWD"
        else:
            term = f"{1 - share:g}·(1 - CIoU) + {share:g}·(1 - NWD)"
        constant = f" (C {AUTO if self.c is None else f'{self.c:g} px'})" if self.uses_nwd else ""
        return f"box loss {term}{constant}; assigner overlap {'NWD' if self.assigner else 'CIoU'}"
