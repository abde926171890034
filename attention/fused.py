"""Fused CPU inference passes for SE, ECA, CA and CBAM (attention/fused.c), built on first use with the C compiler.

Why: on a neck map a gate costs one pass over the map per library op (pooling per direction,
broadcast products), and no combination of library ops reaches CA's or CBAM's useful work (see
benchmarks/blocks.py). The C file does each block in two or three passes.

When it is used: CPU, float32, contiguous input, autograd off (inference), not while tracing,
exporting or compiling; and only if the library built. Otherwise, and when ATTENTION_FUSED=0, the
blocks run their PyTorch forms, which compute the same thing (tests/test_fast_blocks.py checks both
against the straightforward definitions). The built library is cached per source, compiler flags
and CPU under $XDG_CACHE_HOME/yolov5-attention (or ATTENTION_CACHE_DIR); a failed build is reported
once as a warning and the PyTorch forms are used.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("fused.c")
FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fopenmp-simd", "-shared", "-fPIC"]
_FUNCS = {  # name: (returns a status, argument types: p a pointer, l a long)
    "ca_pool": (False, "plllp"),
    "ca_gates": (True, "ppppppplllllp"),
    "ca_apply": (False, "pplllp"),
    "plane_mean_max": (False, "pllpp"),
    "cbam_logits": (True, "ppplllllp"),
    "cbam_apply": (False, "ppplllp"),
    "se_forward": (True, "pppllllp"),
    "eca_forward": (True, "ppllllp"),
}

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_tried = False


def cache_dir() -> Path:
    if os.environ.get("ATTENTION_CACHE_DIR"):
        return Path(os.environ["ATTENTION_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "yolov5-attention"


def _cpu_id() -> str:
    """-march=native code must not run on another CPU sharing the cache (a network home directory)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next((ln for ln in lines if ln.startswith("flags")), "") + next(
            (ln for ln in lines if ln.startswith("model name")), "")
    except OSError:
        return platform.processor() + platform.machine()


def build(compiler: str | None = None) -> Path:
    """Compile fused.c into the cache (once per source, flags and CPU); returns the library's path."""
    cc = compiler or os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise RuntimeError("no C compiler found (set CC)")
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join([cc, *FLAGS, _cpu_id()]).encode()).hexdigest()[:16]
    target = cache_dir() / f"fused-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename: concurrent processes never load a half-written library.
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        tmp_so = Path(tmp) / target.name
        cmd = [cc, *FLAGS, "-o", str(tmp_so), str(SOURCE), "-lm"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.strip()[-500:]}")
        os.replace(tmp_so, target)
    return target


def library() -> ctypes.CDLL | None:
    """The loaded library, building it on first call; None if disabled or the build failed."""
    global _lib, _tried
    if _tried:
        return _lib
    with _lock:
        if not _tried:
            if os.environ.get("ATTENTION_FUSED", "1") != "0":
                try:
                    lib = ctypes.CDLL(str(build()))
                    for name, (status, sig) in _FUNCS.items():
                        fn = getattr(lib, name)
                        fn.restype = ctypes.c_int if status else None
                        fn.argtypes = [ctypes.c_void_p if s == "p" else ctypes.c_long for s in sig]
                    _lib = lib
                except (OSError, RuntimeError) as e:
                    _tried = True  # before warning: warnings may be errors, and this must not repeat
                    warnings.warn(f"attention: fused CPU kernels unavailable, using the PyTorch forms ({e})")
            _tried = True
    return _lib


def usable(x: torch.Tensor) -> ctypes.CDLL | None:
    """The library if x can take the fused path (see the module docstring), else None."""
    # Cheapest tests first: this runs on every call of a block (a microsecond is 4% of a 20x20 pass).
    if torch.is_grad_enabled() or not x.is_cpu or x.dtype != torch.float32 or not x.is_contiguous():
        return None
    # Tracing covers the TorchScript ONNX exporter; torch.export (and the dynamo ONNX exporter) and
    # torch.compile see the PyTorch forms, which they can capture.
    if torch.jit.is_tracing() or torch.compiler.is_compiling() or _exporting():
        return None
    return _lib if _tried else library()


_exporting = getattr(torch.compiler, "is_exporting", lambda: False)


@contextlib.contextmanager
def disabled():
    """Run the PyTorch forms inside (to count their FLOPs, or to compare the two paths)."""
    global _lib, _tried
    saved = _lib, _tried
    _lib, _tried = None, True
    try:
        yield
    finally:
        _lib, _tried = saved


