"""Variants named on the command line (yolov5s+CBAM@neck): the grammar, the roles, the generated YAML, transfer."""

from __future__ import annotations

import functools
import shutil
import subprocess

import pytest
import torch
import yaml

from attention.adapter.api import DetectionModel
from attention.blocks.gate import IdentityGate, unwrap
from attention.blocks.registry import is_block
from attention.errors import UserError
from attention.training import variants
from attention.training.build import build, starting_model
from attention.training.job import train
from attention.training.variants import SpecError

from conftest import MODELS

# -- the grammar ---------------------------------------------------------------------------------------------------

CANONICAL = [  # as written -> canonical spec (the variant's name for a shipped base)
    ("yolov5s+CBAM@neck", "yolov5s+CBAM@neck"),
    ("yolov5s.yaml+cbam@NECK", "yolov5s+CBAM@neck"),
    ("yolov5n-p2.yaml+CBAM@neck", "yolov5n-p2+CBAM@neck"),
    ("yolov5s+SE,8@backbone+CBAM,16,3@neck", "yolov5s+SE,8@backbone+CBAM,16,3@neck"),
    ("yolov5n+SimAM,1e-4@sppf", "yolov5n+SimAM,0.0001@sppf"),
    ("yolov5n+MHSA,4,False@017", "yolov5n+MHSA,4,false@17"),
    ("yolov5n.yaml+nwd", "yolov5n+nwd"),
    ("yolov5n+NWD,assigner=true,C=auto,ratio=0.50", "yolov5n+nwd,ratio=0.5,c=auto,assigner"),
    ("yolov5n+nwd,c=12.8,assigner=false", "yolov5n+nwd,c=12.8,assigner=false"),
    ("yolov5m+ECA@c3+nwd,ratio=0", "yolov5m+ECA@c3+nwd,ratio=0"),
]


@pytest.mark.parametrize("given, canonical", CANONICAL)
def test_specs_read_to_their_canonical_form_which_reads_back_to_itself(given, canonical):
    assert variants.model_yaml(given) == canonical
    assert variants.model_yaml(canonical) == canonical
    assert variants.name_of(given) == canonical


def test_model_yamls_are_not_specs(tmp_path):
    assert variants.model_yaml("yolov5s-cbam.yaml") == "yolov5s-cbam.yaml"
    assert variants.name_of("yolov5s-cbam.yaml") == "yolov5s-cbam"
    generated = variants.write("yolov5s+CBAM@neck", tmp_path)  # a file named like a spec is a file
    assert generated.name == "yolov5s+CBAM@neck.yaml" and not variants.is_spec(generated)
    assert variants.model_yaml(generated) == str(generated)


def test_specs_survive_bash_unquoted_and_make_file_names(tmp_path):
    specs = list(dict.fromkeys(c for _, c in CANONICAL))
    specs.append("yolov5n+SE@backbone+ECA,1,2@sppf+CBAM@c3+nwd,ratio=0.5,c=auto,assigner")
    script = "printf '%s\\n' " + " ".join(specs)  # unquoted, as a user types them
    for shell in (["bash", "-c", script], ["bash", "-O", "extglob", "-O", "nullglob", "-c", script],
                  *([["zsh", "-f", "-c", script], ["zsh", "-f", "-c", f"setopt extendedglob kshglob; {script}"]]
                    if shutil.which("zsh") else [])):
        out = subprocess.run(shell, cwd=tmp_path, capture_output=True, text=True, check=True).stdout
        assert out.split("\n")[:-1] == specs, shell
    for spec in specs:
        (tmp_path / f"{variants.name_of(spec)}.yaml").write_text("")
    assert len(list(tmp_path.glob("*.yaml"))) == len(specs)


