"""Face tracks across frames, temporal landmark smoothing and per-track seeds.

Tracking (`FaceTracker`): each frame's detections are matched to the live tracks greedily by a
score that combines box IoU (against the track's box moved by its last velocity) and the mean
landmark distance in units of the track's eye distance; a detection that matches nothing starts a
track (birth), a track unmatched for more than `max_missing` frames ends (death). Track ids count
up from 0 in order of birth, so they (and the seeds drawn from them) are deterministic.

Smoothing (`smooth_landmarks`): the 5 landmarks of a track at frame t are replaced by a weighted
local linear fit (Gaussian weights, per coordinate) over the track's detections in frames
t - radius .. t + radius. A linear fit follows a steady pan or zoom without lag (a plain average
would trail behind it) and removes frame-to-frame detector jitter; with detections on both sides
it also fills a frame where the detector missed the face.
"""

from __future__ import annotations

import copy
import hashlib
import struct
from dataclasses import dataclass, field

import numpy as np

from difface.face.detect import Detections, box_iou
from difface.face.template import eye_distance


def track_seed(seed: int, track_id: int) -> int:
    """The noise seed of every face of track `track_id` (in every frame)."""
    return _hash_seed(b"track", seed, track_id)


def frame_seed(seed: int, frame_index: int, face_index: int) -> int:
    """A seed for face `face_index` of frame `frame_index` alone (independent per-frame restoration)."""
    return _hash_seed(b"frame", seed, frame_index, face_index)


def _hash_seed(tag: bytes, *values: int) -> int:
    data = tag + b"".join(struct.pack("<q", int(v) % 2**63) for v in values)
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "little") % 2**63


@dataclass
class Track:
    """A face followed over frames: id, seed, last box and landmarks (input pixels), velocity of the
    box (pixels per frame), first/last frame it was detected in, and the number of detections."""

    id: int
    seed: int
    box: np.ndarray
    landmarks: np.ndarray
    first_frame: int
    last_frame: int
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))
    hits: int = 1

    def predicted_box(self, frame: int) -> np.ndarray:
        return self.box + self.velocity * (frame - self.last_frame)


class FaceTracker:
    """Associates detections frame to frame (see module docstring).

    iou_threshold: least IoU of a match (with the predicted box); landmark_threshold: greatest mean
    landmark distance of a match, in eye distances (a match needs either); max_missing: frames a
    track survives without a detection.
    """

    def __init__(self, seed: int = 0, *, iou_threshold: float = 0.3, landmark_threshold: float = 0.5,
                 max_missing: int = 5) -> None:
        self.seed = int(seed)
        self.iou_threshold, self.landmark_threshold = iou_threshold, landmark_threshold
        self.max_missing = max_missing
        self.tracks: list[Track] = []
        self.next_id = 0

    def update(self, frame: int, dets: Detections) -> list[int]:
        """Match `dets` of frame `frame` to the tracks; returns one track id per detection."""
        self.tracks = [t for t in self.tracks if frame - t.last_frame <= self.max_missing + 1]
        ids = [-1] * len(dets)
        pairs = []
        for ti, t in enumerate(self.tracks):
            if not len(dets):
                break
            pb = t.predicted_box(frame)
            iou = box_iou(pb, dets.boxes)
            shift = (pb[:2] + pb[2:] - t.box[:2] - t.box[2:]) / 2  # predicted motion of the box centre
            ed = max(float(eye_distance(t.landmarks[None])[0]), 1.0)
            lm = np.linalg.norm(dets.landmarks - (t.landmarks + shift), axis=2).mean(1) / ed
            for di in range(len(dets)):
                if iou[di] >= self.iou_threshold or lm[di] <= self.landmark_threshold:
                    pairs.append((float(iou[di]) - float(lm[di]), ti, di))
        used_t, used_d = set(), set()
        for _, ti, di in sorted(pairs, key=lambda p: -p[0]):
            if ti in used_t or di in used_d:
                continue
            used_t.add(ti)
            used_d.add(di)
            t = self.tracks[ti]
            gap = frame - t.last_frame
            box = dets.boxes[di].astype(np.float64)
            v = (box - t.box) / max(gap, 1)
            t.velocity = 0.5 * t.velocity + 0.5 * v if t.hits > 1 else v
            t.box, t.landmarks = box, dets.landmarks[di].astype(np.float64)
            t.last_frame, t.hits = frame, t.hits + 1
            ids[di] = t.id
        for di in range(len(dets)):
            if di not in used_d:
                t = Track(self.next_id, track_seed(self.seed, self.next_id), dets.boxes[di].astype(np.float64),
                          dets.landmarks[di].astype(np.float64), frame, frame)
                self.tracks.append(t)
                self.next_id += 1
                ids[di] = t.id
        return ids

    def seed_of(self, track_id: int) -> int:
        """The seed of track `track_id` (also after the track ended)."""
        return track_seed(self.seed, track_id)

    def snapshot(self) -> FaceTracker:
        """An independent copy of the tracker's state (for resuming)."""
        return copy.deepcopy(self)


def fit_local_linear(offsets: np.ndarray, values: np.ndarray, sigma: float) -> np.ndarray:
    """Value at offset 0 of a Gaussian-weighted least-squares line through (offsets, values).

    Args: offsets (K,) frame offsets; values (K, ...) observations; sigma in frames. With one
    observation (or all at one offset) it returns their weighted mean. Returns values[0]'s shape.
    """
    o = np.asarray(offsets, np.float64)
    v = np.asarray(values, np.float64).reshape(len(o), -1)
    w = np.exp(-0.5 * (o / max(sigma, 1e-6)) ** 2)
    sw, swo, swoo = w.sum(), (w * o).sum(), (w * o * o).sum()
    mean = (w[:, None] * v).sum(0) / sw
    det = sw * swoo - swo**2
    if len(o) < 2 or det <= 1e-9 * max(sw * swoo, 1e-12):
        return mean.reshape(np.shape(values)[1:])
    swv, swov = (w[:, None] * v).sum(0), (w[:, None] * o[:, None] * v).sum(0)
    intercept = (swoo * swv - swo * swov) / det
    return intercept.reshape(np.shape(values)[1:])


def smooth_landmarks(history: dict[int, np.ndarray], frame: int, radius: int, sigma: float | None = None
                     ) -> np.ndarray | None:
    """Smoothed (5, 2) landmarks of one track at `frame` from its raw detections.

    history maps frame index -> raw (5, 2) landmarks of the track (only frames where it was
    detected). Uses frames within `radius`; returns None when there is nothing to fit, or when the
    track was not detected at `frame` and has no detection on one of its sides (no extrapolation).
    """
    near = sorted(f for f in history if abs(f - frame) <= radius)
    if not near or (frame not in history and not (near[0] < frame < near[-1])):
        return None
    if radius == 0:
        return np.asarray(history[frame], np.float64)
    sigma = sigma if sigma is not None else max(radius / 1.5, 0.5)
    offs = np.array([f - frame for f in near], np.float64)
    return fit_local_linear(offs, np.stack([history[f] for f in near]), sigma)
