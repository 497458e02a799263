"""Inpainting masks: the official convention, user-drawn masks, and seeded training generators.

Convention everywhere: a mask is float32 with 1 = missing (to be filled) and 0 = known.

* `detect_mask(lq)`: the official DifFace rule: a pixel is missing when the sum of its three
  channels is exactly 0, so inputs carry their holes as pure black (truly black known pixels count
  as holes, as in the official code).
* `load_mask(path_or_array, size)`: a user mask (white = missing) of any kind of image, binarised
  and resized with nearest-neighbour sampling to the image it belongs to.
* Training generators (LaMa's generators with DifFace's parameters at 256 px), all
  drawing from a `numpy.random.Generator` passed in (no global RNG): `irregular_mask` (brush
  strokes), `box_mask` (rectangles), `outpainting_mask` (bands along the borders) and
  `mixed_mask` (one of the three, each with probability 1/3). `make_mask(kind, rng, size)`
  dispatches by name (`MASK_KINDS`).
* Faces larger than the model (difface.core.DifFace.inpaint): `known_resize` shrinks a face from its
  known pixels only, and `feathered_mask` is the soft edge with which the enlarged fill is blended in.

Other sizes: the official parameters are for 256 x 256. For an (H, W) mask the geometric
parameters that are lengths in pixels (stroke length and width, box margin and sides) are drawn
on the 256-px scale as officially and multiplied by s = min(H, W) / 256 (rounded to whole pixels,
at least 1), so a mask at 64 px covers the same fraction of the image as one at 256 px, in
distribution. Counts, angles and the outpainting fractions do not depend on the size.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from difface.images import read_image

MASK_KINDS = ("irregular", "box", "outpainting", "mixed")
REFERENCE_SIZE = 256  # the official parameters below are in pixels of a 256 x 256 image

Size = int | tuple[int, int]


def _hw(size: Size) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    if h < 1 or w < 1:
        raise ValueError(f"mask size must be positive, got {size!r}")
    return int(h), int(w)


def _scale(h: int, w: int) -> float:
    return min(h, w) / REFERENCE_SIZE


def detect_mask(lq: torch.Tensor) -> torch.Tensor:
    """Official hole detection: (B, 3, H, W) float -> (B, 1, H, W) float (same dtype/device),
    1 where the channel sum is exactly 0, else 0."""
    if lq.ndim != 4:
        raise ValueError(f"detect_mask expects (B, C, H, W), got {tuple(lq.shape)}")
    return (lq.sum(dim=1, keepdim=True) == 0).to(lq.dtype)


def apply_mask(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The official masked input: image * (1 - mask). image (B, 3, H, W) in [0, 1], mask
    (B, 1, H, W) in {0, 1} -> (B, 3, H, W), exactly 0 in every channel of the holes."""
    return image * (1 - mask.to(image.dtype))