ERRORS = [  # spec -> the one line it stops with (after "--cfg SPEC: ")
    ("yolov5s+CBM@neck", "unknown block 'CBM' (did you mean CBAM?); blocks: CA, CBAM, CrissCrossAttention, ECA, GAM, "
                         "MHSA, NAMAttention, S2Attention, SE, SKAttention, SOCA, ShuffleAttention, SimAM"),
    ("yolov5s+C3Attn@17", "unknown block 'C3Attn'"),
    ("yolov5s+CBAM@nek", "unknown place 'nek' in CBAM@nek; places: backbone (rows 4, 6, 8), sppf (row 9), neck (rows "
                         "17, 20, 23), c3 (rows 17, 20, 23), or a row index 0-23"),
    ("yolov5s+CBAM@24", "row 24 is not a layer of yolov5s.yaml a block can follow (row 24 is its Detect); places: "),
    ("yolov5n-p2+SE@28", "row 28 is not a layer of yolov5n-p2.yaml a block can follow (row 28 is its Detect); places: "
                         "backbone (rows 2, 4, 6, 8), sppf (row 9), neck (rows 17, 20, 23, 27), c3 (rows 17, 20, "
                         "23, 27)"),
    ("yolov5n-c3cbam+SE@c3", "SE@c3 is impossible: yolov5n-c3cbam.yaml has no c3 (the layers its Detect reads are "
                             "C3Attn, C3Attn, C3Attn, not all C3); places: backbone"),
    ("yolov5s+CBAM", "'CBAM' needs a place: CBAM@neck"),
    ("yolov5s+CBAM@", "'CBAM@': a place is a role (backbone, sppf, neck, c3) or a row index, got ''"),
    ("yolov5s+CBAM@neck@17", "'CBAM@neck@17' names more than one place"),
    ("yolov5s++CBAM@neck", "an empty item between '+' signs"),
    ("yolov5s+SE,8,2@4", "SE takes at most 1 argument, got 2 (a row: [-1, 1, SE, []] or [-1, 1, SE, [ratio]]"),
    ("yolov5s+SE,eight@4", "SE argument 'eight' is not a number or true/false"),
    ("yolov5s+SE@4+se@4", "SE@4 is named twice"),
    ("yolov5s+CBAM@c3+SE@c3", "CBAM@c3 and SE@c3 both want to go inside the C3 of row 17"),
    ("yolov5q+SE@4", "base model YAML not found: yolov5q.yaml (shipped: yolov5-c3cbam.yaml"),
    ("yolov5n+nwd,ratio", "nwd option 'ratio': write ratio=R, c=C (or c=auto), assigner"),
    ("yolov5n+nwd,alpha=2", "nwd option 'alpha=2': write ratio=R, c=C (or c=auto), assigner"),
    ("yolov5n+nwd,c=big", "nwd c 'big' is not a number or true/false"),
    ("yolov5n+nwd,ratio=true", "nwd ratio must be a number, got 'true'"),
    ("yolov5n+nwd,assigner=2", "nwd assigner must be true or false, got '2'"),
    ("yolov5n+nwd+nwd,ratio=1", "nwd is named twice"),
    ("yolov5n+foo", "unknown item 'foo'; write BLOCK@PLACE"),
]


@pytest.mark.parametrize("spec, message", ERRORS)
def test_an_impossible_spec_stops_with_one_line_naming_it(spec, message):
    with pytest.raises(SpecError) as e:
        variants.model_yaml(spec)
    assert str(e.value).startswith(f"--cfg {spec}: {message}") and "\n" not in str(e.value)


def test_a_block_argument_the_block_refuses_stops_when_the_spec_is_resolved():
    with pytest.raises(UserError) as e:  # the parser's own line, naming the generated YAML's row
        variants.model_yaml("yolov5n+ShuffleAttention,7@neck")
    assert str(e.value).startswith("row 24 of yolov5n+ShuffleAttention,7@neck.yaml (scale n): ShuffleAttention[7] "
                                   "cannot be built on 64 channels: ShuffleAttention: channels 64 must be divisible "
                                   "by 2*G = 14 (G=7 groups).") and "\n" not in str(e.value)


