"""Attention maps: where each attention block looks, overlaid on the image, one PNG per block.

    yolov5-attention maps --weights runs/train/exp/weights/best.pt --source img.jpg [--imgsz 640]
                          [--project runs/maps --name exp] [--exist-ok]

writes runs/maps/exp/<image stem>_layer<where>_<Block>.png for every attention block in the model, wherever it
sits: a layer of its own (24), inside a C3Attn (17.attn), in a repeated row (24.0, 24.1), plain or wrapped
for --attn-init identity. What a PNG shows is what the block computed in this forward pass, read from its
taps (attention.blocks.taps), never recomputed here:

- a block with gates that vary over space (CBAM's Ms, CA's a_h * a_w, GAM, NAM, SimAM, ShuffleAttention's spatial
  half): their product, averaged over channels; self-attention (MHSA, CrissCrossAttention): the attention each
  position receives. Min-max scaled, upsampled to the image and drawn with a colour map at 50 % opacity;
- a block with channel weights only (SE, ECA, SOCA; SKAttention's and S2Attention's branch weights): a bar plot
  of the weights per channel beside the image.

The image is letterboxed by ultralytics' own LetterBox, as its predictor does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from attention.adapter.api import YOLO, LetterBox, increment_path
from attention.adapter.weights import resolve_weights
from attention.blocks.gate import IdentityGate
from attention.blocks.registry import is_block
from attention.blocks.taps import channel_weights, spatial_map, taps
from attention.errors import MissingFileError, UserError


@dataclass
class BlockMap:
    """What one block computed on the image: a spatial map (H, W) of its feature grid, or channel weights (S, C)."""

    where: str  # its place in the model: '24', '17.attn', '24.1'
    block: str  # its class name
    grid: tuple[int, int]  # (H, W) of its input feature map
    kind: str  # 'spatial' or 'channel'
    values: np.ndarray


def attention_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(place, block) of every registered attention block in the model, in forward order of the layer list.

    The place is its path under the layer list, with an IdentityGate's inner name left out: '24', '17.attn', '24.1'.
    """
    layers = model.model if isinstance(getattr(model, "model", None), nn.Sequential) else model
    gates = {name for name, m in layers.named_modules() if isinstance(m, IdentityGate)}
    found = []
    for name, m in layers.named_modules():
        if is_block(m):
            parent, _, leaf = name.rpartition(".")
            found.append((parent if leaf == "block" and parent in gates else name, m))
    return found


def block_maps(model: nn.Module, image: torch.Tensor) -> list[BlockMap]:
    """Run the model on one (1, 3, H, W) image and return what every attention block's taps saw."""
    blocks = attention_blocks(model)
    seen: dict[int, dict[str, tuple[str, list[torch.Tensor]]]] = {}
    grids: dict[int, tuple[int, int]] = {}
    hooks = []
    for k, (_, block) in enumerate(blocks):
        seen[k] = {}
        hooks.append(block.register_forward_pre_hook(lambda _m, i, k=k: grids.__setitem__(k, tuple(i[0].shape[2:]))))
        for name, (kind, tap) in taps(block).items():
            outputs: list[torch.Tensor] = []
            seen[k][name] = (kind, outputs)
            hooks.append(tap.register_forward_hook(lambda _m, _i, out, outputs=outputs: outputs.append(out.detach())))
    try:
        with torch.no_grad():
            model(image)
    finally:
        for h in hooks:
            h.remove()
    out = []
    for k, (where, block) in enumerate(blocks):
        if k not in grids:  # a block this forward did not reach
            continue
        h, w = grids[k]
        spatial = spatial_map(seen[k], image.shape[0], h, w)
        channel = channel_weights(seen[k], image.shape[0])
        if spatial is not None:
            out.append(BlockMap(where, type(block).__name__, (h, w), "spatial", spatial[0].cpu().numpy()))
        elif channel is not None:
            out.append(BlockMap(where, type(block).__name__, (h, w), "channel", channel[0].cpu().numpy()))
    return out


