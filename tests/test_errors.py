"""User mistakes end as one line and exit status 2; anything else keeps its traceback; help says what is accepted."""

from __future__ import annotations

import pytest

from attention.cli.main import main
from attention.errors import MissingFileError, UserError


def test_a_bug_inside_the_package_keeps_its_traceback(tiny_data, tmp_path, monkeypatch):
    import attention.data.sizes as sizes

    def broken(*args, **kwargs):
        raise ValueError("an internal mistake, not the user's")

    monkeypatch.setattr(sizes, "share_rows", broken)
    with pytest.raises(ValueError, match="an internal mistake"):  # not turned into 'sizes: error: ...'
        main(["sizes", "--data", str(tiny_data), "--project", str(tmp_path)])


@pytest.mark.parametrize(("argv", "message"), [
    (["sizes", "--size-bins", "16,8"], "yolov5-attention sizes: error: size bins must be coco, tiny, fine or "
                                       "ascending edges in px like 0,16,32,inf; got '16,8'"),
    (["val", "--weights", "best.pt", "--max-det", "0"], "yolov5-attention val: error: --max-det must be a whole "
                                                        "number of detections per image >= 1, got 0"),
    (["maps", "--weights", "best.pt", "--source", "nope.jpg"], "yolov5-attention maps: error: --source not found: "
                                                               "nope.jpg"),
])
def test_user_mistakes_are_one_line(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [message]


def test_a_missing_file_is_a_user_error_and_a_file_not_found_error():
    assert issubclass(MissingFileError, UserError) and issubclass(MissingFileError, FileNotFoundError)


def test_export_help_lists_exactly_the_accepted_formats(capsys):
    from attention.inference.export import NEEDS

    with pytest.raises(SystemExit):
        main(["export", "--help"])
    text = capsys.readouterr().out
    assert f"--format {{{','.join(NEEDS)}}}" in text and "another ultralytics format" not in text
    assert set(NEEDS) == {"onnx", "torchscript"}
    with pytest.raises(SystemExit) as e:
        main(["export", "--weights", "best.pt", "--format", "openvino"])
    assert e.value.code == 2 and "invalid choice: 'openvino'" in capsys.readouterr().err


def test_val_help_states_the_budget_the_bins_and_the_splits(capsys):
    with pytest.raises(SystemExit):
        main(["val", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--max-det MAX_DET detection budget" in text and "VisDrone's protocol: 500" in text
    assert "--task {train,val,test}" in text and "low <= px < high" in text
