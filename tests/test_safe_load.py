"""Restricted loading (ULTRALYTICS_SAFE_LOAD=1): checkpoints with our blocks load and predict as saved;
a checkpoint that names anything else is refused by file and global, and its payload never runs."""

from __future__ import annotations

import inspect
import json
import os
import pickle
import subprocess
import sys
import types
from copy import deepcopy
from pathlib import Path

import pytest
import torch
import ultralytics
import yaml
from torch import nn
from ultralytics.nn import tasks
from ultralytics.nn.tasks import DetectionModel

import attention
import attention.training.transfer
from attention.adapter import compat, safe_load
from attention.blocks.gate import IdentityGate, gate_blocks
from attention.blocks.registry import available, classes as registered_classes, register, unregister

from conftest import MODELS, REPO

SYSTEM = f"{os.system.__module__}.system"  # posix.system on Linux
# Releases without ultralytics' restricted loading have nothing to extend: the feature is off there (compat).
needs_safe_load = pytest.mark.skipif(bool(compat.missing("safe_load")), reason="this ultralytics release has no "
                                     "restricted loading to extend (the feature is off, see attention.adapter.compat)")
SAFE_ENV = {**os.environ, "YOLO_OFFLINE": "1", "ULTRALYTICS_SAFE_LOAD": "1", "PYTHONUNBUFFERED": "1"}

CLASSIC = ("SE", "ECA", "CA", "CBAM")
ZOO = tuple(b for b in available() if b not in CLASSIC)  # every other registered block, in one checkpoint
GATED = (*CLASSIC, "SKAttention")  # the identity-init checkpoint: each block inside an IdentityGate
FIRST = 2  # index of the first block row


def tiny(blocks: tuple[str, ...]) -> dict:
    """Blocks chained on 128 channels at stride 8 (every zoo block's divisibility rules hold), then Detect."""
    rows = [[-1, 1, "Conv", [16, 3, 2]], [-1, 1, "Conv", [128, 3, 4]], *([-1, 1, b, []] for b in blocks),
            [-1, 1, "Conv", [32, 3, 2]]]
    return {"nc": 3, "backbone": rows, "head": [[[-2, -1], 1, "Detect", ["nc"]]]}


# Loads every checkpoint in a folder through ultralytics' own loader, as a user would, in a process
# where ULTRALYTICS_SAFE_LOAD=1 was read at import.
LOADER = """
import json, sys
from pathlib import Path
import torch
import attention
from ultralytics import YOLO
from ultralytics.nn import tasks
assert tasks.SAFE_LOAD, "ULTRALYTICS_SAFE_LOAD not in effect"
root = Path(sys.argv[1])
x = torch.load(root / "input.pt", weights_only=True)
outputs, report = {}, {}
for path in sorted(root.glob("*.pt")):
    if path.name == "input.pt":
        continue
    try:
        model = YOLO(str(path)).model
    except Exception as e:
        report[path.stem] = {"error": type(e).__name__, "message": str(e)}
        continue
    blocks = model.model[2:-2]  # the block rows: after two Convs, before the last Conv and Detect
    report[path.stem] = [[type(m).__name__, type(getattr(m, "block", m)).__name__] for m in blocks]
    with torch.no_grad():
        outputs[path.stem] = model(x)[0]
torch.save(outputs, root / "outputs.pt")
(root / "report.json").write_text(json.dumps(report))
"""


def save_checkpoint(model: nn.Module, path: Path) -> Path:
    """model in the layout ultralytics' trainer writes: the EMA in half precision, args as a plain dict."""
    torch.save({"epoch": -1, "best_fitness": None, "model": None, "ema": deepcopy(model).half(), "updates": 0,
                "optimizer": None, "train_args": {"imgsz": 64, "task": "detect"}, "train_metrics": {},
                "version": ultralytics.__version__}, path)
    return path


