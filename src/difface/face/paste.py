"""Paste restored face crops back into an (upscaled) image (as the official `paste_faces_to_input_image`).

Convention: `matrices` are the (2, 3) image -> crop matrices of `align.align_faces`; the canvas is
the input upscaled by `upscale`, and a pixel centre x of the input lands at upscale * x +
(upscale - 1) / 2 of the canvas (exact for pixel grids; the official code adds upscale / 2, a
half-pixel shift at x2). All images are float32 RGB in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

# A face-parsing hook: restored crop (S, S, 3) float32 [0, 1] -> face-region mask (S, S) in [0, 1].
MaskFn = Callable[[np.ndarray], np.ndarray]


def inverse_affine(matrix: np.ndarray, upscale: float) -> np.ndarray:
    """(2, 3) crop -> canvas matrix for an image -> crop `matrix` and a canvas `upscale` x the image."""
    inv = cv2.invertAffineTransform(np.asarray(matrix, np.float64)) * upscale
    inv[:, 2] += (upscale - 1) / 2.0
    return inv


def _roi(inv: np.ndarray, size: int, margin: int, canvas_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """Canvas rectangle (x0, y0, x1, y1) covering the warped crop plus `margin`, clipped."""
    c = np.array([[-0.5, -0.5], [size - 0.5, -0.5], [-0.5, size - 0.5], [size - 0.5, size - 0.5]])
    p = c @ inv[:, :2].T + inv[:, 2]
    h, w = canvas_hw
    x0, y0 = np.floor(p.min(0)).astype(int) - margin
    x1, y1 = np.ceil(p.max(0)).astype(int) + margin + 1
    return max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)


def _shifted(inv: np.ndarray, x0: int, y0: int) -> np.ndarray:
    out = inv.copy()
    out[:, 2] -= (x0, y0)
    return out


def _antialiased(face: np.ndarray, inv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pre-shrink a crop with INTER_AREA when the warp shrinks it (bilinear warps alias there)."""
    scale = float(np.sqrt(abs(np.linalg.det(inv[:, :2]))))
    size = face.shape[0]
    small = max(2, int(round(size * scale)))
    if scale >= 0.9 or small >= size:
        return face, inv
    r = small / size  # crop q -> q' = (q + 0.5) r - 0.5, so q = (q' + 0.5) / r - 0.5
    back = np.array([[1 / r, 0, 0.5 / r - 0.5], [0, 1 / r, 0.5 / r - 0.5], [0, 0, 1]])
    return cv2.resize(face, (small, small), interpolation=cv2.INTER_AREA), inv @ back


def soft_mask(inv: np.ndarray, size: int, out_wh: tuple[int, int], upscale: float) -> np.ndarray:
    """Feathered paste mask (the official soft mask) in canvas pixels of a region `out_wh` (w, h).

    A square of ones warped with `inv` and eroded by ceil(upscale) px; then with
    w_edge = int(sqrt(area)) // 20: eroded by w_edge px more and Gaussian-blurred with
    kernel 2 w_edge + 1 (sigma from the kernel size). The kernels are odd and centred; the
    official even (2 upscale)^2 and (2 w_edge)^2 kernels shift the mask half a pixel towards the
    bottom right and leave its bottom/right edge uneroded at upscale 1. Returns (h, w) float32.
    """
    m = cv2.warpAffine(np.ones((size, size), np.float32), inv, out_wh)
    k = int(np.ceil(upscale))
    m = cv2.erode(m, np.ones((2 * k + 1, 2 * k + 1), np.uint8))
    w_edge = int(np.sqrt(float(m.sum()))) // 20
    if w_edge > 0:
        m = cv2.erode(m, np.ones((2 * w_edge + 1, 2 * w_edge + 1), np.uint8))
        m = cv2.GaussianBlur(m, (2 * w_edge + 1, 2 * w_edge + 1), 0)
    return np.clip(m, 0.0, 1.0)


def _centrality(inv: np.ndarray, size: int, out_wh: tuple[int, int]) -> np.ndarray:
    """Weight in (0, 1], largest at the crop's face centre: exp(-d^2 / (2 (0.15 size)^2)), d in crop px."""
    fwd = cv2.invertAffineTransform(inv)
    xs, ys = np.meshgrid(np.arange(out_wh[0], dtype=np.float64), np.arange(out_wh[1], dtype=np.float64))
    qx = fwd[0, 0] * xs + fwd[0, 1] * ys + fwd[0, 2] - 0.5 * size
    qy = fwd[1, 0] * xs + fwd[1, 1] * ys + fwd[1, 2] - 0.6 * size  # template centroid height (307 of 512)
    return np.exp(-(qx**2 + qy**2) / (2 * (0.15 * size) ** 2)).astype(np.float32) + 1e-12


