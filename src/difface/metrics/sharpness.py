"""Sharpness of restorations relative to the truth: Sobel gradient energy.

`gradient_energy(img)`: the mean over pixels of Gx^2 + Gy^2, with Gx, Gy the 3x3 Sobel responses
(cv2.Sobel, reflect-101 border) of the BT.601 luma on [0, 1] (Y = 0.299 R + 0.587 G + 0.114 B of the
float image, no rounding). A flat image scores 0; blurring lowers the score, noise and ringing
raise it.

`sharpness_ratio(preds, gts)`: the set's mean energy of the outputs over the mean energy of their
ground truths (a ratio of means, so faces with little texture weigh less than in a mean of
ratios). 1 means as much edge energy as the truth; below 1 smoother (the blurry estimator), above 1
more (noise, halos, invented texture).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

_LUMA = np.array([0.299, 0.587, 0.114])


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
