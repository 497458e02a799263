"""Background upsamplers for whole photos: Real-ESRGAN x2 (RRDBNet, tiled, as the official code) or Lanczos.

An upsampler is a callable `(rgb, scale) -> rgb_up`: rgb (H, W, 3) float32 in [0, 1] ->
(round(scale H), round(scale W), 3) float32 in [0, 1].
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from difface.backends import RUNTIMES
from difface.backends.background import RuntimeRRDBNet
from difface.models.rrdbnet import RRDBNet
from difface.weights import cache_dir, entry, load_weights, local_path

log = logging.getLogger(__name__)

Upsampler = Callable[[np.ndarray, float], np.ndarray]


def note_lanczos_fallback(upscale: float | None = None) -> None:
    """Log that the background is upscaled with Lanczos because the Real-ESRGAN x2 weights are not cached.

    How to get them (the download command, and where to put the file when this machine is offline) is
    said once: a marker file in the weights cache remembers it, and later runs get one short line. With
    `upscale` <= 1 the background is not enlarged, the weights would not help, and nothing is suggested."""
    if upscale is not None and upscale <= 1:
        log.debug("background: kept at its size (upscale %g)", upscale)
        return
    marker = cache_dir() / ".realesrgan-x2-suggested"
    if marker.is_file():
        log.info("background: Lanczos (Real-ESRGAN x2 weights not cached)")
        return
    log.info("background: Lanczos, as the Real-ESRGAN x2 weights are not cached. For a sharper background, "
             "online: difface weights download realesrgan-x2; offline: fetch %s on another machine and put it at "
             "%s. (Said once; later runs only name the upsampler.)", entry("realesrgan-x2").url,
             local_path("realesrgan-x2"))
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError:  # a read-only cache: the suggestion comes again next time
        pass


def target_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """Output (H, W) for an upscale factor: round(scale * side), at least 1."""
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def resize_to(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Resize (H, W[, C]) float32 to hw with Lanczos-4 (INTER_AREA when shrinking), clipped to [0, 1]."""
    if img.shape[:2] == tuple(hw):
        return np.ascontiguousarray(img, np.float32)
    shrink = hw[0] < img.shape[0] and hw[1] < img.shape[1]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LANCZOS4
    out = cv2.resize(np.ascontiguousarray(img, np.float32), (hw[1], hw[0]), interpolation=interp)
    return np.clip(out, 0.0, 1.0)


def lanczos_upsampler(rgb: np.ndarray, scale: float) -> np.ndarray:
    """Offline fallback background upsampler: cv2.INTER_LANCZOS4 resize by `scale`."""
    return resize_to(rgb, target_size(*rgb.shape[:2], scale))


def tiled_forward(model: torch.nn.Module, x: torch.Tensor, scale: int, tile: int = 400, tile_pad: int = 10,
                  progress: bool = False) -> torch.Tensor:
    """Run an x`scale` network over (1, C, H, W) in tiles (Real-ESRGAN's `tile_process`).

    Tiles of `tile` px (0 = whole image) are run with `tile_pad` px of context clamped to the image;
    the central scale x region of each output tile is placed on the output canvas. The result equals
    the untiled forward when tile_pad covers the network's receptive field.
    Returns (1, C_out, scale H, scale W).
    """
    _, _, h, w = x.shape
    if tile <= 0 or (h <= tile and w <= tile):
        return model(x)
    out = None
    grid = [(ty, tx) for ty in range(math.ceil(h / tile)) for tx in range(math.ceil(w / tile))]
    for ty, tx in tqdm(grid, desc="background tiles", disable=not progress, leave=False):
        y0, x0 = ty * tile, tx * tile
        y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
        py0, px0 = max(y0 - tile_pad, 0), max(x0 - tile_pad, 0)
        py1, px1 = min(y1 + tile_pad, h), min(x1 + tile_pad, w)
        y = model(x[:, :, py0:py1, px0:px1])
        if out is None:
            out = x.new_zeros((1, y.shape[1], h * scale, w * scale), dtype=y.dtype)
        oy, ox = (y0 - py0) * scale, (x0 - px0) * scale
        out[:, :, y0 * scale:y1 * scale, x0 * scale:x1 * scale] = (
            y[:, :, oy:oy + (y1 - y0) * scale, ox:ox + (x1 - x0) * scale]
        )
    return out


