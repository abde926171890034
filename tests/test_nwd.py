"""NWD (normalized Gaussian Wasserstein distance) as the box loss and the assigner's overlap, on the oldest and newest
ultralytics: the formula against an independent closed form, its gradients, the loss mapping, the hook's units and
mix, and a training run whose checkpoints load in stock ultralytics and whose resume keeps the loss."""

from __future__ import annotations

import csv
import math
import pickletools
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
import yaml
from ultralytics.cfg import get_cfg
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils.metrics import bbox_iou
from ultralytics.utils.tal import make_anchors

from attention.adapter import compat
from attention.adapter.loss import NWDBoxLoss, anchor_strides, nwd_criterion
from attention.errors import UserError
from attention.losses import LossChoice, nwd, wasserstein
from attention.training.loss import chosen_loss

from conftest import REPO


def gaussian_w2(box_a: np.ndarray, box_b: np.ndarray) -> float:
    """W2 between the boxes' Gaussians from the general formula for two Gaussians, float64:
    W2² = |m1 - m2|² + tr(S1 + S2 - 2 (S2^½ S1 S2^½)^½), with S = diag(w²/4, h²/4) for an xyxy box."""

    def gaussian(box):
        x1, y1, x2, y2 = box
        return np.array([(x1 + x2) / 2, (y1 + y2) / 2]), np.diag([(x2 - x1) ** 2 / 4, (y2 - y1) ** 2 / 4])

    (m1, s1), (m2, s2) = gaussian(box_a), gaussian(box_b)
    root2 = scipy.linalg.sqrtm(s2)
    cross = scipy.linalg.sqrtm(root2 @ s1 @ root2)
    w2 = np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * np.real(cross))
    return math.sqrt(max(w2, 0.0))


PAIRS = [  # xyxy in px: apart, nested, offset, differently shaped, one a pixel wide, equal
    ([10, 10, 14, 14], [30, 12, 33, 16]),
    ([0, 0, 40, 40], [10, 10, 20, 20]),
    ([5, 5, 25, 15], [8, 4, 30, 14]),
    ([100, 50, 300, 90], [120, 40, 180, 160]),
    ([7, 7, 8, 19], [6, 9, 9, 12]),
    ([3, 4, 9, 12], [3, 4, 9, 12]),
]


@pytest.mark.parametrize("c", [1.0, 12.8, 100.0])
def test_nwd_equals_the_closed_form_gaussian_wasserstein_of_the_paper(c):
    a = torch.tensor([p[0] for p in PAIRS], dtype=torch.float64)
    b = torch.tensor([p[1] for p in PAIRS], dtype=torch.float64)
    expected = [math.exp(-gaussian_w2(np.array(p), np.array(q)) / c) for p, q in PAIRS]
    assert nwd(a, b, c).tolist() == pytest.approx(expected, rel=1e-9, abs=1e-12)
    xywh = lambda t: torch.cat(((t[:, :2] + t[:, 2:]) / 2, t[:, 2:] - t[:, :2]), 1)
    assert torch.allclose(nwd(xywh(a), xywh(b), c, xywh=True), nwd(a, b, c))
    # the paper's remark: one object size C away is exp(-1), whatever the boxes' size
    assert nwd(torch.tensor([0.0, 0, c, c]), torch.tensor([c, 0, 2 * c, c]), c).item() == pytest.approx(math.exp(-1))


def test_nwd_is_in_0_1_symmetric_and_1_only_for_equal_boxes():
    torch.manual_seed(0)
    xy, wh = torch.rand(2, 500, 2) * 100, torch.rand(2, 500, 2) * 30 + 0.5
    a, b = torch.cat((xy[0], xy[0] + wh[0]), 1), torch.cat((xy[1], xy[1] + wh[1]), 1)
    value = nwd(a, b, 12.8)
    assert ((value > 0) & (value < 1)).all()
    assert torch.equal(value, nwd(b, a, 12.8))
    assert (nwd(a, a, 12.8) == 1).all()
    # translation-invariant, and a larger C is more lenient
    assert torch.allclose(nwd(a + 7, b + 7, 12.8), value, atol=1e-6)
    assert (nwd(a, b, 30.0) > value).all()


