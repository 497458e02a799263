"""Face detection behind one small interface: boxes, scores and 5 landmarks per face.

Detectors (`DETECTORS`, the one table: name -> builder): "mtcnn" (default; weights
shipped in the package), "yunet" (libfacedetection through the optional `yuface` wheel), "retinaface_resnet50" and
"retinaface_mobile0.25" (facexlib checkpoints, given by path). "No face" is a normal, empty result.

Convention: coordinates in pixels of the image passed in, pixel centres at integer coordinates;
boxes are (x1, y1, x2, y2); landmarks are (5, 2) (x, y) in the order of `template.LANDMARK_NAMES`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Protocol

import cv2
import numpy as np

from difface.face.boxes import Detections, box_iou, nms  # the interface's types, re-exported for its callers
from difface.face.mtcnn import MTCNNDetector
from difface.face.retinaface import RetinaFaceDetector
from difface.face.yunet import YuNetDetector
from difface.names import DEFAULT_DETECTOR
from difface.weights import resolve

__all__ = ["DEFAULT_DETECTOR", "DETECTORS", "Detections", "FaceDetector", "box_iou", "detect_faces", "detection_scale",
           "draw_detections", "get_detector", "nms"]


class FaceDetector(Protocol):
    """A face detector: `detect(rgb)` with rgb (H, W, 3) float32 in [0, 1] returns Detections."""

    name: str

    def detect(self, rgb: np.ndarray) -> Detections: ...


def _retinaface(kind: str, entry: str) -> Callable[..., FaceDetector]:
    def build(weights: str | os.PathLike | None, device: str) -> FaceDetector:
        if weights is None:  # the weights registry's cache (no download here: see `difface weights`)
            weights = resolve(entry, allow_download=False)
        return RetinaFaceDetector(kind, weights, device=device)
    return build


# The detectors: name -> builder(weights, device). Adding one is its module in face/ and its entry here; the
# CLI's --detector help, PhotoOptions' check and the app read the names from this table (config.DETECTORS).
DETECTORS: dict[str, Callable[[str | os.PathLike | None, str], FaceDetector]] = {
    "mtcnn": lambda weights, device: MTCNNDetector(device=device),
    "yunet": lambda weights, device: YuNetDetector(),
    "retinaface_resnet50": _retinaface("resnet50", "retinaface-resnet50"),
    "retinaface_mobile0.25": _retinaface("mobile0.25", "retinaface-mobilenet0.25"),
}


def get_detector(name: str = DEFAULT_DETECTOR, weights: str | os.PathLike | None = None,
                 device: str = "cpu") -> FaceDetector:
    """Build a detector backend by name (see `DETECTORS`).

    `weights` is the checkpoint path for the RetinaFace backends (detection_Resnet50_Final.pth /
    detection_mobilenet0.25_Final.pth); without it the file cached by the weights registry is used
    (`difface weights download retinaface-resnet50`), else WeightsUnavailable (a FileNotFoundError)
    says how to get it. The other backends ignore it. `device` is a torch device.
    """
    if name not in DETECTORS:
        raise ValueError(f"unknown face detector {name!r}; choose one of {', '.join(DETECTORS)}")
    return DETECTORS[name](weights, device)


def detection_scale(height: int, width: int, min_side: int = 640, max_side: int = 2048) -> float:
    """Resize factor for the detector's copy of an image.

    Small images are enlarged so that the short side reaches `min_side` (the official helper uses 640),
    large ones shrunk so that the long side stays within `max_side`; the long-side limit wins.
    """
    s = max(1.0, min_side / min(height, width))
    return min(s, max_side / max(height, width))


def detect_faces(rgb: np.ndarray, detector: FaceDetector, *, min_side: int = 640,
                 max_side: int = 2048) -> Detections:
    """Detect faces on a resized copy (see `detection_scale`) and map them back to `rgb`'s pixels.

    Args: rgb (H, W, 3) float32 in [0, 1]. Returns Detections in `rgb` coordinates.
    """
    h, w = rgb.shape[:2]
    s = detection_scale(h, w, min_side, max_side)
    if abs(s - 1.0) < 1e-6:
        return detector.detect(rgb)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    interp = cv2.INTER_LINEAR if s > 1 else cv2.INTER_AREA
    small = cv2.resize(np.ascontiguousarray(rgb, np.float32), size, interpolation=interp)
    sx, sy = size[0] / w, size[1] / h
    dets = detector.detect(np.clip(small, 0, 1))
    # The exact per-axis factors after rounding; pixel centres map as x = (x' + 0.5) / s - 0.5.
    boxes = (dets.boxes.reshape(-1, 2, 2) + 0.5) / np.array([sx, sy]) - 0.5
    lms = (dets.landmarks + 0.5) / np.array([sx, sy]) - 0.5
    return Detections(boxes.reshape(-1, 4), dets.scores, lms)


def draw_detections(rgb: np.ndarray, dets: Detections) -> np.ndarray:
    """A copy of rgb (H, W, 3) float in [0, 1] with green boxes, red landmark dots and scores."""
    out = np.rint(np.clip(rgb, 0, 1) * 255).astype(np.uint8)  # OpenCV draws text on 8-bit only
    t = max(1, round(max(out.shape[:2]) / 500))
    for b, s, lm in zip(dets.boxes, dets.scores, dets.landmarks):
        p1, p2 = (round(b[0]), round(b[1])), (round(b[2]), round(b[3]))
        cv2.rectangle(out, p1, p2, (0, 255, 0), t)
        cv2.putText(out, f"{s:.2f}", (p1[0], max(p1[1] - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * t, (0, 255, 0), t)
        for x, y in lm:
            cv2.circle(out, (round(x), round(y)), t + 1, (255, 0, 0), -1)
    return out.astype(np.float32) / 255.0