def test_a_role_the_base_lacks_is_named_with_what_it_has(write_yaml):
    text = (MODELS / "yolov5.yaml").read_text()
    no_sppf = write_yaml("yolov5n-nosppf.yaml", text.replace("SPPF, [1024, 5]", "Conv, [1024, 1, 1]"))
    with pytest.raises(SpecError, match=r"^--cfg \S+: ECA@sppf is impossible: yolov5n-nosppf.yaml has no sppf \(it "
                                        r"has no SPPF or SPP row\); places: backbone \(rows 4, 6, 9\), neck \(rows 17, "
                                        r"20, 23\), c3 \(rows 17, 20, 23\), or a row index 0-23$"):
        variants.model_yaml(f"{no_sppf}+ECA@sppf")
    no_c3 = write_yaml("yolov5n-c2f.yaml", text.replace(", C3,", ", C2f,"))
    with pytest.raises(SpecError, match=r"CBAM@c3 is impossible: yolov5n-c2f.yaml has no c3 \(the layers its Detect "
                                        r"reads are C2f, C2f, C2f, not all C3\); places: backbone \(rows 4, 6, 8\), "
                                        r"sppf \(row 9\), neck \(rows 17, 20, 23\), or a row index 0-23$"):
        variants.model_yaml(f"{no_c3}+CBAM@c3")


# -- the roles, at every scale -------------------------------------------------------------------------------------

X = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def widths(model: torch.nn.Module, x: torch.Tensor) -> list[int]:
    """Each layer's output channels on input x."""
    out: list[int] = []
    hooks = [m.register_forward_hook(lambda m, i, o: out.append(o.shape[1] if torch.is_tensor(o) else 0))
             for m in model.model]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return out


# spec -> (base rows a block follows, rows of the base whose C3 holds one, what Detect reads in the variant)
PLACED = {
    "+SE@backbone": ([4, 6, 8], [], [20, 23, 26]),
    "+ECA@sppf": ([9], [], [18, 21, 24]),
    "+CBAM@neck": ([], [], [24, 25, 26]),
    "+CA@c3": ([], [17, 20, 23], [17, 20, 23]),
    "+SE@17": ([17], [], [18, 21, 24]),
    "+SE@backbone+ECA@sppf+CBAM@neck": ([4, 6, 8, 9], [], [28, 29, 30]),
}


@functools.lru_cache(maxsize=None)
def base_model(scale: str) -> tuple[DetectionModel, list[int]]:
    """The shipped yolov5 at a scale, and its layers' widths on a 64 px input."""
    model = DetectionModel(str(MODELS / f"yolov5{scale}.yaml"), verbose=False).eval()
    return model, widths(model, X)


@pytest.mark.parametrize("scale", ["n", "s"])
@pytest.mark.parametrize("items", list(PLACED))
def test_each_role_places_its_blocks_at_every_scale(items, scale):
    after, inside, detect = PLACED[items]
    base, base_c = base_model(scale)
    variant = build(f"yolov5{scale}{items}")
    assert variant.yaml["scale"] == scale and variant.yaml["yaml_file"] == f"yolov5{scale}{items}.yaml"
    var_c = widths(variant, X)
    rows = variant.yaml["backbone"] + variant.yaml["head"]
    blocks = [i for i, m in enumerate(variant.model) if is_block(m)]
    neck = 3 if "@neck" in items else 0
    assert len(blocks) == len(after) + neck and len(variant.model) == len(base.model) + len(blocks)
    for k, b in enumerate(after):  # the k-th block follows base row b, shifted by the k blocks before it
        assert blocks[k] == b + k + 1 and rows[blocks[k]][0] == -1 and var_c[blocks[k]] == base_c[b]
    for i in inside:
        assert type(variant.model[i]).__name__ == "C3Attn" and var_c[i] == base_c[i]
    assert variant.model[-1].f == detect
    assert [var_c[f] for f in detect] == [base_c[f] for f in base.model[-1].f]
    out = variant.eval()(X)[0]
    assert out.shape == base(X)[0].shape and torch.isfinite(out).all()


def test_backbone_blocks_are_read_by_every_row_that_read_the_stage():
    rows = variants.generate("yolov5n+SE@backbone").get("head")
    # base rows 12 and 16 concatenate backbone P4 (row 6) and P3 (row 4): now the blocks after them, rows 8 and 5
    assert rows[2] == [[-1, 8], 1, "Concat", [1]] and rows[6] == [[-1, 5], 1, "Concat", [1]]