def test_gradient_is_finite_at_equal_boxes_and_a_hair_apart():
    c = 12.8
    for gap in (0.0, 1e-6, 1e-20):
        a = torch.tensor([[10.0, 10, 14, 14]], requires_grad=True)
        b = torch.tensor([[10.0 + gap, 10, 14, 14]], requires_grad=True)
        (1 - nwd(a, b, c)).sum().backward()
        for g in (a.grad, b.grad):
            assert torch.isfinite(g).all()
            # |d NWD / d coordinate| <= 1/C: W2 is a norm of halves and half-sums of coordinates
            assert g.abs().max() <= 1 / c + 1e-6
    assert torch.equal(a.grad, torch.zeros_like(a))  # tiny gap under float32's resolution: equal boxes, grad 0
    a = torch.tensor([[10.0, 10, 14, 14]], requires_grad=True)
    wasserstein(a, torch.tensor([[12.0, 10, 16, 14]])).sum().backward()
    assert a.grad[0].tolist() == pytest.approx([-0.5, 0, -0.5, 0])  # moving the box right brings it nearer


# --- the loss mapping


def test_loss_mapping_defaults_round_trip_and_spellings():
    assert LossChoice.from_yaml(None, "m.yaml") == LossChoice() and not LossChoice().uses_nwd
    choice = LossChoice.from_yaml({"box": "NWD", "ratio": 0.5, "c": 12.8, "assigner": True}, "m.yaml")
    assert choice == LossChoice("nwd", 0.5, 12.8, True) and choice.nwd_share == 0.5
    assert LossChoice.from_yaml(choice.to_yaml(), "m.yaml") == choice
    assert LossChoice.from_yaml({"box": "nwd", "c": "auto"}, "m.yaml").c is None
    assert LossChoice.from_yaml({"box": "iou", "ratio": 0.3}, "m.yaml").nwd_share == 0  # ratio is NWD's share
    assert LossChoice.from_yaml({"box": "nwd", "c": 12}, "m.yaml").c == 12.0


@pytest.mark.parametrize("mapping, message", [
    ("nwd", "m.yaml: loss must be a mapping with keys box, ratio, c, assigner, got 'nwd'"),
    ({"box": "nwd", "rato": 0.5}, "m.yaml: loss: unknown key 'rato'; known: box, ratio, c, assigner"),
    ({"box": "giou"}, "m.yaml: loss.box must be iou or nwd, got 'giou'"),
    ({"box": "nwd", "ratio": 1.5}, "m.yaml: loss.ratio must be a number from 0 to 1"),
    ({"box": "nwd", "ratio": True}, "m.yaml: loss.ratio must be a number from 0 to 1"),
    ({"box": "nwd", "c": 0}, "m.yaml: loss.c must be auto or a positive number of pixels, got 0"),
    ({"box": "nwd", "c": "big"}, "m.yaml: loss.c must be auto or a positive number of pixels, got 'big'"),
    ({"box": "nwd", "c": float("nan")}, "m.yaml: loss.c must be auto or a positive number"),
    ({"assigner": "yes"}, "m.yaml: loss.assigner must be true or false, got 'yes'"),
])
def test_a_bad_loss_mapping_is_one_line_naming_the_key(mapping, message):
    with pytest.raises(UserError) as e:
        LossChoice.from_yaml(mapping, "m.yaml")
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_command_line_keys_override_the_yaml_and_c_auto_is_the_mean_object_size(tiny_data):
    from PIL import Image

    # independent: sqrt(w·h) of every labelled box of the train split, each image scaled so its long side is 128
    sizes = []
    for image in sorted((tiny_data.parent / "tiny" / "images" / "train").iterdir()):
        width, height = Image.open(image).size
        for line in (image.parents[2] / "labels" / "train" / f"{image.stem}.txt").read_text().splitlines():
            _, _, _, w, h = map(float, line.split())
            sizes.append(math.sqrt(w * width * h * height) * 128 / max(width, height))
    model_yaml = {"loss": {"box": "nwd", "ratio": 0.5}}
    choice, note = chosen_loss(model_yaml, None, "m.yaml", tiny_data, 128)
    assert choice.c == pytest.approx(np.mean(sizes), abs=0.005) and f"{len(sizes)} train boxes at 128 px" in note
    assert chosen_loss(model_yaml, {"ratio": 1.0, "c": 9.5}, "m.yaml", tiny_data, 128)[0] == LossChoice("nwd", 1, 9.5)
    assert chosen_loss(model_yaml, {"box": "iou"}, "m.yaml", tiny_data, 128)[0] == LossChoice("iou", 0.5)
    assert chosen_loss({}, None, "m.yaml", tiny_data, 128) is None  # ultralytics' own loss, the YAML untouched
    with pytest.raises(UserError, match="--nwd-ratio 0.5 has no effect: the box loss is iou"):
        chosen_loss({}, {"ratio": 0.5}, "m.yaml", tiny_data, 128)
    with pytest.raises(UserError, match="m.yaml: loss.box must be iou or nwd"):
        chosen_loss({"loss": {"box": "wasserstein"}}, {"box": "nwd"}, "m.yaml", tiny_data, 128)


