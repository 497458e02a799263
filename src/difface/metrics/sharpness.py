"""Sharpness of restorations relative to the truth (Sobel gradient energy), and how much of its input's
fine detail a restoration keeps (Laplacian energy where it changed the input).

`gradient_energy(img)`: the mean over pixels of Gx^2 + Gy^2, with Gx, Gy the 3x3 Sobel responses
(cv2.Sobel, reflect-101 border) of the BT.601 luma on [0, 1] (Y = 0.299 R + 0.587 G + 0.114 B of the
float image, no rounding). A flat image scores 0; blurring lowers the score, noise and ringing
raise it.

`sharpness_ratio(preds, gts)`: the set's mean energy of the outputs over the mean energy of their
ground truths (a ratio of means, so faces with little texture weigh less than in a mean of
ratios). 1 means as much edge energy as the truth; below 1 smoother (the blurry estimator), above 1
more (noise, halos, invented texture).

`detail_ratio(out, inp)` (no truth needed; the no-harm check of a restorer on sharp faces): with
L the 4-neighbour Laplacian (cv2.Laplacian ksize 1: [[0, 1, 0], [1, -4, 1], [0, 1, 0]], reflect-101
border) of the BT.601 luma on [0, 1], and the "changed" mask M = |Y(out) - Y(inp)| > `CHANGE_THRESHOLD`
(2/255: above the rounding of 8-bit files), the ratio sum_M L(out)^2 / sum_M L(inp)^2. 1: the output
has as much fine detail as its input where it changed it; 0.01: a blur (a 512 px face restored at
64 px and enlarged). 1.0 when nothing changed (M empty: nothing was lost). Same-size images only.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

_LUMA = np.array([0.299, 0.587, 0.114])

CHANGE_THRESHOLD = 2.0 / 255.0


def gradient_energy(img: np.ndarray) -> float:
    """Mean Sobel gradient energy of an (H, W, 3) RGB or (H, W) gray image in [0, 1]."""
    x = np.asarray(img, dtype=np.float64)
    if x.ndim == 3 and x.shape[2] == 3:
        x = x @ _LUMA
    elif x.ndim != 2:
        raise ValueError(f"expected an (H, W, 3) RGB or (H, W) image, got shape {x.shape}")
    gx = cv2.Sobel(x, cv2.CV_64F, 1, 0, ksize=3, borderType=cv2.BORDER_REFLECT_101)
    gy = cv2.Sobel(x, cv2.CV_64F, 0, 1, ksize=3, borderType=cv2.BORDER_REFLECT_101)
    return float(np.mean(gx * gx + gy * gy))


def sharpness_ratio(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray]) -> float:
    """sum(gradient_energy(pred)) / sum(gradient_energy(gt)) over paired images."""
    if len(preds) != len(gts) or len(preds) == 0:
        raise ValueError(f"need the same positive number of outputs and truths, got {len(preds)} and {len(gts)}")
    den = sum(gradient_energy(g) for g in gts)
    if den <= 0:
        raise ValueError("the ground truths have no gradient energy (flat images)")
    return sum(gradient_energy(p) for p in preds) / den


def _luma(img: np.ndarray) -> np.ndarray:
    x = np.asarray(img, dtype=np.float64)
    if x.ndim == 3 and x.shape[2] == 3:
        return x @ _LUMA
    if x.ndim != 2:
        raise ValueError(f"expected an (H, W, 3) RGB or (H, W) image, got shape {x.shape}")
    return x


def laplacian_map(img: np.ndarray) -> np.ndarray:
    """(H, W) float64 4-neighbour Laplacian of the luma of an (H, W, 3) RGB or (H, W) image in [0, 1]."""
    return cv2.Laplacian(_luma(img), cv2.CV_64F, ksize=1, borderType=cv2.BORDER_REFLECT_101)


def changed_mask(out: np.ndarray, inp: np.ndarray, threshold: float = CHANGE_THRESHOLD) -> np.ndarray:
    """(H, W) bool: where the luma of `out` differs from that of `inp` by more than `threshold` (of [0, 1])."""
    a, b = _luma(out), _luma(inp)
    if a.shape != b.shape:
        raise ValueError(f"output {a.shape} and input {b.shape} differ in size")
    return np.abs(a - b) > threshold


def detail_ratio(out: np.ndarray, inp: np.ndarray, threshold: float = CHANGE_THRESHOLD) -> float:
    """Laplacian energy of `out` over that of `inp` where `out` changed (see the module docstring).

    out, inp: same-size (H, W, 3) RGB or (H, W) images in [0, 1]. 1.0 when nothing changed; inf when the
    input is flat where the output changed."""
    m = changed_mask(out, inp, threshold)
    if not m.any():
        return 1.0
    den = float(np.sum(laplacian_map(inp)[m] ** 2))
    num = float(np.sum(laplacian_map(out)[m] ** 2))
    return num / den if den > 0 else float("inf")
