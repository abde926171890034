"""Attention maps: where each inserted block looks, overlaid on the image, one PNG per block.

    yolov5-attention maps --weights runs/train/exp/weights/best.pt --source img.jpg [--imgsz 640]
                          [--project runs/maps --name exp] [--exist-ok]

writes runs/maps/exp/<image stem>_layer<i>_<Block>.png for every attention block in the model
(plain, or wrapped for --attn-init identity). What a PNG shows depends on the block:

- spatial gates it computes itself: CBAM's spatial gate Ms, CA's a_h * a_w (mean over channels);
- MHSA: the attention each position receives (its column of the softmax, averaged over heads and queries);
- channel-only blocks (SE, ECA, SOCA): the channel weights, mean over space of out / in, as a bar plot
  beside the image;
- any other block: the per-position energy ratio sum_c |out| / sum_c |in|, i.e. how much the block
  amplifies or suppresses each position.

Spatial maps are min-max scaled, upsampled to the image and drawn with a colour map at 50 % opacity.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from attention.adapter.api import YOLO, increment_path
from attention.adapter.weights import resolve_weights
from attention.blocks.gate import is_attention, unwrap

CHANNEL_ONLY = {"SE", "ECA", "SOCA"}
EPS = 1e-6


def _letterbox(img: np.ndarray, imgsz: int, stride: int = 32) -> tuple[np.ndarray, tuple[int, int]]:
    """Resize so the long side is imgsz, pad bottom/right to a multiple of stride; returns (padded, (h, w) used)."""
    h0, w0 = img.shape[:2]
    r = imgsz / max(h0, w0)
    h, w = max(1, round(h0 * r)), max(1, round(w0 * r))
    resized = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR if r > 1 else cv2.INTER_AREA)
    ph, pw = -(-h // stride) * stride, -(-w // stride) * stride
    padded = np.full((ph, pw, 3), 114, dtype=np.uint8)
    padded[:h, :w] = resized
    return padded, (h, w)


def _spatial_gate(block: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """The block's own spatial attention (N, H, W) where it has one, recomputed from its input."""
    name = type(block).__name__
    try:
        if name == "CBAM":
            n, c = x.shape[:2]
            mlp = block.mlp
            pooled = torch.cat([x.mean(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True)])
            mc = torch.sigmoid(mlp(pooled[:n]) + mlp(pooled[n:]))
            x1 = x * mc
            desc = torch.cat([x1.mean(dim=1, keepdim=True), x1.amax(dim=1, keepdim=True)], dim=1)
            return torch.sigmoid(block.spatial(desc))[:, 0]
        if name == "CA":
            h = x.shape[2]
            y = torch.cat([x.mean(dim=3, keepdim=True), x.mean(dim=2, keepdim=True).transpose(2, 3)], dim=2)
            y = block.act(block.bn1(block.conv1(y)))
            a_h = torch.sigmoid(block.conv_h(y[:, :, :h]))  # (N, C, H, 1)
            a_w = torch.sigmoid(block.conv_w(y[:, :, h:].transpose(2, 3)))  # (N, C, 1, W)
            return (a_h * a_w).mean(dim=1)
        if name == "MHSA":
            a = block.attention(x)  # (N, heads, HW, HW): row = query, column = key
            return a.mean(dim=(1, 2)).view(x.shape[0], *x.shape[2:])
    except (AttributeError, RuntimeError, TypeError):  # a block whose layout changed: fall back to the ratio
        return None
    return None


def block_attention(block: nn.Module, x: torch.Tensor, out: torch.Tensor) -> tuple[str, np.ndarray]:
    """('spatial', (H, W) map) or ('channel', (C,) weights) for the first image of a batch."""
    inner = unwrap(block)
    name = type(inner).__name__
    if name in CHANNEL_ONLY:
        w = out.abs().sum(dim=(2, 3)) / (x.abs().sum(dim=(2, 3)) + EPS)  # mean over space of out / in
        return "channel", w[0].float().cpu().numpy()
    gate = _spatial_gate(inner, x)
    if gate is None:
        gate = out.abs().sum(dim=1) / (x.abs().sum(dim=1) + EPS)  # energy ratio out / in per position
    return "spatial", gate[0].float().cpu().numpy()


def _overlay(img: np.ndarray, amap: np.ndarray, used: tuple[int, int], padded: tuple[int, int]) -> np.ndarray:
    """Colour map of amap (on the padded letterbox grid) over img, at img's size."""
    lo, hi = float(amap.min()), float(amap.max())
    norm = (amap - lo) / (hi - lo) if hi - lo > 1e-12 else np.zeros_like(amap)
    up = cv2.resize(norm.astype(np.float32), (padded[1], padded[0]), interpolation=cv2.INTER_LINEAR)
    up = up[: used[0], : used[1]]  # drop the padding, then back to the original size
    up = cv2.resize(up, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_img, ax_bar) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [1, 2]})
    ax_img.imshow(img[:, :, ::-1])
    ax_img.axis("off")
    ax_bar.bar(np.arange(len(weights)), weights, width=1.0, color="tab:orange")
    ax_bar.set_xlabel("channel")
    ax_bar.set_ylabel("weight (mean over space of out / in)")
    ax_bar.set_xlim(-0.5, len(weights) - 0.5)
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
    """Run the model on one image and save one overlay PNG per attention block; returns the PNG paths."""
    src = Path(source)
    if not src.is_file():
        raise FileNotFoundError(f"--source not found: {source}")
    img = cv2.imread(str(src))
    if img is None:
        raise FileNotFoundError(f"--source is not an image OpenCV can read: {source}")
    model = weights if isinstance(weights, nn.Module) else _model(str(weights))
    layers = model.model if hasattr(model, "model") else model
    blocks = [(i, m) for i, m in enumerate(layers) if is_attention(m)]
    if not blocks:
        raise ValueError(f"no attention blocks in {weights if not isinstance(weights, nn.Module) else 'the model'}")

    padded, used = _letterbox(img, imgsz)
    x = torch.from_numpy(padded[:, :, ::-1].copy()).permute(2, 0, 1).float().div(255).unsqueeze(0)
    p = next(model.parameters())
    x = x.to(device=p.device, dtype=p.dtype)

    seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, i=i: seen.__setitem__(i, (inp[0], out))) for i, m in blocks]
    try:
        with torch.no_grad():
            model(x)
            results: list[tuple[int, nn.Module, Any]] = [(i, m, block_attention(m, *seen[i])) for i, m in blocks]
    finally:
        for h in hooks:
            h.remove()

    save_dir = increment_path(Path(project) / name, exist_ok=exist_ok)  # exp, exp-2, ... like the scripts
    save_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, m, (kind, amap) in results:
        block = type(unwrap(m)).__name__
        fh, fw = seen[i][0].shape[2:]
        stride = padded.shape[0] // fh
        title = f"layer {i} {block} on P{int(np.log2(stride))}/{stride} ({fh}x{fw})"
        path = save_dir / f"{src.stem}_layer{i}_{block}.png"
        if kind == "channel":
            _bar_plot(img, amap, title, path)
        else:
            cv2.imwrite(str(path), _label(_overlay(img, amap, used, padded.shape[:2]), title))
        paths.append(path)
    print(f"{len(paths)} attention map(s) saved to {save_dir}")
    return paths