def letterbox(img: np.ndarray, imgsz: int, stride: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """ultralytics' letterbox of a BGR image, as its predictor makes it; returns (padded, (top, left, h, w) of the
    image inside it), the placement read from a letterboxed blank image (its padding is grey, the image black)."""
    box = LetterBox(new_shape=(imgsz, imgsz), auto=True, stride=stride)
    placed = (box(image=np.zeros_like(img)) == 0).all(axis=2)
    rows, cols = np.flatnonzero(placed.any(axis=1)), np.flatnonzero(placed.any(axis=0))
    return box(image=img), (int(rows[0]), int(cols[0]), len(rows), len(cols))


def _overlay(img: np.ndarray, amap: np.ndarray, padded: tuple[int, int],
             inside: tuple[int, int, int, int]) -> np.ndarray:
    """Colour map of amap (a feature grid over the letterboxed image) over img, at img's size."""
    lo, hi = float(amap.min()), float(amap.max())
    norm = (amap - lo) / (hi - lo) if hi - lo > 1e-12 else np.zeros_like(amap)
    up = cv2.resize(norm.astype(np.float32), (padded[1], padded[0]), interpolation=cv2.INTER_LINEAR)
    top, left, h, w = inside
    up = cv2.resize(up[top:top + h, left:left + w], (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
    color = cv2.applyColorMap(np.clip(up * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.addWeighted(img, 0.5, color, 0.5, 0)


def _label(img: np.ndarray, text: str) -> np.ndarray:
    scale = max(0.35, img.shape[1] / 1000)
    thick = max(1, round(scale * 2))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    cv2.rectangle(img, (0, 0), (tw + 6, th + base + 6), (0, 0, 0), -1)
    cv2.putText(img, text, (3, th + 3), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return img


def _bar_plot(img: np.ndarray, weights: np.ndarray, title: str, path: Path) -> None:
    """The image beside its channel weights: one series (a gate) or one per branch, stacked (branch weights)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_img, ax_bar) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [1, 2]})
    ax_img.imshow(img[:, :, ::-1])
    ax_img.axis("off")
    x = np.arange(weights.shape[1])
    bottom = np.zeros(weights.shape[1])
    for s, series in enumerate(weights):
        ax_bar.bar(x, series, width=1.0, bottom=bottom, label=f"branch {s + 1}" if len(weights) > 1 else None)
        bottom += series
    ax_bar.set_xlabel("channel")
    ax_bar.set_ylabel("branch weights" if len(weights) > 1 else "channel weight")
    ax_bar.set_xlim(-0.5, weights.shape[1] - 0.5)
    if len(weights) > 1:
        ax_bar.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _model(weights: str) -> nn.Module:
    return YOLO(resolve_weights(weights)).model.float().eval()


def attention_maps(
    weights: str | Path | nn.Module,
    source: str | Path,
    imgsz: int = 640,
    project: str | Path = "runs/maps",
    name: str = "exp",
    exist_ok: bool = False,
) -> list[Path]:
    """Run the model on one image and save one PNG per attention block; returns the PNG paths."""
    src = Path(source)
    if not src.is_file():
        raise MissingFileError(f"--source not found: {source}")
    img = cv2.imread(str(src))
    if img is None:
        raise UserError(f"--source is not an image OpenCV can read: {source}")
    model = weights if isinstance(weights, nn.Module) else _model(str(weights))
    what = "the model" if isinstance(weights, nn.Module) else weights
    if not attention_blocks(model):
        raise UserError(f"no attention blocks in {what}")
    stride = int(max(getattr(model, "stride", torch.tensor([32])).max(), 32))
    padded, inside = letterbox(img, imgsz, stride)
    x = torch.from_numpy(padded[:, :, ::-1].copy()).permute(2, 0, 1).float().div(255).unsqueeze(0)
    p = next(model.parameters())
    results = block_maps(model.eval(), x.to(device=p.device, dtype=p.dtype))
    if not results:
        raise UserError(f"the attention blocks of {what} have no gate or attention weights to draw (no taps: "
                        "attention.blocks.taps)")
    drawn = {r.where for r in results}
    for where, block in attention_blocks(model):
        if where not in drawn:
            print(f"layer {where} {type(block).__name__}: no gate or attention weights to draw (no taps), left out")

    save_dir = increment_path(Path(project) / name, exist_ok=exist_ok)  # exp, exp-2, ... like the scripts
    save_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for r in results:
        fh, fw = r.grid
        s = padded.shape[0] // fh
        title = f"layer {r.where} {r.block} on P{int(np.log2(s))}/{s} ({fh}x{fw})"
        path = save_dir / f"{src.stem}_layer{r.where}_{r.block}.png"
        if r.kind == "channel":
            _bar_plot(img, r.values, title, path)
        else:
            cv2.imwrite(str(path), _label(_overlay(img, r.values, padded.shape[:2], inside), title))
        paths.append(path)
    print(f"{len(paths)} attention map(s) saved to {save_dir}")
    return paths