def variant(blocks: tuple[str, ...], init: str = "paper") -> DetectionModel:
    torch.manual_seed(0)
    model = DetectionModel(tiny(blocks), verbose=False)
    if init == "identity":
        gate_blocks(model.model)
        for gate in model.model[FIRST:FIRST + len(blocks)]:
            gate.gamma.data.fill_(0.5)  # a gate at 0 would hide its block from the output check
    return model.eval()


VARIANTS = {f"good-{b}": ((b,), "paper") for b in CLASSIC} | {"good-zoo": (ZOO, "paper"),
                                                              "good-identity": (GATED, "identity")}


# Crafted payloads: each would create its marker file if unpickled normally.
class SystemPayload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class EvalPayload(SystemPayload):
    def __reduce__(self):
        return eval, (f"open({str(self.marker)!r}, 'w').close()",)


class Arbitrary:
    """A class no allow-list knows; unpickling it normally runs its __setstate__."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __setstate__(self, state):
        Path(state["marker"]).touch()


CRAFTED = {  # name: (payload class, pickle protocol, the global the refusal must name)
    "bad-system": (SystemPayload, 2, SYSTEM),
    "bad-eval": (EvalPayload, 2, "builtins.eval"),
    "bad-class": (Arbitrary, 2, f"{Arbitrary.__module__}.Arbitrary"),
    "bad-proto4": (SystemPayload, 4, None),  # framing the restricted unpickler refuses before the global
}


def craft(root: Path, good: Path) -> dict[str, Path]:
    """A real checkpoint with one payload smuggled in next to the model; also one plain pickle. name -> marker."""
    ckpt = torch.load(good, weights_only=False)
    markers = {}
    for name, (payload, protocol, _) in CRAFTED.items():
        markers[name] = root / f"{name}.ran"
        torch.save({**ckpt, "extra": payload(markers[name])}, root / f"{name}.pt", pickle_protocol=protocol)
    markers["bad-plain"] = root / "bad-plain.ran"
    (root / "bad-plain.pt").write_bytes(pickle.dumps({"model": SystemPayload(markers["bad-plain"])}, protocol=2))
    return markers


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """Variants of every block (and gated ones) and crafted files, all loaded once under restricted loading."""
    root = tmp_path_factory.mktemp("safe")
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    torch.save(x, root / "input.pt")
    expected = {}
    for name, (blocks, init) in VARIANTS.items():
        model = variant(blocks, init)
        save_checkpoint(model, root / f"{name}.pt")
        with torch.no_grad():
            expected[name] = deepcopy(model).half().float()(x)[0]  # the weights as saved, in fp16
    markers = craft(root, root / "good-CBAM.pt")
    proc = subprocess.run([sys.executable, "-c", LOADER, str(root)], cwd=REPO, env=SAFE_ENV, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {
        "root": root,
        "expected": expected,
        "outputs": torch.load(root / "outputs.pt", weights_only=True),
        "report": json.loads((root / "report.json").read_text()),
        "markers": markers,
        "ran": [name for name, m in markers.items() if m.exists()],  # checked right after the restricted loads
    }


@needs_safe_load
@pytest.mark.parametrize("name", VARIANTS)
def test_checkpoint_loads_and_predicts_as_saved(loaded, name):
    blocks, init = VARIANTS[name]
    layer = "IdentityGate" if init == "identity" else None
    assert loaded["report"][name] == [[layer or b, b] for b in blocks], loaded["report"][name]
    torch.testing.assert_close(loaded["outputs"][name], loaded["expected"][name], rtol=1e-4, atol=1e-4)


@needs_safe_load
@pytest.mark.parametrize("name", [*CRAFTED, "bad-plain"])
def test_crafted_checkpoint_is_refused_by_file_and_global(loaded, name):
    got = loaded["report"][name]
    path = loaded["root"] / f"{name}.pt"
    assert got["error"] == "UnsafeCheckpointError", got
    msg = got["message"]
    assert "\n" not in msg and msg.startswith(f"{path}: refused by restricted loading (ULTRALYTICS_SAFE_LOAD=1): ")
    offending = CRAFTED[name][2] if name in CRAFTED else SYSTEM
    if offending:
        assert f"it references {offending}, which is not an allowed global" in msg
    else:
        assert "it uses the pickle opcode FRAME, which the weights-only unpickler does not run" in msg
    assert msg.endswith("Nothing in the file was run")


@needs_safe_load
def test_no_payload_ran_under_restricted_loading(loaded):
    assert loaded["ran"] == []


@needs_safe_load
def test_payloads_are_live_when_loaded_unrestricted(loaded):
    # Proves the test above checks something: the same files run their payload under a normal load.
    for name, marker in loaded["markers"].items():
        if name == "bad-proto4":
            continue  # same payload as bad-system
        with open(loaded["root"] / f"{name}.pt", "rb") as fh:
            if name == "bad-plain":
                pickle.load(fh)
            else:
                torch.load(fh, weights_only=False)
        assert marker.exists(), name


@needs_safe_load
def test_val_scores_a_checkpoint_under_restricted_loading(tiny_data, tmp_path):
    model = DetectionModel({**yaml.safe_load((MODELS / "yolov5-cbam.yaml").read_text()), "scale": "n"}, nc=3,
                           verbose=False)
    gate_blocks(model.model)
    model.names = {0: "vehicle", 1: "person", 2: "boat"}
    ckpt = save_checkpoint(model, tmp_path / "cbam-identity.pt")
    proc = subprocess.run([sys.executable, str(REPO / "val.py"), "--weights", str(ckpt), "--data", str(tiny_data),
                           "--img", "160", "--batch-size", "8"], cwd=tmp_path, env=SAFE_ENV, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rows = (tmp_path / "runs" / "val" / "exp" / "results.csv").read_text().splitlines()
    assert rows[1].split(",")[0].strip() == "all"


@needs_safe_load
def test_val_refuses_a_crafted_checkpoint_in_one_line(tmp_path):
    marker = tmp_path / "ran"
    bad = tmp_path / "bad.pt"
    torch.save({"model": None, "extra": SystemPayload(marker)}, bad)
    proc = subprocess.run([sys.executable, str(REPO / "val.py"), "--weights", str(bad)], cwd=tmp_path,
                          env=SAFE_ENV, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip() == (
        f"val.py: error: {bad}: refused by restricted loading (ULTRALYTICS_SAFE_LOAD=1): it references "
        f"{SYSTEM}, which is not an allowed global; only tensors, plain data, ultralytics/torch model "
        "classes and registered attention blocks may appear in a checkpoint. Nothing in the file was run"
    )
    assert not marker.exists()


# --- the allow-list: our classes, nothing else ---------------------------------------------------


def test_allow_list_holds_our_blocks_and_gate_only():
    allow = safe_load.allowed()
    assert set(allow.values()) >= {*registered_classes(), IdentityGate}
    assert allow["attention.blocks.cbam.CBAM"] is attention.get("CBAM")
    assert allow["attention.blocks.gate.IdentityGate"] is IdentityGate
    block_modules = {b.__module__ for b in registered_classes()}
    for name, cls in allow.items():
        assert name == f"{cls.__module__}.{cls.__qualname__}"
        assert issubclass(cls, nn.Module) and (cls is IdentityGate or cls.__module__ in block_modules), name
    for other in (nn.Module, nn.Conv2d, os.system, eval, attention.training.transfer.LayerTransfer, Arbitrary):
        assert other not in allow.values()
    assert "attention.blocks.s2mlp.spatial_shift" not in allow  # functions in a block's file stay out


def test_helpers_in_a_registered_blocks_file_are_allowed(monkeypatch):
    mod = types.ModuleType("custom_blocks")
    exec(
        "from torch import nn\n"
        "class Helper(nn.Module): pass\n"
        "class Block(nn.Module):\n"
        "    def __init__(self, c1):\n"
        "        super().__init__(); self.h = Helper()\n"
        "class Config: pass\n"
        "def helper_fn(): pass\n",
        vars(mod),
    )
    monkeypatch.setitem(sys.modules, "custom_blocks", mod)
    register(mod.Block)
    try:
        ours = {k for k in safe_load.allowed() if k.startswith("custom_blocks.")}
    finally:
        unregister("Block")
    assert ours == {"custom_blocks.Block", "custom_blocks.Helper"}  # not Config, helper_fn nor the imported nn


# --- what we hook into in ultralytics: fail loudly if it moves -----------------------------------


@needs_safe_load
def test_hook_installed_and_ultralytics_still_has_what_it_relies_on():
    assert getattr(tasks._SafeLoad.loading, "_attention_hook", False)
    assert not compat.missing("safe_load")
    assert tasks.torch_safe_load.__code__.co_filename == safe_load.__file__  # our wrapper is in place
    # load_checkpoint (YOLO(), the trainer, our transfer) must reach our wrapper by module global.
    assert "torch_safe_load" in tasks.load_checkpoint.__code__.co_names
    # ultralytics allows a checkpoint's globals that are in its registry, through torch's add_safe_globals.
    source = inspect.getsource(inspect.unwrap(tasks._SafeLoad.loading))
    assert "get_unsafe_globals_in_checkpoint" in source and "cls._registry[name]" in source
    assert "add_safe_globals" in source
    assert list(inspect.signature(tasks.torch_safe_load.__wrapped__).parameters) == ["weight", "safe_only"]


@needs_safe_load
def test_restricted_load_admits_our_classes_in_process(tmp_path):
    path = save_checkpoint(variant(("CBAM",), "identity"), tmp_path / "cbam.pt")
    ckpt, _ = tasks.torch_safe_load(str(path), safe_only=True)  # per-call restricted load, no env needed
    gate = ckpt["ema"].model[FIRST]
    assert type(gate) is IdentityGate and type(gate.block) is attention.get("CBAM")


@needs_safe_load
def test_ultralytics_refusal_still_chains_the_unpickling_error(tmp_path):
    # Our one-line message is built from the UnpicklingError ultralytics chains to its TypeError.
    bad = tmp_path / "bad.pt"
    torch.save({"extra": SystemPayload(tmp_path / "ran")}, bad)
    with pytest.raises(TypeError, match="references types outside") as e:
        tasks.torch_safe_load.__wrapped__(str(bad), safe_only=True)
    assert isinstance(e.value.__cause__, pickle.UnpicklingError) and f"GLOBAL {SYSTEM}" in str(e.value.__cause__)
    with pytest.raises(safe_load.UnsafeCheckpointError, match=f"it references {SYSTEM}, which is not an allowed"):
        tasks.torch_safe_load(str(bad), safe_only=True)
    assert not (tmp_path / "ran").exists()


def test_a_release_without_our_hooks_switches_only_this_feature_off(monkeypatch, ul_log):
    monkeypatch.setattr(tasks, "_SafeLoad", type("_SafeLoad", (), {"loading": None}), raising=False)
    compat.missing.cache_clear(), compat.enabled.cache_clear()
    try:
        monkeypatch.delenv("ULTRALYTICS_SAFE_LOAD", raising=False)
        safe_load.install()  # not asked for: nothing to say
        assert not [m for m in ul_log if "yolov5-attention" in m]
        monkeypatch.setenv("ULTRALYTICS_SAFE_LOAD", "1")
        safe_load.install()
        safe_load.install()
        said = [m for m in ul_log if "yolov5-attention" in m]
        assert len(said) == 1 and "checkpoints with attention blocks under ULTRALYTICS_SAFE_LOAD=1 is switched off" in said[0]
        assert "_SafeLoad._build" in said[0] and f"works on ultralytics {compat.FEATURES['safe_load'].works}" in said[0]
    finally:
        compat.missing.cache_clear(), compat.enabled.cache_clear()


@needs_safe_load
def test_install_is_idempotent():
    loading, load = tasks._SafeLoad.loading, tasks.torch_safe_load
    safe_load.install()
    assert tasks._SafeLoad.loading == loading and tasks.torch_safe_load is load