# SE and ECA are two plain passes, which PyTorch spreads over its threads; the C form runs on one. With
# several threads it loses on maps of 0.8M values and more (1.1-1.4x slower on 2 cores, benchmarked), so
# there they keep the PyTorch form. CA and CBAM's C forms won at every size tried.
SINGLE_PASS_LIMIT = 1 << 19


def plain_passes_ok(x: torch.Tensor) -> bool:
    """Whether SE's or ECA's C form beats PyTorch's parallel passes on x."""
    return x.numel() < SINGLE_PASS_LIMIT or torch.get_num_threads() == 1


def weights_ok(*tensors: torch.Tensor) -> bool:
    """The C code reads weights as contiguous float32 arrays: anything else takes the PyTorch forms."""
    return all(t.dtype == torch.float32 and t.is_contiguous() and t.is_cpu for t in tensors)


def _check(status: int, what: str) -> None:
    if status:
        raise MemoryError(f"{what}: out of memory for its working buffers")


def se(lib: ctypes.CDLL, x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """SE in one call: x * sigmoid(w2 relu(w1 mean(x))), w1 (hidden, C), w2 (C, hidden)."""
    n, c, h, w = x.shape
    out = torch.empty_like(x)
    _check(lib.se_forward(x.data_ptr(), w1.data_ptr(), w2.data_ptr(), n, c, w1.shape[0], h * w, out.data_ptr()), "SE")
    return out


def eca(lib: ctypes.CDLL, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """ECA in one call: x * sigmoid(conv1d over channels of mean(x)), weight (1, 1, k)."""
    n, c, h, w = x.shape
    out = torch.empty_like(x)
    _check(lib.eca_forward(x.data_ptr(), weight.data_ptr(), weight.shape[-1], n, c, h * w, out.data_ptr()), "ECA")
    return out


def ca_pool(lib: ctypes.CDLL, x: torch.Tensor) -> torch.Tensor:
    """(N, C, H+W): row means then column means of every plane."""
    n, c, h, w = x.shape
    out = torch.empty(n, c, h + w)
    lib.ca_pool(x.data_ptr(), n * c, h, w, out.data_ptr())
    return out


def ca_gates(lib: ctypes.CDLL, y: torch.Tensor, h: int, w1, b1, wh, bh, ww, bw) -> torch.Tensor:
    """CA's gate logits (N, C, H+W) from the pooled y: conv1 (BN folded in: w1, b1), hardswish, conv_h/conv_w."""
    n, c, length = y.shape
    g = torch.empty_like(y)
    _check(lib.ca_gates(y.data_ptr(), w1.data_ptr(), b1.data_ptr(), wh.data_ptr(), bh.data_ptr(), ww.data_ptr(),
                        bw.data_ptr(), n, c, w1.shape[0], h, length - h, g.data_ptr()), "CA")
    return g


def ca_apply(lib: ctypes.CDLL, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """x * a_w * a_h for gates (N, C, H+W) = [a_h, a_w] per plane, contiguous."""
    n, c, h, w = x.shape
    out = torch.empty_like(x)
    lib.ca_apply(x.data_ptr(), gates.data_ptr(), n * c, h, w, out.data_ptr())
    return out


def mean_max(lib: ctypes.CDLL, x: torch.Tensor) -> torch.Tensor:
    """(2N, C): per-plane means (rows :N) then maxima (rows N:)."""
    n, c, h, w = x.shape
    out = torch.empty(2 * n, c)
    lib.plane_mean_max(x.data_ptr(), n * c, h * w, out.data_ptr(), out.data_ptr() + n * c * 4)
    return out


def cbam_spatial(lib: ctypes.CDLL, x: torch.Tensor, mc: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x * mc * sigmoid(conv([mean_c, max_c] of x * mc)) for mc (N, C) contiguous, weight (1, 2, k, k)."""
    n, c, h, w = x.shape
    ms = torch.empty(n, h * w)
    _check(lib.cbam_logits(x.data_ptr(), mc.data_ptr(), weight.data_ptr(), n, c, h, w, weight.shape[-1],
                           ms.data_ptr()), "CBAM")
    ms.sigmoid_()
    out = torch.empty_like(x)
    lib.cbam_apply(x.data_ptr(), mc.data_ptr(), ms.data_ptr(), n, c, h * w, out.data_ptr())
    return out
