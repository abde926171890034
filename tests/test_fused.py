"""The fused CPU inference forms of SE, ECA, CA and CBAM (attention/fused.c via attention/fused.py) against the straightforward
definitions, on the shapes their vector loops treat differently: widths under, at and over 16 and
64 columns (the register blocks), odd heights, H != W, several images, and 1-pixel maps."""

from __future__ import annotations

import copy
import os
import pickle
import platform
import shutil
import subprocess
import sys

import pytest
import torch

from attention import fused, reference
from attention.blocks import CA, CBAM

from conftest import REPO
from test_fast_blocks import OUT_TOL, make

needs_cc = pytest.mark.skipif(fused.library() is None, reason="no C compiler: the PyTorch forms run instead")

SHAPES = [(1, 16, 20, 20), (2, 16, 7, 16), (1, 24, 33, 17), (3, 16, 1, 65), (1, 16, 80, 80), (2, 16, 70, 130),
          (1, 16, 9, 64), (1, 32, 1, 1)]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


class _Counting:
    """Wraps the library so a test can see which C entry points ran."""

    def __init__(self, lib) -> None:
        self.lib, self.calls = lib, []

    def __getattr__(self, name):
        self.calls.append(name)
        return getattr(self.lib, name)


@needs_cc
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name, i", [(n, i) for n in ("SE", "ECA", "CA", "CBAM") for i in (0, 1)])
def test_fused_path_equals_reference(monkeypatch, name: str, i: int, shape: tuple[int, ...]) -> None:
    block = make(name, i, shape[1]).eval()
    x = torch.randn(shape) * 3
    keep = x.clone()
    spy = _Counting(fused.library())
    monkeypatch.setattr(fused, "_lib", spy)
    with torch.no_grad():
        out = block(x)
    assert spy.calls, "the fused path did not run"
    assert torch.equal(x, keep)  # the input is never written
    torch.testing.assert_close(out, reference.REFERENCES[name](block, x), **OUT_TOL)


@pytest.mark.parametrize("name", ["SE", "ECA", "CA", "CBAM"])
def test_pytorch_forms_run_without_the_library(name: str) -> None:
    block = make(name, 1, 16).eval()
    x = torch.randn(2, 16, 9, 70)
    with torch.no_grad(), fused.disabled():
        assert fused.usable(x) is None
        out = block(x)
    torch.testing.assert_close(out, reference.REFERENCES[name](block, x), **OUT_TOL)


@needs_cc
def test_only_plain_inference_takes_the_fused_path() -> None:
    x = torch.randn(1, 8, 5, 5)
    with torch.no_grad():
        assert fused.usable(x) is not None
        assert fused.usable(x.double()) is None
        assert fused.usable(x.transpose(2, 3)) is None  # not contiguous
        assert fused.usable(x.half()) is None
    assert fused.usable(x) is None  # autograd on: training keeps the differentiable forms


@needs_cc
def test_ca_fold_follows_in_place_weight_updates() -> None:
    # An EMA model stays in eval mode while its weights change in place between validations.
    block = make("CA", 1, 16).eval()
    x = torch.randn(1, 16, 12, 12)
    with torch.no_grad():
        first = block(x)
        for t in (block.conv1.weight, block.bn1.running_var, block.conv_w.bias):
            t.mul_(0.5)
            out = block(x)
            torch.testing.assert_close(out, reference.ca(block, x), **OUT_TOL)
            assert not torch.allclose(out, first)
            first = out


@needs_cc
@pytest.mark.parametrize("assign", [False, True])
def test_ca_fold_follows_load_state_dict(assign: bool) -> None:
    block, other = make("CA", 1, 16).eval(), make("CA", 0, 16).eval()
    x = torch.randn(1, 16, 12, 12)
    with torch.no_grad():
        block(x)  # fold cached
        block.load_state_dict(other.state_dict(), assign=assign)
        torch.testing.assert_close(block(x), reference.ca(other, x), **OUT_TOL)


