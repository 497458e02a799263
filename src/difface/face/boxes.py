"""What a face detector returns (`Detections`) and the box overlap / suppression its backends share.

Below difface.face.detect: the backends (mtcnn, retinaface, yunet) import from here, detect imports them.
Coordinates as in difface.face.detect: pixels, boxes (x1, y1, x2, y2), landmarks (5, 2) (x, y).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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