def _accumulate(canvas_hw: tuple[int, int], faces, matrices: np.ndarray, upscale: float,
                mask_fn: MaskFn | None, mask_faces=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The weighted sums of `paste_faces`: num (Hu, Wu, 3) = sum_i w_i face_i, den (Hu, Wu) = sum_i w_i and
    alpha (Hu, Wu) = max_i s_i, with w_i = s_i * centrality_i. Each face i is square of its own size."""
    hu, wu = canvas_hw
    num = np.zeros((hu, wu, 3), np.float32)
    den = np.zeros((hu, wu), np.float32)
    alpha = np.zeros((hu, wu), np.float32)
    for i, (face, m) in enumerate(zip(faces, matrices)):
        size = face.shape[0]
        inv = inverse_affine(m, upscale)
        w_edge = int(np.sqrt(abs(np.linalg.det(inv[:, :2]))) * size) // 20
        x0, y0, x1, y1 = _roi(inv, size, 4 * w_edge + 2 * int(np.ceil(upscale)) + 4, (hu, wu))
        if x1 <= x0 or y1 <= y0:
            continue
        inv_r, wh = _shifted(inv, x0, y0), (x1 - x0, y1 - y0)
        small, inv_s = _antialiased(np.ascontiguousarray(face, np.float32), inv_r)
        warped = cv2.warpAffine(small, inv_s, wh, flags=cv2.INTER_LINEAR)
        # Divide by the warped footprint so that crop edges are not darkened by the black border.
        cover = cv2.warpAffine(np.ones(small.shape[:2], np.float32), inv_s, wh, flags=cv2.INTER_LINEAR)
        warped /= np.maximum(cover, 1e-3)[..., None]
        s = np.minimum(soft_mask(inv_r, size, wh, upscale), np.clip(cover, 0.0, 1.0))
        if mask_fn is not None:
            src = face if mask_faces is None else mask_faces[i]
            parse = np.asarray(mask_fn(src), np.float32)
            parse = cv2.resize(parse, (size, size), interpolation=cv2.INTER_LINEAR) if parse.shape[0] != size else parse
            s = np.minimum(s, np.clip(cv2.warpAffine(parse, inv_r, wh, flags=cv2.INTER_LINEAR), 0, 1))
        wgt = s * _centrality(inv_r, size, wh)
        num[y0:y1, x0:x1] += wgt[..., None] * warped
        den[y0:y1, x0:x1] += wgt
        np.maximum(alpha[y0:y1, x0:x1], s, out=alpha[y0:y1, x0:x1])
    return num, den, alpha


def paste_faces(
    background: np.ndarray,
    faces,
    matrices: np.ndarray,
    upscale: float,
    *,
    mask_fn: MaskFn | None = None,
    draw_boxes: bool = False,
) -> np.ndarray:
    """Blend restored crops into the upscaled background.

    Each face i is inverse-warped (bilinear, pre-shrunk with INTER_AREA when it gets smaller,
    normalised by its warped footprint so its edges do not fade to black) and gets the feathered
    mask s_i of `soft_mask` (times min with the parsing mask when `mask_fn` is
    given). Overlaps are resolved independently of face order: the face colour at a pixel is the
    average of the faces weighted by s_i times a centrality weight (largest at each crop's face
    centre), and out = a * face + (1 - a) * background with a = max_i s_i. For one face this is the
    official s * face + (1 - s) * background.
    Args: background (Hu, Wu, 3) float32 in [0, 1]; faces (N, S, S, 3) float32 in [0, 1] (or a list of
    (S_i, S_i, 3) crops of different sizes); matrices (N, 2, 3) image -> crop (of that crop's size);
    upscale: canvas / image size ratio.
    Returns (Hu, Wu, 3) float32 in [0, 1] (a new array).
    """
    out = np.ascontiguousarray(background, np.float32).copy()
    num, den, alpha = _accumulate(out.shape[:2], faces, matrices, upscale, mask_fn)
    hit = den > 0
    face_rgb = num[hit] / den[hit][:, None]
    out[hit] = alpha[hit][:, None] * face_rgb + (1 - alpha[hit][:, None]) * out[hit]
    if draw_boxes:
        for face, m in zip(faces, matrices):
            draw_crop_outlines(out, np.asarray(m)[None], face.shape[0], upscale)
    return np.clip(out, 0.0, 1.0)


def add_corrections(
    background: np.ndarray,
    corrections,
    matrices: np.ndarray,
    upscale: float,
    *,
    mask_fn: MaskFn | None = None,
    mask_faces=None,
) -> np.ndarray:
    """Add per-face corrections (the band merge of `difface.face.band` in photo coordinates).

    The same warps, masks and order-independent weights as `paste_faces`, but the crops are additive
    corrections d_i (e.g. up(restored - seen), values in about [-1, 1]) and out = background + a * d with
    d the weighted average of the d_i and a = max_i s_i: where a face's mask is 1 the result is the
    background plus the face's correction, so every detail of the background is kept.
    Args: background (Hu, Wu, 3) float32 in [0, 1]; corrections: a list of (S_i, S_i, 3) float32;
    matrices (N, 2, 3) image -> crop of that size; mask_fn is given mask_faces[i] (the restored crops)
    when set, else the correction. Returns (Hu, Wu, 3) float32 in [0, 1] (a new array).
    """
    out = np.ascontiguousarray(background, np.float32).copy()
    num, den, alpha = _accumulate(out.shape[:2], corrections, matrices, upscale, mask_fn, mask_faces)
    hit = den > 0
    out[hit] += alpha[hit][:, None] * (num[hit] / den[hit][:, None])
    return np.clip(out, 0.0, 1.0)


def draw_crop_outlines(canvas: np.ndarray, matrices: np.ndarray, size: int, upscale: float) -> None:
    """Draw each aligned crop's square outline in green onto canvas (H, W, 3) float, in place."""
    t = max(1, int(round(upscale)))
    corners = np.array([[0, 0], [size - 1, 0], [size - 1, size - 1], [0, size - 1]], np.float64)
    for m in matrices:
        inv = inverse_affine(m, upscale)
        quad = corners @ inv[:, :2].T + inv[:, 2]
        cv2.polylines(canvas, [np.round(quad * 16).astype(np.int32)], True, (0.0, 1.0, 0.0), t,
                      lineType=cv2.LINE_AA, shift=4)