@needs_cc
def test_ca_fold_is_never_pickled() -> None:
    block = make("CA", 1, 16).eval()
    with torch.no_grad():
        block(torch.randn(1, 16, 6, 6))
    assert block._fold_versions is not None
    state = pickle.loads(pickle.dumps(block)).__dict__
    assert not {"_fold", "_fold_src", "_fold_versions"} & state.keys()
    copied = copy.deepcopy(block).double()  # dtype change: the fold is rebuilt, in float64
    with torch.no_grad():
        x = torch.randn(1, 16, 6, 6, dtype=torch.float64)
        torch.testing.assert_close(copied(x), reference.ca(copied, x))


def test_cbam_rejects_bad_kernel_sizes_before_the_c_code() -> None:
    # The C convolution assumes an odd kernel; the constructor is where that is enforced.
    with pytest.raises(Exception, match="kernel must be 3 or 7"):
        CBAM(16, 8, 5)
    assert CA(16).conv1.out_channels == 8


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_build_is_cached_and_failures_fall_back(tmp_path) -> None:
    # A fresh cache directory builds once; a broken compiler leaves the PyTorch forms working.
    code = (
        "import os, torch, warnings\n"
        "from attention import fused, reference\n"
        "from attention.blocks import CA\n"
        "warnings.simplefilter('error')\n"
        "lib = None\n"
        "try:\n"
        "    lib = fused.library()\n"
        "except UserWarning as w:\n"
        "    print('WARNED', w)\n"
        "b = CA(16).eval(); x = torch.randn(1, 16, 8, 8)\n"
        "with torch.no_grad():\n"
        "    torch.testing.assert_close(b(x), reference.ca(b, x), rtol=1e-5, atol=1e-5)\n"
        "print('LIB', lib is not None, sorted(p.name for p in fused.cache_dir().glob('*.so')))\n"
    )
    env = {**os.environ, "ATTENTION_CACHE_DIR": str(tmp_path / "cache"), "YOLO_OFFLINE": "1"}
    env.pop("CC", None), env.pop("ATTENTION_FUSED", None)
    run = lambda extra: subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,  # noqa: E731
                                       env={**env, **extra}, timeout=120)
    first, second = run({}), run({})
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert "LIB True" in first.stdout and first.stdout == second.stdout  # one library, reused
    broken = run({"CC": "/bin/false", "ATTENTION_CACHE_DIR": str(tmp_path / "other")})
    assert broken.returncode == 0, broken.stderr
    assert "WARNED attention: fused CPU kernels unavailable" in broken.stdout
    off = run({"ATTENTION_FUSED": "0"})
    assert "LIB False" in off.stdout


@pytest.mark.skipif(fused.library() is None or platform.machine() != "x86_64", reason="needs cc on x86-64")
def test_portable_build_equals_reference(monkeypatch, tmp_path) -> None:
    # Without AVX-512 the C file compiles its plain loops (what most laptops run): same results.
    monkeypatch.setenv("ATTENTION_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(fused, "FLAGS", [f if f != "-march=native" else "-march=x86-64-v3" for f in fused.FLAGS])
    monkeypatch.setattr(fused, "_lib", None)
    monkeypatch.setattr(fused, "_tried", False)
    assert fused.library() is not None and fused.library()._name.startswith(str(tmp_path))
    for name, shape in [(n, s) for n in ("SE", "ECA", "CA", "CBAM")
                        for s in [(1, 16, 20, 20), (2, 16, 70, 130), (3, 16, 1, 65)]]:
        block = make(name, 1, shape[1]).eval()
        x = torch.randn(shape)
        with torch.no_grad():
            torch.testing.assert_close(block(x), reference.REFERENCES[name](block, x), **OUT_TOL)


@needs_cc
@pytest.mark.parametrize("name", ["SE", "ECA"])
def test_plain_passes_stay_parallel_on_large_maps(monkeypatch, name: str) -> None:
    # Several threads and a map of 2^19 values or more: PyTorch's parallel passes, not the one-thread C form.
    block = make(name, 1, 32).eval()
    big, small = torch.randn(1, 32, 128, 128), torch.randn(1, 32, 20, 20)
    spy = _Counting(fused.library())
    monkeypatch.setattr(fused, "_lib", spy)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with torch.no_grad():
            out = block(big)
            assert spy.calls == []
            block(small)
            assert spy.calls
            torch.set_num_threads(1)
            spy.calls.clear()
            torch.testing.assert_close(block(big), out, **OUT_TOL)
            assert spy.calls
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(out, reference.REFERENCES[name](block, big), **OUT_TOL)