@pytest.mark.parametrize("argv, message", [
    (["--resume", "--box-loss", "nwd"], "--resume carries a run on with the loss it was trained with; drop "
                                        "--box-loss / --nwd-*"),
    (["--box-loss", "nwd", "--nwd-c", "big"], "--nwd-c takes a number of pixels or auto, got 'big'"),
])
def test_loss_flags_a_run_cannot_take_are_one_line(argv, message, capsys):
    from attention.cli.main import main

    with pytest.raises(SystemExit) as e:
        main(["train", *argv])
    assert e.value.code == 2 and capsys.readouterr().err.strip().splitlines() == [f"yolov5-attention train: error: "
                                                                                   f"{message}"]


# --- the hook: ultralytics' criterion with NWD in it


@pytest.fixture(scope="module")
def model() -> DetectionModel:
    torch.manual_seed(0)
    m = DetectionModel("yolov5n.yaml", nc=3, verbose=False)
    m.args = get_cfg()  # the hyperparameters the trainer attaches (box, cls, dfl gains)
    return m


def test_compat_lists_the_feature_and_finds_it_on_this_release(capsys):
    from attention.cli.tools import compat as compat_command

    assert compat.missing("nwd_loss") == ()
    compat_command(None)
    assert any(line.split()[:2] == ["on", "NWD"] for line in capsys.readouterr().out.splitlines())


def test_a_release_with_another_anchor_layout_switches_nwd_off_with_one_warning(model, monkeypatch, ul_log):
    import types

    from ultralytics.utils import tal

    from attention.adapter.loss import use_model_loss

    for cache in (compat.missing, compat.enabled):
        cache.cache_clear()
    monkeypatch.setattr(tal, "make_anchors", lambda feats, strides, offset=0.5: make_anchors(feats[::-1], strides))
    monkeypatch.setitem(model.yaml, "loss", {"box": "nwd", "c": 8.0})
    monkeypatch.setattr(model, "criterion", None, raising=False)
    try:
        assert use_model_loss(types.SimpleNamespace(model=model)) is None and use_model_loss(
            types.SimpleNamespace(model=model)) is None
        assert model.criterion is None  # ultralytics builds its own when it first computes a loss
        said = [m for m in ul_log if "yolov5-attention" in m]
        assert len(said) == 1 and "yolov5-attention: NWD box loss and assigner (" in said[0] and (
            "is switched off: ultralytics" in said[0]) and "make_anchors laying out each level's h * w anchors" in said[0]
    finally:
        for cache in (compat.missing, compat.enabled):
            cache.cache_clear()