def test_the_p2_base_gets_a_block_per_level():
    d = variants.generate("yolov5n-p2+SE@backbone+CBAM@neck")
    rows = d["backbone"] + d["head"]
    assert [r[0] for r in rows if r[2] == "CBAM"] == [31, 21, 24, 27]  # on P2, P3, P4, P5: Detect's order
    assert rows[-1][0] == [32, 33, 34, 35] and [i for i, r in enumerate(rows) if r[2] == "SE"] == [3, 6, 9, 12]


def test_a_spec_builds_at_x():
    model = build("yolov5x+CBAM@sppf")
    assert model.yaml["scale"] == "x" and type(model.model[10]).__name__ == "CBAM"
    assert model.model[10].mlp[0].in_channels == 1280  # SPPF's 1024 channels at width 1.25


@pytest.mark.parametrize("spec, shipped", [("yolov5n+CBAM@neck", "yolov5n-cbam.yaml"),
                                           ("yolov5n+CBAM@c3", "yolov5n-c3cbam.yaml"),
                                           ("yolov5n-p2+SE@neck", "yolov5n-p2-se.yaml")])
def test_a_spec_builds_what_the_hand_written_yaml_builds(spec, shipped):
    a, b = build(spec, seed=3).state_dict(), build(shipped, seed=3).state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


# -- the generated YAML --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["yolov5s+SE@backbone+CBAM,4,3@neck", "yolov5n+ECA,1,2@c3+nwd,ratio=0.5",
                                  "yolov5s+SE@12"])
def test_the_written_yaml_builds_the_same_model_by_hand(spec, tmp_path):
    path = variants.write(spec, tmp_path / "run")
    assert path == tmp_path / "run" / f"{spec}.yaml"
    written = yaml.safe_load(path.read_text())
    d = variants.generate(spec)
    assert written == {k: v for k, v in d.items() if k not in ("scale", "yaml_file")}  # ultralytics adds those two
    by_hand = build(variants.model_yaml(str(path)), seed=1)  # what --cfg path/to/NAME.yaml gives
    assert by_hand.yaml["scale"] == spec[6]  # read from the file name
    a, b = build(spec, seed=1).state_dict(), by_hand.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_the_loss_item_writes_only_what_was_given():
    assert variants.generate("yolov5n+nwd")["loss"] == {"box": "nwd"}
    assert variants.generate("yolov5n+nwd,c=auto,assigner")["loss"] == {"box": "nwd", "c": "auto", "assigner": True}
    assert variants.generate("yolov5n+nwd,ratio=0.25,c=12")["loss"] == {"box": "nwd", "ratio": 0.25, "c": 12}
    assert "loss" not in variants.generate("yolov5n+SE@sppf")


