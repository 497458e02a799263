"""Face detection behind one small interface: boxes, scores and 5 landmarks per face.

Backends (`BACKENDS`): "mtcnn" (default; weights shipped in the package), "yunet"
(libfacedetection through the optional `yuface` wheel), "retinaface_resnet50" and
"retinaface_mobile0.25" (facexlib checkpoints, given by path). "No face" is a normal, empty result.

Convention: coordinates in pixels of the image passed in, pixel centres at integer coordinates;
boxes are (x1, y1, x2, y2); landmarks are (5, 2) (x, y) in the order of `template.LANDMARK_NAMES`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Protocol

import cv2
import numpy as np

from difface.config import DETECTORS as BACKENDS
from difface.weights import resolve

DEFAULT_BACKEND = "mtcnn"


@dataclass
class Detections:
    """Faces found in one image, sorted by decreasing score.

    boxes (N, 4) float32 x1, y1, x2, y2; scores (N,) float32 in [0, 1]; landmarks (N, 5, 2) float32.
    """

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    landmarks: np.ndarray = field(default_factory=lambda: np.zeros((0, 5, 2), np.float32))

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, np.float32).reshape(-1)
        self.landmarks = np.asarray(self.landmarks, np.float32).reshape(-1, 5, 2)
        if not len(self.boxes) == len(self.scores) == len(self.landmarks):
            raise ValueError("boxes, scores and landmarks must have the same length")

    def __len__(self) -> int:
        return len(self.scores)

    def subset(self, index: np.ndarray | list[int]) -> Detections:
        """The detections at `index` (an index array or boolean mask)."""
        return Detections(self.boxes[index], self.scores[index], self.landmarks[index])

    def scaled(self, factor: float) -> Detections:
        """Coordinates multiplied by `factor` (for detections made on a resized copy)."""
        return Detections(self.boxes * factor, self.scores, self.landmarks * factor)

    def sorted(self) -> Detections:
        """Sorted by decreasing score (stable)."""
        return self.subset(np.argsort(-self.scores, kind="stable"))

    def to_json(self) -> list[dict]:
        """A JSON-ready list of {"box", "score", "landmarks"} dicts (floats rounded to 0.01 px)."""
        return [
            {
                "box": [round(float(v), 2) for v in b],
                "score": round(float(s), 4),
                "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in lm],
            }
            for b, s, lm in zip(self.boxes, self.scores, self.landmarks)
        ]


class FaceDetector(Protocol):
    """A face detector: `detect(rgb)` with rgb (H, W, 3) float32 in [0, 1] returns Detections."""

    name: str

    def detect(self, rgb: np.ndarray) -> Detections: ...


def box_iou(box: np.ndarray, boxes: np.ndarray, mode: str = "union") -> np.ndarray:
    """Overlap of one box (4,) with boxes (N, 4): intersection / union ("union") or / min area ("min").

    Areas are continuous, (x2 - x1) * (y2 - y1).
    """
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    a = max(float(box[2] - box[0]) * float(box[3] - box[1]), 0.0)
    b = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    denom = np.minimum(a, b) if mode == "min" else a + b - inter
    return np.where(denom > 0, inter / np.maximum(denom, 1e-12), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, mode: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression.

    Visits boxes by decreasing score (ties: lower index first) and drops every later box whose
    overlap (`box_iou` with `mode`) with a kept box exceeds `iou_threshold`.
    Args: boxes (N, 4) x1, y1, x2, y2; scores (N,). Returns kept indices (K,) int64, best first.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        order = rest[box_iou(boxes[i], boxes[rest], mode) <= iou_threshold]
    return np.asarray(keep, np.int64)


def get_detector(name: str = DEFAULT_BACKEND, weights: str | os.PathLike | None = None,
                 device: str = "cpu") -> FaceDetector:
    """Build a detector backend by name (see `BACKENDS`).

    `weights` is the checkpoint path for the RetinaFace backends (detection_Resnet50_Final.pth /
    detection_mobilenet0.25_Final.pth); without it the file cached by the weights registry is used
    (`difface weights download retinaface-resnet50`), else WeightsUnavailable (a FileNotFoundError)
    says how to get it. The other backends ignore it. `device` is a torch device.
    """
    if name == "mtcnn":
        from difface.face.mtcnn import MTCNNDetector

        return MTCNNDetector(device=device)
    if name == "yunet":
        from difface.face.yunet import YuNetDetector

        return YuNetDetector()
    if name in ("retinaface_resnet50", "retinaface_mobile0.25"):
        from difface.face.retinaface import RetinaFaceDetector

        if weights is None:  # the weights registry's cache (no download here: see `difface weights`)

            weights = resolve(name.replace("_", "-").replace("mobile0", "mobilenet0"), allow_download=False)
        return RetinaFaceDetector(name.split("_", 1)[1], weights, device=device)
    raise ValueError(f"unknown face detector {name!r}; choose one of {', '.join(BACKENDS)}")


def detection_scale(height: int, width: int, min_side: int = 640, max_side: int = 2048) -> float:
    """Resize factor for the detector's copy of an image.

    Small images are enlarged so that the short side reaches `min_side` (SPEC 2.4 step 2 uses 640),
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
