"""libfacedetection (YuNet) through the optional `yuface` wheel (BSD-3, weights compiled in).

`pip install yuface` (wheels exist for CPython <= 3.11 on Linux x86-64 and Windows only). The
library returns integer pixel coordinates and a confidence in percent.
"""

from __future__ import annotations

import numpy as np

from difface.face.boxes import Detections


class YuNetDetector:
    """Face detector backed by `yuface.detect` (expects BGR uint8).

    The threshold is 0.8 rather than the library's 0.5: on the shared test photos its false
    positives scored 0.51-0.68 and true faces >= 0.89.
    """

    name = "yunet"

    def __init__(self, conf_threshold: float = 0.8) -> None:
        try:
            import yuface
        except ImportError as e:
            raise ImportError(
                "the 'yunet' face detector needs the optional package yuface (pip install yuface; "
                "wheels exist for Python <= 3.11 on Linux x86-64 and Windows)"
            ) from e
        self._detect = yuface.detect
        self.conf_threshold = conf_threshold

    def detect(self, rgb: np.ndarray) -> Detections:
        """Faces in rgb (H, W, 3) float32 in [0, 1]."""
        bgr = np.ascontiguousarray(np.rint(np.clip(rgb[:, :, ::-1], 0, 1) * 255).astype(np.uint8))
        confs, xywh, lms = self._detect(bgr, self.conf_threshold)
        if len(confs) == 0:
            return Detections()
        xywh = np.asarray(xywh, np.float32).reshape(-1, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
        scores = np.asarray(confs, np.float32) / 100.0
        return Detections(boxes, scores, np.asarray(lms, np.float32).reshape(-1, 5, 2)).sorted()