def test_a_user_base_resolves_from_any_folder_and_a_generated_yaml_is_a_base(tmp_path, monkeypatch):
    (tmp_path / "cfg").mkdir()
    mine = tmp_path / "cfg" / "yolov5s-mine.yaml"
    mine.write_text((MODELS / "yolov5.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    canonical = variants.model_yaml("cfg/yolov5s-mine.yaml+SE@sppf")
    assert canonical == f"{mine}+SE@sppf" and variants.name_of(canonical) == "yolov5s-mine+SE@sppf"
    monkeypatch.chdir(tmp_path / "cfg")  # another working folder, as on a worker: the canonical spec still resolves
    assert variants.generate(canonical)["head"] == variants.generate("yolov5s+SE@sppf")["head"]
    generated = variants.write("yolov5s+CBAM@neck", tmp_path)
    both = variants.generate(f"{generated}+SE@sppf")  # a generated YAML is a base like any other
    assert both["yaml_file"] == "yolov5s+CBAM@neck+SE@sppf.yaml"
    assert both["head"] == variants.generate("yolov5s+CBAM@neck+SE@sppf")["head"]


# -- transfer: every base tensor used, identity start equals the base --------------------------------------------

def randomized(model: torch.nn.Module) -> torch.nn.Module:
    """Every tensor distinct and non-default, so a tensor loaded into the wrong place shows."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.dtype.is_floating_point:
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + (0.5 if "running_var" in name else -0.25))
    return model


@pytest.fixture(scope="module")
def base_ckpt(tmp_path_factory):
    """A yolov5n checkpoint with 3 classes and random weights, written here."""
    path = tmp_path_factory.mktemp("base") / "base.pt"
    torch.save({"model": randomized(build("yolov5n.yaml", nc=3)), "epoch": -1}, path)
    return path


@pytest.mark.parametrize("items, new, inside", [
    ("+SE@backbone", [5, 8, 11], []), ("+ECA@sppf", [10], []), ("+CBAM@neck", [24, 25, 26], []),
    ("+CA@c3", [], [17, 20, 23]), ("+SE@12", [13], []),
    ("+CBAM@backbone+SE@c3+ECA@neck", [5, 8, 11, 27, 28, 29], [20, 23, 26])])
def test_each_placement_starts_as_its_base(base_ckpt, items, new, inside):
    base = torch.load(base_ckpt, weights_only=False)["model"].eval()
    variant, report = starting_model(f"yolov5n{items}", str(base_ckpt), nc=3, attn_init="identity")
    assert report.loaded == report.base_tensors == len(base.state_dict()) and report.unused == []
    assert f"({report.loaded}/{report.loaded} of the base's tensors used)" in report.summary()
    assert report.new == new and all(isinstance(variant.model[i], IdentityGate) for i in new)
    assert [i for i, m in enumerate(variant.model) if type(m).__name__ == "C3Attn"] == inside
    assert all(isinstance(variant.model[i].attn, IdentityGate) for i in inside)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = base(x)[0], variant.eval()(x)[0]
    assert a.shape == b.shape and (a - b).abs().max() < 1e-4


# -- train and compare take specs ----------------------------------------------------------------------------------

def test_train_writes_the_generated_yaml_into_the_run_folder(base_ckpt, tiny_data, tmp_path):
    done = train("yolov5n+SE@sppf", weights=str(base_ckpt), attn_init="identity", data=tiny_data, epochs=1,
                 imgsz=64, batch_size=8, workers=0, project=tmp_path, name="exp")
    path = done.save_dir / "yolov5n+SE@sppf.yaml"
    assert yaml.safe_load(path.read_text())["backbone"][10] == [-1, 1, "SE", []]
    trained = torch.load(done.save_dir / "weights" / "last.pt", weights_only=False)
    assert trained["train_args"]["model"] == str(path)  # what the run records as its model
    assert trained["model"].yaml["yaml_file"] == "yolov5n+SE@sppf.yaml"
    n = len(torch.load(base_ckpt, weights_only=False)["model"].state_dict())
    assert f"({n}/{n} of the base's tensors used)" in (done.save_dir / "transfer.txt").read_text()
    again = build(variants.model_yaml(str(path)), nc=3)  # by hand, from the file
    assert [type(m).__name__ for m in again.model] == [type(unwrap(m)).__name__ for m in done.model.model]


def test_compare_and_train_several_resolve_specs_before_training(tmp_path, capsys):
    from attention.cli.main import main
    from attention.evaluation.compare import Grid
    from attention.evaluation.experiment import Experiment

    for command in (["compare", "--cfg", "yolov5n.yaml", "yolov5n+SE@99"],
                    ["train", "--cfg", "yolov5n+SE@99", "x.yaml"]):
        with pytest.raises(SystemExit) as e:
            main([*command, "--project", str(tmp_path)])
        assert e.value.code == 2
        assert capsys.readouterr().err.endswith("error: --cfg yolov5n+SE@99: row 99 is not a layer of yolov5n.yaml a "
                                                "block can follow (row 24 is its Detect); places: backbone (rows 4, 6, "
                                                "8), sppf (row 9), neck (rows 17, 20, 23), c3 (rows 17, 20, 23), or a "
                                                "row index 0-23\n")
    assert list(tmp_path.iterdir()) == []  # nothing started
    exp = Experiment.from_mapping({"cfg": ["yolov5n.yaml", "yolov5n.yaml+cbam@neck"], "project": str(tmp_path)})
    grid = Grid(exp, [variants.model_yaml(c) for c in exp.cfg], [("full", 64)], "AP_tiny", 100, None)
    run = grid.spec(grid.cfgs[1], 2)
    assert run.cfg == "yolov5n+CBAM@neck" and run.variant == "yolov5n+CBAM@neck"
    assert run.folder == exp.root / "yolov5n+CBAM@neck" / "seed2"
