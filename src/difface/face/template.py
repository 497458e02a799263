"""The FFHQ 5-point face template used by DifFace (facexlib's 512 template) and helpers to scale it.

Convention: points are (x, y) in pixels of a square crop, pixel centres at integer coordinates
(OpenCV's convention), in the order left eye, right eye, nose tip, left mouth corner, right mouth
corner ("left" = image left, i.e. the subject's right).
"""

from __future__ import annotations

import numpy as np

# Template for a 512 x 512 crop (facexlib `FaceRestoreHelper`, face_template for size 512).
FFHQ_TEMPLATE_512 = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.1936],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ],
    dtype=np.float64,
)

# Border fill for the aligned crop: the official BGR (135, 133, 132) written as RGB in [0, 1].
BORDER_GRAY_RGB = (132 / 255.0, 133 / 255.0, 135 / 255.0)

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


def face_template(size: int = 512) -> np.ndarray:
    """The FFHQ template for a `size` x `size` crop: (5, 2) float64, the 512 template * size / 512."""
    if size <= 0:
        raise ValueError(f"face size must be positive, got {size}")
    return FFHQ_TEMPLATE_512 * (size / 512.0)


def eye_distance(landmarks: np.ndarray) -> np.ndarray:
    """Distance between the two eyes, norm(left_eye - right_eye).

    Args: landmarks (..., 5, 2). Returns (...) float. (The official filter used shifted indices,
    a bug of the official code; this is the intended quantity.)
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    return np.linalg.norm(lm[..., 0, :] - lm[..., 1, :], axis=-1)


# Bounds of a plausible five-point layout (`plausible_faces`), in eye distances in the face's own frame (x along
# the eyes, y down). Each is wider than every true face of the shared real photos
# (scripts/maintainer/check_detections.py: every image of real-world/, 300 LFW and 200 CelebA faces; 625 MTCNN and
# 616 YuNet faces at their thresholds): nose 0.16-1.28 below the eyes, mouth 0.81-2.57 below the eyes (the largest
# where a detector misplaced the mouth) and at least 0.15 below the nose, mouth 0.65-1.19 wide, mouth line at most
# 8 degrees off the eye line, template residual at most 0.42, eye distance 0.19-0.58 of the box width.
NOSE_BELOW_EYES = (0.05, 1.4)
MOUTH_BELOW_EYES = (0.5, 2.8)
MOUTH_BELOW_NOSE = 0.05
MOUTH_WIDTH = (0.45, 1.5)
MAX_MOUTH_TILT_DEG = 12.0
MAX_TEMPLATE_RESIDUAL = 0.55
EYES_OF_BOX_WIDTH = (0.15, 0.9)


def face_frame(landmarks: np.ndarray) -> np.ndarray:
    """Landmarks in the face's own frame, in eye distances: origin between the eyes, x along the eyes (left eye
    to right eye), y perpendicular to it, pointing down the face. (..., 5, 2) -> (..., 5, 2) float64."""
    lm = np.asarray(landmarks, np.float64)
    eye = lm[..., 1, :] - lm[..., 0, :]
    d = np.maximum(np.linalg.norm(eye, axis=-1), 1e-9)[..., None]
    ex = eye / d
    ey = np.stack([-ex[..., 1], ex[..., 0]], axis=-1)
    p = lm - (lm[..., 0, :] + lm[..., 1, :])[..., None, :] / 2
    return np.stack([(p * ex[..., None, :]).sum(-1), (p * ey[..., None, :]).sum(-1)], axis=-1) / d[..., None]


def template_residual(landmarks: np.ndarray) -> np.ndarray:
    """The largest distance, in template eye distances, of a landmark from the template after the best
    similarity (rotation, scale, shift) of the five points onto it. (..., 5, 2) -> (...)."""
    lm = np.asarray(landmarks, np.float64)
    tpl = FFHQ_TEMPLATE_512 - FFHQ_TEMPLATE_512.mean(0)
    a = (lm[..., 0] - lm[..., 0].mean(-1, keepdims=True)) + 1j * (lm[..., 1] - lm[..., 1].mean(-1, keepdims=True))
    b = tpl[:, 0] + 1j * tpl[:, 1]
    z = (np.conj(a) * b).sum(-1) / np.maximum((np.abs(a) ** 2).sum(-1), 1e-12)  # least-squares similarity
    err = np.abs(z[..., None] * a - b).max(-1)
    return err / float(np.linalg.norm(FFHQ_TEMPLATE_512[1] - FFHQ_TEMPLATE_512[0]))


def plausible_faces(landmarks: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Which detections have the five-point layout of a face (the bounds above; any in-plane rotation allowed).

    In the face's own frame (`face_frame`): the nose and the mouth below the eyes and the mouth below the nose, the
    mouth corners in the eyes' order and of a mouth's width, the mouth line near parallel to the eye line; the five
    points near the template after a similarity (`template_residual`); the eye distance a plausible share of the
    box width. Args: landmarks (N, 5, 2), boxes (N, 4) x1, y1, x2, y2. Returns (N,) bool.
    """
    lm = np.asarray(landmarks, np.float64).reshape(-1, 5, 2)
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    p = face_frame(lm)
    nose, mouth = p[:, 2, 1], (p[:, 3, 1] + p[:, 4, 1]) / 2
    width = p[:, 4, 0] - p[:, 3, 0]
    tilt = np.degrees(np.abs(np.arctan2(p[:, 4, 1] - p[:, 3, 1], np.maximum(width, 1e-9))))
    share = eye_distance(lm) / np.maximum(b[:, 2] - b[:, 0], 1e-9)
    return ((NOSE_BELOW_EYES[0] <= nose) & (nose <= NOSE_BELOW_EYES[1])
            & (MOUTH_BELOW_EYES[0] <= mouth) & (mouth <= MOUTH_BELOW_EYES[1]) & (mouth - nose >= MOUTH_BELOW_NOSE)
            & (MOUTH_WIDTH[0] <= width) & (width <= MOUTH_WIDTH[1]) & (tilt <= MAX_MOUTH_TILT_DEG)
            & (template_residual(lm) <= MAX_TEMPLATE_RESIDUAL)
            & (EYES_OF_BOX_WIDTH[0] <= share) & (share <= EYES_OF_BOX_WIDTH[1]))