class RealESRGANUpsampler:
    """Real-ESRGAN x2 background upsampler (as the official `RealESRGANer`): reflect-pad to even size, tiled RRDBNet,
    crop, clamp; a Lanczos-4 resize afterwards when the requested scale is not the network's.

    `model` is an RRDBNet or the path of RealESRGAN_x2plus.pth; `dtype` float16 mirrors the
    official half=True on CUDA (CPU stays float32); `backend` onnxruntime / openvino runs the network's
    graph there (difface.backends.background), on the CPU in float32.
    """

    def __init__(self, model: RRDBNet | str | os.PathLike, *, tile: int = 400, tile_pad: int = 10,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 progress: bool = False, backend: str = "torch") -> None:
        net = model if isinstance(model, RRDBNet) else load_rrdbnet(str(model))
        # the same tiles through onnxruntime / openvino (outputs within ~1e-5 of torch)
        if backend not in RUNTIMES or RUNTIMES[backend].build is not None:
            device, dtype = "cpu", torch.float32
            net = RuntimeRRDBNet(net.eval(), backend)
        self.device, self.dtype = torch.device(device), dtype
        self.net = net.to(self.device, self.dtype).eval()
        self.mod = self.net.unshuffle
        self.tile = -(-tile // self.mod) * self.mod if tile > 0 else 0
        self.tile_pad = -(-tile_pad // self.mod) * self.mod
        self.progress = progress

    @torch.inference_mode()
    def __call__(self, rgb: np.ndarray, scale: float = 2.0) -> np.ndarray:
        """rgb (H, W, 3) float32 in [0, 1] -> (round(scale H), round(scale W), 3) float32 in [0, 1]."""
        h, w = rgb.shape[:2]
        ph, pw = (-h) % self.mod, (-w) % self.mod
        img = np.ascontiguousarray(rgb, np.float32)
        if ph or pw:  # reflect needs a side > pad; edge-replicate 1-pixel-wide images instead
            mode = "reflect" if min(h, w) > 1 else "edge"
            img = np.pad(img, ((0, ph), (0, pw), (0, 0)), mode=mode)
        x = torch.from_numpy(img.transpose(2, 0, 1).copy())[None].to(self.device, self.dtype)
        y = tiled_forward(self.net, x, self.net.scale, self.tile, self.tile_pad, self.progress)
        s = self.net.scale
        out = y[0, :, : h * s, : w * s].float().clamp_(0, 1).permute(1, 2, 0).cpu().numpy()
        return resize_to(out, target_size(h, w, scale))


def get_bg_upsampler(weights: str | os.PathLike | None, *, tile: int = 400, device: str = "cpu",
                     dtype: torch.dtype = torch.float32) -> Upsampler:
    """Real-ESRGAN when `weights` names an existing file, else the Lanczos fallback (logged)."""
    if weights is not None and Path(weights).is_file():
        return RealESRGANUpsampler(weights, tile=tile, device=device, dtype=dtype)
    if weights is not None:
        log.warning("%s: Real-ESRGAN weights not found; upscaling the background with Lanczos", weights)
    return lanczos_upsampler


def load_rrdbnet(path: str, scale: int = 2) -> RRDBNet:
    """RRDBNet with a Real-ESRGAN checkpoint loaded strictly (`params_ema`, else `params`, or bare).

    .pth files are read with torch.load(weights_only=True); .safetensors are accepted too.
    """
    return load_weights(RRDBNet(scale=scale), path).eval()
