"""A machine with two GPUs, faked in torch.cuda, for tests of where a run computes (on PYTHONPATH: every process).

CUDA's rule, kept: the GPUs a process sees are read from CUDA_VISIBLE_DEVICES once, when CUDA starts there, and
torch numbers them from 0; later changes of the variable change nothing. Each fake GPU's uuid names its physical
number, so a test can tell which one a run got. Only what device selection asks is faked: nothing can compute.
"""

import os

import torch

PHYSICAL = ("0", "1")
_seen: list[str] | None = None  # the visible GPUs, fixed when CUDA "starts"
_current = 0


def _start() -> list[str]:
    global _seen
    if _seen is None:
        asked = os.environ.get("CUDA_VISIBLE_DEVICES")
        _seen = list(PHYSICAL) if asked is None else []
        for x in (asked or "").split(","):
            if x.strip() not in PHYSICAL:
                break  # CUDA stops at the first id it does not know
            _seen.append(x.strip())
    return _seen


class _Properties:
    def __init__(self, physical: str) -> None:
        self.name, self.uuid, self.pci_bus_id = f"Fake GPU {physical}", f"GPU-fake-{physical}", int(physical)
        self.total_memory, self.major, self.minor, self.multi_processor_count = 16 << 30, 8, 0, 1


def _index(device) -> int:
    index = int(str(device).split(":")[-1]) if device is not None else _current
    if not 0 <= index < len(_start()):
        raise RuntimeError(f"invalid device ordinal {index}")
    return index


def _set_device(device) -> None:
    global _current
    _current = _index(device)


torch.cuda.is_available = lambda: bool(_start())
torch.cuda.device_count = lambda: len(_start())
torch.cuda.init = _start
torch.cuda.is_initialized = lambda: _seen is not None
torch.cuda.set_device = _set_device
torch.cuda.current_device = lambda: _current
torch.cuda.get_device_properties = lambda device=None: _Properties(_start()[_index(device)])
torch.cuda.get_device_name = lambda device=None: _Properties(_start()[_index(device)]).name