@pytest.mark.parametrize("height, width", [(64, 96), (160, 160), (640, 320)])
def test_each_anchor_gets_the_stride_make_anchors_gives_it(height, width):
    strides = (4.0, 8.0, 16.0, 32.0)  # P2 too
    feats = [torch.zeros(1, 1, height // int(s), width // int(s)) for s in strides]
    _, expected = make_anchors(feats, torch.tensor(strides), 0.5)
    assert torch.equal(anchor_strides(len(expected), strides), expected.view(-1))


def batch_at(height: int, width: int) -> dict[str, torch.Tensor]:
    """Two images with three labelled boxes (normalized xywh), each wide enough to hold an anchor on every release."""
    image = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(0))
    return {"img": image, "batch_idx": torch.tensor([0.0, 0, 1]), "cls": torch.tensor([[0.0], [1], [2]]),
            "bboxes": torch.tensor([[0.3, 0.3, 0.25, 0.3], [0.6, 0.5, 0.12, 0.15], [0.5, 0.5, 0.4, 0.3]])}


def closed_form_nwd(pred_px: torch.Tensor, target_px: torch.Tensor, c: float) -> np.ndarray:
    return np.array([math.exp(-gaussian_w2(p, t) / c) for p, t in zip(pred_px.double().numpy(),
                                                                       target_px.double().numpy())])


@pytest.mark.parametrize("ratio", [1.0, 0.3])
def test_box_term_is_the_mix_of_ultralytics_ciou_and_nwd_on_pixel_boxes(model, ratio):
    c, height, width = 6.0, 64, 96  # a rectangular input: levels of unequal width and height
    criterion = nwd_criterion(model, LossChoice("nwd", ratio, c))
    wrapper = criterion.bbox_loss
    assert isinstance(wrapper, NWDBoxLoss)
    seen = {}  # what ultralytics hands its box loss, and the CIoU term its own BboxLoss returns
    wrapper.stock.register_forward_hook(lambda module, args, out: seen.update(args=args, ciou=out[0].item()))
    batch = batch_at(height, width)
    with torch.no_grad():
        preds = model.train()(batch["img"])
        items = criterion(preds, batch)[1]
    box = (items["box_loss"] if isinstance(items, dict) else items[0]).item()
    pred, anchors, target, scores, scores_sum, fg = (seen["args"][i] for i in (1, 2, 3, 4, 5, 6))
    # pixels from grid units by make_anchors' own strides, not by the hook's
    feats = [torch.zeros(1, 1, height // int(s), width // int(s)) for s in model.stride.tolist()]
    _, stride = make_anchors(feats, model.stride, 0.5)
    scale = stride.view(-1).expand(fg.shape)[fg].unsqueeze(-1)
    assert fg.sum() > 0 and torch.equal(anchors, make_anchors(feats, model.stride, 0.5)[0])  # grid units, as said
    nwd_px = closed_form_nwd(pred[fg] * scale, target[fg] * scale, c)
    weight = scores.sum(-1)[fg].numpy()
    expected = (1 - ratio) * seen["ciou"] + ratio * float(((1 - nwd_px) * weight).sum() / float(scores_sum))
    assert box == pytest.approx(expected * model.args.box, rel=1e-5)
    ious = bbox_iou(pred[fg], target[fg], xywh=False, CIoU=True).view(-1).numpy()  # and the CIoU term is 1 - CIoU
    assert seen["ciou"] == pytest.approx(float(((1 - ious) * weight).sum() / float(scores_sum)), rel=1e-5)


def test_the_mapping_swaps_only_what_it_names(model):
    stock = model.init_criterion()
    box_only = nwd_criterion(model, LossChoice("nwd", c=8.0))
    assign_only = nwd_criterion(model, LossChoice("iou", c=8.0, assigner=True))
    assert type(box_only) is type(stock) and "iou_calculation" not in vars(box_only.assigner)
    assert type(assign_only.bbox_loss) is type(stock.bbox_loss) and "iou_calculation" in vars(assign_only.assigner)
    with pytest.raises(UserError, match="c: auto is resolved by `yolov5-attention train`"):
        nwd_criterion(model, LossChoice("nwd"))


def test_nwd_in_the_assigner_changes_which_box_an_anchor_is_assigned(model):
    # Every anchor predicts the box P; ground truths A and B overlap. 1 - CIoU favours A (IoU 0.25 against 0.22,
    # P shifted 12 px right), NWD favours B (shifted 8 px right and down, 11.3 px away): the anchors inside both
    # go to A under CIoU and to B under NWD, the others to the one they lie in either way.
    p = torch.tensor([[20.0, 20, 40, 40]])
    gts = torch.tensor([[[32.0, 20, 52, 40], [28, 28, 48, 48]]])
    ciou = bbox_iou(p, gts[0], xywh=False, CIoU=True).view(-1)
    closeness = nwd(p, gts[0], 8.0)
    assert ciou[0] > ciou[1] > 0 and closeness[1] > closeness[0]
    xs = torch.arange(4.0, 64, 8)
    anchors = torch.stack(torch.meshgrid(xs, xs, indexing="xy"), -1).view(-1, 2)  # stride 8 centres of 64 x 64
    args = (torch.full((1, len(anchors), 3), 0.5), p.expand(1, len(anchors), 4).clone(), anchors,
            torch.zeros(1, 2, 1), gts, torch.ones(1, 2, 1))
    picked = {}
    for name, choice in {"ciou": None, "nwd": LossChoice("iou", c=8.0, assigner=True)}.items():
        criterion = nwd_criterion(model, choice) if choice else model.init_criterion()
        _, _, _, fg, gt_idx = criterion.assigner(*(a.clone() for a in args))
        picked[name] = {tuple(anchors[i].tolist()): int(gt_idx[0, i]) for i in fg[0].nonzero().view(-1)}
    both = {(36.0, 36.0), (44.0, 36.0)}
    assert set(picked["ciou"]) == set(picked["nwd"]) >= both
    assert {a: picked["ciou"][a] for a in both} == {a: 0 for a in both}
    assert {a: picked["nwd"][a] for a in both} == {a: 1 for a in both}
    assert all(picked["ciou"][a] == picked["nwd"][a] for a in set(picked["ciou"]) - both)


def tiny_batch(data_yaml: Path, size: int, n: int = 4) -> dict[str, torch.Tensor]:
    """The first n train images of the tiny set resized to size x size (they are square) and their labels."""
    from PIL import Image

    images = sorted((data_yaml.parent / "tiny" / "images" / "train").iterdir())[:n]
    pixels, index, cls, boxes = [], [], [], []
    for i, image in enumerate(images):
        rgb = np.asarray(Image.open(image).convert("RGB").resize((size, size)), dtype=np.float32) / 255
        pixels.append(torch.from_numpy(rgb).permute(2, 0, 1))
        for line in (image.parents[2] / "labels" / "train" / f"{image.stem}.txt").read_text().splitlines():
            k, *xywh = map(float, line.split())
            index.append(i), cls.append([k]), boxes.append(xywh)
    return {"img": torch.stack(pixels), "batch_idx": torch.tensor(index), "cls": torch.tensor(cls),
            "bboxes": torch.tensor(boxes)}


def test_training_on_a_batch_drives_the_nwd_box_loss_down(tiny_data):
    # ultralytics' box loss divides by the sum of the task-aligned target scores, clamped at 1. From scratch that sum
    # starts below 1, so in a short run through the trainer the box loss follows the scores' scale and rises as they
    # grow; on one batch trained to convergence, the NWD term itself is seen to fall. Also its weighted mean of
    # 1 - NWD over the assigned boxes, which no scale affects.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small model on a shared CPU: one thread is the fastest
    try:
        torch.manual_seed(0)
        model = DetectionModel("yolov5n.yaml", nc=3, verbose=False).train()
        model.args = get_cfg()
        criterion = nwd_criterion(model, LossChoice("nwd", c=10.0))
        seen = {}
        criterion.bbox_loss.stock.register_forward_hook(lambda module, args, out: seen.update(args=args))
        batch = tiny_batch(tiny_data, 128)
        optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
        box, misfit = [], []
        for _ in range(21):
            loss, items = criterion(model(batch["img"]), batch)
            box.append(float(items["box_loss"] if isinstance(items, dict) else items[0]))
            pred, anchors, target, scores, fg = (seen["args"][i].detach() for i in (1, 2, 3, 4, 6))
            scale = anchor_strides(len(anchors), criterion.bbox_loss.strides).expand(fg.shape)[fg].unsqueeze(-1)
            weight = scores.sum(-1)[fg]
            misfit.append(float(((1 - nwd(pred[fg] * scale, target[fg] * scale, 10.0)) * weight).sum() / weight.sum()))
            optimizer.zero_grad()
            loss.sum().backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    assert box[-1] < box[0] / 2 and misfit[-1] < misfit[0] / 2, (box, misfit)


# --- a run through the trainer: C recorded, NWD on resume too, checkpoints load in stock ultralytics


class Interrupted(Exception):
    """Stands for a run killed right after its first checkpoint."""


def globals_pickled(path: Path) -> set[str]:
    """Every module a checkpoint's pickle names a global of (what unpickling it will import)."""
    with zipfile.ZipFile(path) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    out, strings = set(), []
    for op, arg, _ in pickletools.genops(data):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif op.name == "GLOBAL":
            out.add(arg.split(" ")[0])
        elif op.name == "STACK_GLOBAL":
            out.add(strings[-2])
    return out


@pytest.fixture(scope="module")
def nwd_run(tiny_data, tmp_path_factory):
    """train --box-loss nwd (C auto), killed after epoch 1 of 2 and resumed: the folder, a copy of the mid-run
    last.pt, what ultralytics logged on resume, and how often the NWD box loss ran before and after the kill."""
    import logging

    from ultralytics.utils import LOGGER

    from attention.adapter.trainer import trainer_class
    from attention.training.job import resume, train

    root = tmp_path_factory.mktemp("nwd")
    hyp = root / "hyp.yaml"
    hyp.write_text("nbs: 4\nwarmup_epochs: 0\n")  # an optimizer step every batch from the start
    cls, calls = trainer_class(), []
    save_model, forward = cls.save_model, NWDBoxLoss.forward

    def save_then_stop(self):
        saved = save_model(self)
        if self.epoch == 0:
            raise Interrupted
        return saved

    def counted(self, *args):
        calls[-1] += 1
        return forward(self, *args)

    cls.save_model, NWDBoxLoss.forward = save_then_stop, counted
    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    try:
        calls.append(0)
        with pytest.raises(Interrupted):
            train(data=tiny_data, epochs=2, imgsz=96, batch_size=4, workers=0, project=root, name="run", hyp=str(hyp),
                  loss={"box": "nwd"})
        cls.save_model = save_model
        folder = root / "run"
        mid = root / "mid-run-last.pt"
        mid.write_bytes((folder / "weights" / "last.pt").read_bytes())
        calls.append(0)
        LOGGER.addHandler(handler)
        resume(folder / "weights" / "last.pt")
    finally:
        cls.save_model, NWDBoxLoss.forward = save_model, forward
        LOGGER.removeHandler(handler)
    return folder, mid, messages, calls


def test_nwd_run_records_c_and_keeps_nwd_on_resume(nwd_run):
    folder, mid, messages, calls = nwd_run
    record = (folder / "loss.yaml").read_text()
    c = yaml.safe_load(record)["loss"]["c"]
    assert record.startswith("# box loss 1 - NWD") and "mean object size" in record and 0 < c < 96
    for ckpt in (mid, folder / "weights" / "best.pt"):  # the checkpoint carries the resolved choice
        saved = torch.load(ckpt, map_location="cpu", weights_only=False)
        model = saved.get("ema") or saved["model"]  # the final strip moves the EMA model to "model"
        assert model.yaml["loss"] == {"box": "nwd", "ratio": 1.0, "c": c, "assigner": False}
    assert f"yolov5-attention: box loss 1 - NWD (C {c:g} px); assigner overlap CIoU" in messages  # the resumed run
    # NWD computed the box loss before the kill and after the resume: training batches and validation's val loss
    assert calls[0] > 0 and calls[1] > 0, calls
    with (folder / "results.csv").open() as fh:
        assert [float(v) for row in csv.DictReader(fh) for k, v in row.items() if k.strip() == "epoch"] == [1, 2]


STOCK = """
import sys
sys.modules["attention"] = None  # any import of ours would fail: this is ultralytics alone
from ultralytics import YOLO
for ckpt in sys.argv[2:]:
    result = YOLO(ckpt).predict(sys.argv[1], imgsz=96, verbose=False)[0]
    print("predicted", ckpt, type(result.boxes).__name__)
"""


def test_nwd_checkpoints_pickle_nothing_of_ours_and_load_in_stock_ultralytics(nwd_run, tiny_data, tmp_path):
    folder, mid, _, _ = nwd_run
    checkpoints = [mid, folder / "weights" / "last.pt", folder / "weights" / "best.pt"]
    for ckpt in checkpoints:
        modules = globals_pickled(ckpt)
        assert modules and not [m for m in modules if m.split(".")[0] == "attention"], (ckpt, modules)
    image = next((tiny_data.parent / "tiny" / "images" / "val").iterdir())
    checkpoints.remove(folder / "weights" / "last.pt")  # the final one holds what best.pt holds
    proc = subprocess.run([sys.executable, "-c", STOCK, str(image), *map(str, checkpoints)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = [line.split()[1:] for line in proc.stdout.splitlines() if line.startswith("predicted ")]
    assert said == [[str(ckpt), "Boxes"] for ckpt in checkpoints]
