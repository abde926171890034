"""The README's examples run as written: "Your own module" from a temporary folder of the user's."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import torch

from attention.blocks.registry import unregister

from conftest import REPO


def blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of every fenced code block, in order."""
    return re.findall(r"```(\w*)\n(.*?)```", text, re.S)


def test_your_own_module_example_registers_builds_and_trains(tmp_path, monkeypatch):
    readme = (REPO / "README.md").read_text()
    found = blocks(readme[readme.index("### Your own module"):])
    k = next(i for i, (lang, code) in enumerate(found) if lang == "python" and code.startswith("# my_modules.py"))
    (tmp_path / "my_modules.py").write_text(found[k][1])
    commands = next(code for lang, code in found[k + 1:] if lang == "bash")
    env = {**os.environ, "YOLO_OFFLINE": "1", "XDG_CACHE_HOME": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    env.pop("ATTENTION_DATASETS", None)
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", commands], cwd=tmp_path, env=env, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "ConvStack" in (tmp_path / "yolov5-mine.yaml").read_text()
    monkeypatch.syspath_prepend(str(tmp_path))  # the checkpoint names my_modules.ConvStack
    try:
        ckpt = torch.load(tmp_path / "runs" / "train" / "exp" / "weights" / "best.pt", map_location="cpu",
                          weights_only=False)
    finally:
        unregister("ConvStack")
        sys.modules.pop("my_modules", None)
    layer = ckpt["model"].model[23]
    assert type(layer).__name__ == "ConvStack" and type(layer).__module__ == "my_modules"
    assert layer.body[0].out_channels == 256  # 1024 at width 0.25


def test_a_module_that_cannot_be_imported_is_one_line(tmp_path, monkeypatch, capsys):
    import pytest

    from attention.cli.main import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ATTENTION_MODULES", "")  # main() adds to it: restored after the test
    with pytest.raises(SystemExit) as e:
        main(["--modules", "not_my_modules", "compat"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err == ("yolov5-attention: error: --modules / $ATTENTION_MODULES: cannot import "
                                         "'not_my_modules' (No module named 'not_my_modules')")


def test_the_readme_stays_short_and_its_links_resolve():
    # The README is for a newcomer: at most 450 lines, detail in docs/; every relative link must reach a file.
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 450
    links = re.findall(r"\]\(((?!https?:)[^)#\s]+)(?:#[^)]*)?\)", readme)
    assert links and all((REPO / link).exists() for link in links), [l for l in links if not (REPO / l).exists()]
