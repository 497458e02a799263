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