def known_resize(image: torch.Tensor, known: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize (B, C, H, W) images to `size` (h, w) from their known pixels only (known (B, 1, H, W), 1 = known).

    The normalised convolution resize(image * known) / resize(known), with the bicubic antialiased resize of
    the sampler: a plain resize of a face whose hole is zeros darkens the known pixels beside the hole (the
    kernel spans two model pixels), and the model then fills the hole to match that dark rim. Pixels with
    little known support (resize(known) < 0.5: in or at the hole) come out 0. Returns (B, C, h, w).
    """
    known = known.to(image.dtype)
    num = torch.nn.functional.interpolate(image * known, size=size, mode="bicubic", antialias=True)
    den = torch.nn.functional.interpolate(known, size=size, mode="bicubic", antialias=True)
    return torch.where(den >= 0.5, num / den.clamp_min(0.5), torch.zeros_like(num))


# Width, in model pixels, of the soft edge over which an enlarged inpainting fill is blended into a larger face
FEATHER_MODEL_PX = 2


def fill_mask(mask: torch.Tensor, model_size: int) -> torch.Tensor:
    """Where an inpainting fill made at model_size pixels goes into a (B, 1, H, W) face with hole `mask`: the mask
    itself when the face is no larger than the model, else `feathered_mask` over FEATHER_MODEL_PX model pixels
    (known pixels beyond that soft edge are kept exactly)."""
    h, w = mask.shape[-2:]
    return feathered_mask(mask, FEATHER_MODEL_PX * max(h, w) / model_size) if max(h, w) > model_size else mask


def feathered_mask(mask: torch.Tensor, width: float) -> torch.Tensor:
    """A soft edge around a mask: (B, 1, H, W) {0, 1} -> (B, 1, H, W) float32 in [0, 1] (same device).

    1 on the mask, then a smoothstep of the Euclidean distance d to it, 1 - (3 a^2 - 2 a^3) with a = d / width,
    falling to exactly 0 at `width` pixels from the mask and beyond. width <= 0: the mask itself.
    """
    m = (mask > 0.5).float()
    if width <= 0:
        return m
    out = []
    for one in m[:, 0].cpu().numpy():
        d = cv2.distanceTransform((one == 0).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        a = np.clip(d / width, 0.0, 1.0)
        out.append(1.0 - a * a * (3.0 - 2.0 * a))
    return torch.from_numpy(np.stack(out)[:, None].astype(np.float32)).to(mask.device)


# --------------------------------------------------------------------------- user masks


def _to_gray(a: np.ndarray, name: str) -> np.ndarray:
    """(H, W), (H, W, 1|2|3|4) array, uint8/uint16/bool/float in [0, 1] -> (H, W) float32 gray.

    RGB(A) -> BT.601 luma (0.299 R + 0.587 G + 0.114 B); an alpha channel composites the mask onto
    black (transparent = known)."""
    a = np.asarray(a)
    if a.dtype == np.bool_:
        a = a.astype(np.float32)
    elif a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    elif a.dtype == np.uint16:
        a = a.astype(np.float32) / 65535.0
    elif np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer):
        a = a.astype(np.float32)
    else:
        raise ValueError(f"{name}: unsupported mask dtype {a.dtype}")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        return a
    if a.ndim != 3 or a.shape[2] not in (2, 3, 4):
        raise ValueError(f"{name}: a mask must be (H, W) or (H, W, 1|2|3|4), got shape {a.shape}")
    alpha = a[:, :, -1] if a.shape[2] in (2, 4) else None
    if a.shape[2] in (3, 4):
        gray = 0.299 * a[:, :, 0] + 0.587 * a[:, :, 1] + 0.114 * a[:, :, 2]
    else:
        gray = a[:, :, 0]
    return (gray * alpha if alpha is not None else gray).astype(np.float32)


def resize_nearest(a: np.ndarray, size: Size) -> np.ndarray:
    """Nearest-neighbour resize of an (H, W) array to `size` with pixel-centre alignment: output pixel
    i samples input pixel floor((i + 0.5) * H_in / H_out) (same for columns)."""
    h, w = _hw(size)
    hi, wi = a.shape[:2]
    if (hi, wi) == (h, w):
        return a
    rows = np.minimum(((np.arange(h) + 0.5) * hi / h).astype(np.int64), hi - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * wi / w).astype(np.int64), wi - 1)
    return a[rows[:, None], cols[None, :]]


def load_mask(source: str | os.PathLike | np.ndarray | torch.Tensor, size: Size | None = None,
              *, name: str | None = None) -> np.ndarray:
    """A user mask, white = missing -> (H, W) float32 with values in {0, 1} (1 = missing).

    source: an image file (gray, RGB, RGBA, 8 or 16 bit; read by difface.images.read_image) or an
    array/tensor (H, W) or (H, W, C) (uint8 0..255, uint16, bool, or float in [0, 1]). The image is
    converted to gray (BT.601 luma; alpha composites onto black, so transparent = known), then a
    pixel is missing when gray > 0.5. size: target (H, W) (or an int for a square); the binary
    mask is resized with `resize_nearest` (None: keep). `name` labels array sources in errors.

    Raises ValueError naming the file when the mask (after resizing) marks no pixel or every pixel
    as missing, and difface.images.ImageReadError (a ValueError) when the file cannot be read.
    """
    if isinstance(source, (str, os.PathLike)):
        label = name or str(source)
        img = read_image(Path(source))
        gray = _to_gray(img.rgb, label)
        if img.alpha is not None:
            gray = gray * img.alpha
    else:
        label = name or "mask array"
        arr = source.detach().cpu().numpy() if isinstance(source, torch.Tensor) else np.asarray(source)
        gray = _to_gray(arr, label)
    mask = (gray > 0.5).astype(np.float32)
    if size is not None:
        mask = resize_nearest(mask, size)
    covered = float(mask.mean())
    if covered == 0.0:
        raise ValueError(f"{label}: the mask marks no pixel as missing (white = missing); nothing to inpaint")
    if covered == 1.0:
        raise ValueError(f"{label}: the mask marks every pixel as missing (white = missing); nothing is known")
    return np.ascontiguousarray(mask)


# --------------------------------------------------------------------------- training generators


def irregular_mask(rng: np.random.Generator, size: Size, *, strokes: tuple[int, int] = (1, 6),
                   max_segments: int = 5, max_angle: int = 4, max_len: int = 200, max_width: int = 100
                   ) -> np.ndarray:
    """Random brush strokes (LaMa's irregular mask, DifFace's parameters) -> (H, W) float32 {0, 1}.

    Official at 256 px: 1-6 strokes (`strokes`, inclusive); each from a random start
    point with 1..max_segments straight segments drawn with cv2.line; segment angle
    0.01 + integers(max_angle) radians, mirrored to 2 pi - angle for the 1st, 3rd, ... stroke;
    length 10 + integers(max_len) px; brush width 5 + integers(max_width) px. Lengths and widths
    are scaled by min(H, W) / 256 (module docstring); end points are clipped to the image.
    """
    h, w = _hw(size)
    s = _scale(h, w)
    mask = np.zeros((h, w), np.float32)
    for i in range(int(rng.integers(strokes[0], strokes[1] + 1))):
        x, y = int(rng.integers(w)), int(rng.integers(h))
        for _ in range(1 + int(rng.integers(max_segments))):
            angle = 0.01 + int(rng.integers(max_angle))
            if i % 2 == 0:
                angle = 2 * math.pi - angle
            length = (10 + int(rng.integers(max_len))) * s
            width = max(1, round((5 + int(rng.integers(max_width))) * s))
            x2 = int(np.clip(int(x + length * math.sin(angle)), 0, w))
            y2 = int(np.clip(int(y + length * math.cos(angle)), 0, h))
            cv2.line(mask, (x, y), (x2, y2), 1.0, width)
            x, y = x2, y2
    return mask


def box_mask(rng: np.random.Generator, size: Size, *, boxes: tuple[int, int] = (1, 4), margin: int = 10,
             min_side: int = 30, max_side: int = 150) -> np.ndarray:
    """Random rectangles (LaMa's box mask, DifFace's parameters) -> (H, W) float32 {0, 1}.

    Official at 256 px: 1-4 boxes (`boxes`, inclusive), each side min_side..max_side px
    (inclusive, capped at the image side minus two margins), placed fully inside a `margin`-px
    border. Sides and margin are scaled by min(H, W) / 256.
    """
    h, w = _hw(size)
    s = _scale(h, w)
    m = round(margin * s)
    mask = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(boxes[0], boxes[1] + 1))):
        bw = max(1, min(round(int(rng.integers(min_side, max_side + 1)) * s), w - 2 * m))
        bh = max(1, min(round(int(rng.integers(min_side, max_side + 1)) * s), h - 2 * m))
        x0 = int(rng.integers(m, max(m, w - m - bw) + 1))
        y0 = int(rng.integers(m, max(m, h - m - bh) + 1))
        mask[y0:y0 + bh, x0:x0 + bw] = 1.0
    return mask


def outpainting_mask(rng: np.random.Generator, size: Size, *, min_pad: float = 0.04, max_pad: float = 0.30,
                     side_prob: float = 0.5) -> np.ndarray:
    """Bands along the borders (LaMa's outpainting mask, DifFace's parameters) -> (H, W) float32 {0, 1}.

    Official: each of the four sides (left, top, right, bottom) is masked with
    probability `side_prob`; when none is, one side is chosen uniformly. A masked side loses
    k = integers(int(min_pad * S), int(max_pad * S)) pixels (S its length across; at least 1).
    Fractions, so no further scaling.
    """
    h, w = _hw(size)
    mask = np.zeros((h, w), np.float32)

    def pad(n: int) -> int:
        lo, hi = int(min_pad * n), int(max_pad * n)
        return max(1, int(rng.integers(lo, hi)) if hi > lo else lo)

    sides = [bool(rng.random() < side_prob) for _ in range(4)]
    if not any(sides):
        sides[int(rng.integers(4))] = True
    for side, on in enumerate(sides):
        if not on:
            continue
        if side == 0:
            mask[:, : pad(w)] = 1.0
        elif side == 1:
            mask[: pad(h), :] = 1.0
        elif side == 2:
            mask[:, w - pad(w):] = 1.0
        else:
            mask[h - pad(h):, :] = 1.0
    return mask


def mixed_mask(rng: np.random.Generator, size: Size,
               probs: Sequence[float] = (1 / 3, 1 / 3, 1 / 3)) -> np.ndarray:
    """One of irregular / box / outpainting, chosen with `probs` (official: 1/3 each), then drawn
    from the same generator -> (H, W) float32 {0, 1}."""
    p = np.asarray(probs, dtype=np.float64)
    kind = int(rng.choice(3, p=p / p.sum()))
    return (irregular_mask, box_mask, outpainting_mask)[kind](rng, size)


def make_mask(kind: str, rng: np.random.Generator, size: Size) -> np.ndarray:
    """Dispatch by name: kind in MASK_KINDS -> (H, W) float32 {0, 1} (1 = missing)."""
    fns = {"irregular": irregular_mask, "box": box_mask, "outpainting": outpainting_mask, "mixed": mixed_mask}
    if kind not in fns:
        raise ValueError(f"unknown mask kind {kind!r}; known: {', '.join(MASK_KINDS)}")
    return fns[kind](rng, size)


def seeded_mask(kind: str, size: Size, *keys: int) -> np.ndarray:
    """make_mask with the generator default_rng(keys) (e.g. (seed, index)): the same mask on every
    machine and run, for fixed validation / evaluation masks."""
    return make_mask(kind, np.random.default_rng([int(k) for k in keys]), size)


__all__ = [
    "MASK_KINDS", "apply_mask", "box_mask", "detect_mask", "irregular_mask", "load_mask", "make_mask",
    "mixed_mask", "outpainting_mask", "resize_nearest", "seeded_mask",
]
