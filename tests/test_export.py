"""Every variant exports to ONNX (ultralytics' exporter, through `yolov5-attention export`) and runs in
onnxruntime like in PyTorch; blocks compile; the export command installs nothing.

Tolerance of the ONNX parity checks: |onnxruntime - PyTorch| <= 1e-4 + 1e-4 * |PyTorch| on every
output element (boxes are in input pixels, scores in [0, 1]). The PyTorch side is the checkpoint as
loaded (unfused), so the check covers Conv+BN fusion, the export and the runtime together.
onnx and onnxruntime are dev requirements (pyproject.toml): these tests fail, not skip, without them.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from ultralytics import YOLO

import attention
from attention.cli.main import main
from attention.adapter import compat
from attention.inference.export import export, missing_packages

from conftest import MODELS

BLOCKS = ("SE", "ECA", "CA", "CBAM")  # the main variants (other blocks have tests of their own)
VARIANTS = ["yolov5n"] + [f"yolov5n-{b.lower()}" for b in BLOCKS]
IMGSZ = 160
TOL = dict(rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """variant -> an untrained checkpoint of it (what a user exports is a .pt file)."""
    root = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    out = {}
    for variant in VARIANTS:
        out[variant] = root / f"{variant}-untrained.pt"  # not yolov5n.pt: ultralytics reads that as a release name
        YOLO(f"{variant}.yaml").save(str(out[variant]))
    return out


def torch_out(weights, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return YOLO(str(weights)).model.float().eval()(x)[0].numpy()


def ort_out(path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": x.numpy()})[0]


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_onnx_matches_pytorch(variant: str, checkpoints) -> None:
    path = export(checkpoints[variant], "onnx", imgsz=IMGSZ)
    assert path == checkpoints[variant].with_suffix(".onnx")
    onnx.checker.check_model(onnx.load(str(path)))
    x = torch.rand(1, 3, IMGSZ, IMGSZ)
    expected = torch_out(checkpoints[variant], x)
    got = ort_out(path, x)
    assert got.shape == expected.shape == (1, 84, (IMGSZ // 8) ** 2 + (IMGSZ // 16) ** 2 + (IMGSZ // 32) ** 2)
    np.testing.assert_allclose(got, expected, **TOL)


def test_dynamic_export_follows_the_input_shape(checkpoints, tmp_path) -> None:
    # No map size may be baked into the exported graph as a constant.
    weights = tmp_path / "cbam.pt"
    weights.write_bytes(checkpoints["yolov5n-cbam"].read_bytes())
    path = main(["export", "--weights", str(weights), "--imgsz", str(IMGSZ), "--dynamic"])
    for shape in [(1, 3, 160, 160), (2, 3, 128, 224)]:
        x = torch.rand(shape)
        np.testing.assert_allclose(ort_out(path, x), torch_out(weights, x), **TOL)


def test_exported_blocks_add_only_small_ops(checkpoints) -> None:
    # Blocks export as the plain definition: per CBAM block the shared MLP's two 1x1 convs for each pooled
    # branch and one spatial Conv node.
    base = onnx.load(str(checkpoints["yolov5n"].with_suffix(".onnx")))  # exported by the parity test above
    cbam = onnx.load(str(checkpoints["yolov5n-cbam"].with_suffix(".onnx")))
    count = lambda g, op: sum(n.op_type == op for n in g.graph.node)  # noqa: E731
    assert count(cbam, "Conv") == count(base, "Conv") + 3 * 5
    assert count(cbam, "Unfold") == 0 and count(cbam, "Loop") == 0


def test_export_installs_nothing_and_says_what_is_missing(checkpoints, monkeypatch, capsys) -> None:
    import importlib.util

    from ultralytics.utils import checks

    called = []
    monkeypatch.setattr(checks.subprocess, "check_output", lambda *a, **k: called.append(a) or b"")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxslim" else real(name, *a))
    with pytest.raises(SystemExit) as e:
        main(["export", "--weights", str(checkpoints["yolov5n"]), "--simplify"])
    assert e.value.code == 2 and not called
    assert capsys.readouterr().err.strip() == ("yolov5-attention export: error: export --format onnx --simplify needs "
                                               "onnxslim: pip install onnxslim")
    with pytest.raises(SystemExit):
        main(["export", "--weights", str(checkpoints["yolov5n"]), "--format", "openvino"])
    assert "invalid choice: 'openvino'" in capsys.readouterr().err


def test_old_releases_need_onnxscript_under_new_torch(monkeypatch) -> None:
    # ultralytics < 8.3.215 leaves torch.onnx.export on torch's default exporter: dynamo from torch 2.9 on.
    assert compat.release("2.14.1+cu130") == (2, 14, 1) and compat.release("8.3.215") == (8, 3, 215)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a))
    for ul, torch_version, needed in (("8.3.5", "2.14.1", True), ("8.3.214", "2.9.0", True),
                                      ("8.3.215", "2.14.1", False), ("8.3.5", "2.8.0", False)):
        monkeypatch.setattr(compat, "VERSION", ul)
        monkeypatch.setattr(compat.torch, "__version__", torch_version)
        assert ("onnxscript" in missing_packages("onnx")) is needed, (ul, torch_version)
        assert "onnxscript" not in missing_packages("torchscript")


@pytest.mark.parametrize("block", BLOCKS)
def test_block_compiles_without_graph_breaks(block: str) -> None:
    module = attention.get(block)(32).eval()
    x = torch.randn(2, 32, 10, 14)
    explanation = torch._dynamo.explain(module)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


@pytest.mark.slow
def test_variant_runs_under_torch_compile() -> None:
    # Marked slow: Inductor on the CPU takes about a minute for the whole model here (-m slow runs it).
    # ultralytics' layer loop recompiles per layer and falls back to eager past dynamo's recompile
    # limit; the output must still equal the eager one.
    model = YOLO(str(MODELS / "yolov5n-cbam.yaml")).model.eval()
    x = torch.rand(1, 3, 96, 96)
    compiled = torch.compile(model)
    with torch.no_grad():
        np.testing.assert_allclose(compiled(x)[0].numpy(), model(x)[0].numpy(), rtol=1e-4, atol=1e-4)
