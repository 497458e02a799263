"""Similarity alignment of faces to the FFHQ template (as the official `align_warp_face`).

Convention: 2 x 3 affine matrices map (x, y, 1) in the source image to (x', y') in the target,
pixel centres at integer coordinates (OpenCV's `warpAffine` convention, not inverted).
"""

from __future__ import annotations

from itertools import combinations

import cv2
import numpy as np

from difface.face.template import BORDER_GRAY_RGB, eye_distance, face_template, plausible_faces


def similarity_lstsq(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Least-squares 4-DOF similarity (rotation, uniform scale, translation) mapping src to dst.

    Minimises sum_i w_i |s R src_i + t - dst_i|^2 in closed form (Umeyama 1991 without reflection;
    in complex numbers z = sum w conj(a) b / sum w |a|^2 on centred points).
    Args: src, dst (N, 2) with N >= 2; weights (N,) >= 0 or None. Returns (2, 3) float64.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need two (N, 2) point sets with N >= 2, got {src.shape} and {dst.shape}")
    ms = (w[:, None] * src).sum(0) / w.sum()
    md = (w[:, None] * dst).sum(0) / w.sum()
    a = (src[:, 0] - ms[0]) + 1j * (src[:, 1] - ms[1])
    b = (dst[:, 0] - md[0]) + 1j * (dst[:, 1] - md[1])
    denom = float((w * np.abs(a) ** 2).sum())
    if denom <= 1e-12:
        raise ValueError("source points coincide: the similarity transform is undefined")
    z = (w * np.conj(a) * b).sum() / denom
    rot = np.array([[z.real, -z.imag], [z.imag, z.real]])
    return np.concatenate([rot, (md - rot @ ms)[:, None]], axis=1)


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine matrix to (..., 2) points; returns (..., 2) float64."""
    p = np.asarray(points, np.float64)
    return p @ np.asarray(matrix, np.float64)[:, :2].T + np.asarray(matrix, np.float64)[:, 2]


def _residuals(matrix: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    return ((apply_affine(matrix, src) - dst) ** 2).sum(1)


def similarity_lmeds(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Robust similarity as `cv2.estimateAffinePartial2D(method=LMEDS)` then least-squares refinement.

    Every 2-point subset is tried (OpenCV samples them at random), the one with the least median
    squared residual wins, inliers are the points within OpenCV's LMedS threshold
    sigma = 2.5 * 1.4826 * (1 + 5 / (N - 2)) * sqrt(median), and the result is the least-squares
    fit on the inliers (what OpenCV's Levenberg-Marquardt refinement converges to).
    Args: src, dst (N, 2). Returns ((2, 3) float64 matrix, (N,) bool inlier mask).
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    n = len(src)
    if n < 3:
        return similarity_lstsq(src, dst), np.ones(n, bool)
    best_med, best = np.inf, None
    for i, j in combinations(range(n), 2):
        if np.allclose(src[i], src[j]):
            continue
        m = similarity_lstsq(src[[i, j]], dst[[i, j]])
        med = np.partition(_residuals(m, src, dst), n // 2)[n // 2]
        if med < best_med:
            best_med, best = med, m
    if best is None:
        raise ValueError("source points coincide: the similarity transform is undefined")
    sigma = max(2.5 * 1.4826 * (1 + 5.0 / (n - 2)) * np.sqrt(best_med), 0.001)
    inliers = _residuals(best, src, dst) <= sigma**2
    if inliers.sum() < 2:
        return best, inliers
    return similarity_lstsq(src[inliers], dst[inliers]), inliers


def estimate_alignment(landmarks: np.ndarray, face_size: int = 512, robust: bool = True) -> np.ndarray:
    """Matrix mapping a face's 5 landmarks onto the FFHQ template of a `face_size` crop.

    Args: landmarks (5, 2) or (N, 5, 2) in image pixels. Returns (2, 3) or (N, 2, 3) float64.
    """
    lm = np.asarray(landmarks, np.float64)
    if lm.ndim == 3:
        return np.stack([estimate_alignment(x, face_size, robust) for x in lm]) if len(lm) else (
            np.zeros((0, 2, 3))
        )
    tpl = face_template(face_size)
    return similarity_lmeds(lm, tpl)[0] if robust else similarity_lstsq(lm, tpl)


def _warp_one(img: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """Warp one crop from `img` (already padded by one pixel, so m maps padded coordinates).

    When the warp shrinks by more than 0.8, the source region is first resized with INTER_AREA
    (a bilinear warp alone would alias), and the matrix is composed with that resize.
    """
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    if scale < 0.8:
        inv = cv2.invertAffineTransform(m)
        c = np.array([[-1, -1], [size, -1], [-1, size], [size, size]], np.float64) @ inv[:, :2].T + inv[:, 2]
        h, w = img.shape[:2]
        x0, y0 = np.maximum(np.floor(c.min(0)).astype(int) - 2, 0)
        x1, y1 = np.minimum(np.ceil(c.max(0)).astype(int) + 3, (w, h))
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            sw, sh = max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))
            small = cv2.resize(img[y0:y1, x0:x1], (sw, sh), interpolation=cv2.INTER_AREA)
            fx, fy = sw / (x1 - x0), sh / (y1 - y0)
            # small pixel (u, v) -> img ((u + 0.5) / fx - 0.5 + x0, (v + 0.5) / fy - 0.5 + y0)
            back = np.array([[1 / fx, 0, 0.5 / fx - 0.5 + x0], [0, 1 / fy, 0.5 / fy - 0.5 + y0], [0, 0, 1]])
            img, m = small, m @ back
    return cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=BORDER_GRAY_RGB)


def warp_faces(rgb: np.ndarray, matrices: np.ndarray, face_size: int) -> np.ndarray:
    """Warp aligned square crops out of an image (bilinear; gray outside the image, as facexlib).

    Args: rgb (H, W, 3) float32 in [0, 1]; matrices (N, 2, 3) image -> crop.
    Returns (N, face_size, face_size, 3) float32 in [0, 1].
    """
    # One replicated edge pixel first, so that crop pixels just outside the image (still inside
    # the pasted region) do not mix in the gray fill; the fill starts one pixel further out.
    img = cv2.copyMakeBorder(np.ascontiguousarray(rgb, dtype=np.float32), 1, 1, 1, 1, cv2.BORDER_REPLICATE)
    out = np.empty((len(matrices), face_size, face_size, 3), np.float32)
    for k, m in enumerate(matrices):
        m = np.asarray(m, np.float64)
        shifted = np.concatenate([m[:, :2], (m[:, 2] - m[:, :2].sum(1))[:, None]], 1)
        out[k] = _warp_one(img, shifted, face_size)
    return np.clip(out, 0.0, 1.0)


def align_faces(rgb: np.ndarray, landmarks: np.ndarray, face_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Estimate the template alignment of each face and warp the crops.

    Args: rgb (H, W, 3) float32 in [0, 1]; landmarks (N, 5, 2) image pixels.
    Returns (crops (N, S, S, 3) float32 in [0, 1], matrices (N, 2, 3) float64 image -> crop).
    """
    lm = np.asarray(landmarks, np.float64).reshape(-1, 5, 2)
    mats = estimate_alignment(lm, face_size)
    return warp_faces(rgb, mats, face_size), mats


def select_faces(
    boxes: np.ndarray,
    landmarks: np.ndarray,
    image_size: tuple[int, int],
    *,
    only_center_face: bool = False,
    largest_face: bool = False,
    min_eye_dist: float = 5.0,
    plausible_only: bool = True,
) -> np.ndarray:
    """Indices of the faces to keep: eye distance >= min_eye_dist and (plausible_only) the five-point layout of
    a face (`template.plausible_faces`, for every detector), then optionally one face.

    Args: boxes (N, 4) x1, y1, x2, y2; landmarks (N, 5, 2); image_size (H, W).
    `only_center_face` keeps the face whose box centre is nearest the image centre (as facexlib);
    `largest_face` keeps the face with the largest eye distance. Returns (K,) int64 indices.
    """
    lm = np.asarray(landmarks, np.float64).reshape(-1, 5, 2)
    ok = eye_distance(lm) >= min_eye_dist
    keep = np.flatnonzero(ok & plausible_faces(lm, boxes) if plausible_only and len(lm) else ok)
    if len(keep) <= 1 or not (only_center_face or largest_face):
        return keep
    if largest_face:
        return keep[[int(np.argmax(eye_distance(lm[keep])))]]
    b = np.asarray(boxes, np.float64)[keep]
    centres = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], axis=1)
    h, w = image_size
    d = np.linalg.norm(centres - np.array([w / 2.0, h / 2.0]), axis=1)
    return keep[[int(np.argmin(d))]]
