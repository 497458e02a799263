"""LMD, landmark distance: mean Euclidean distance between the 5 facial landmarks found on the
restored face and on its ground truth, in pixels of the ground-truth image (lower is better).

The landmarks come from a `detect_landmarks(rgb) -> (5, 2) array or None` callable; by default the
project's own detector (`difface.face.detect`, best-scoring face). Convention: (x, y) pixel
coordinates with pixel centres at integers; when the prediction has another size than the ground
truth, its landmarks are mapped to ground-truth pixels first.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from difface.config import DEFAULT_DETECTOR
from difface.face.detect import detect_faces, get_detector

LandmarkFn = Callable[[np.ndarray], "np.ndarray | None"]


def landmark_distance(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean over points of the Euclidean distance between two (K, 2) landmark sets."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.shape != gt.shape or pred.ndim != 2 or pred.shape[1] != 2:
        raise ValueError(f"landmark sets must both be (K, 2), got {pred.shape} and {gt.shape}")
    return float(np.mean(np.linalg.norm(pred - gt, axis=1)))


def lmd(pred_rgb: np.ndarray, gt_rgb: np.ndarray, detect_landmarks: LandmarkFn) -> float:
    """LMD of one pair of (H, W, 3) float RGB [0, 1] faces; NaN when either has no detected face."""
    lp, lg = detect_landmarks(pred_rgb), detect_landmarks(gt_rgb)
    if lp is None or lg is None:
        return float("nan")
    (hp, wp), (hg, wg) = pred_rgb.shape[:2], gt_rgb.shape[:2]
    lp = (np.asarray(lp, np.float64) + 0.5) * np.array([wg / wp, hg / hp]) - 0.5
    return landmark_distance(lp, lg)


def detector_landmarks(backend: str = DEFAULT_DETECTOR, device: str = "cpu") -> LandmarkFn:
    """A `detect_landmarks` callable from the project's face detector (5 points of the best face)."""
    detector = get_detector(backend, device=device)

    def detect_landmarks(rgb: np.ndarray) -> np.ndarray | None:
        dets = detect_faces(np.ascontiguousarray(rgb, np.float32), detector)
        return None if len(dets) == 0 else dets.sorted().landmarks[0].astype(np.float64)

    return detect_landmarks
