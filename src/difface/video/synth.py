"""Test clips with a known camera motion: a slow pan and zoom over a still photo, degraded, with a
generated audio track (a sine sweep). `scripts/maintainer/make_test_clip.py` and the tests both use this.

The camera: a view of the output's aspect ratio; at zoom 1 it is the largest such rectangle inside
the photo, at zoom z it is z times smaller. Its centre and zoom move from (center0, zoom0) to
(center1, zoom1) along a cosine ease (slow start and stop). Frame t shows the photo through the
(2, 3) matrix `matrices[t]` (photo pixel -> frame pixel, pixel centres at integer coordinates), which
the sidecar JSON records, so that a measurement can undo the camera motion.

Degradation per frame (deterministic from `seed` and the frame index): Gaussian blur, down- and
up-sampling, Gaussian noise (drawn anew every frame, as sensor noise is) and JPEG.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from difface.video.io import require_av


@dataclass
class Degradation:
    """blur: Gaussian sigma in output pixels; scale: down-sampling factor (1 = none); noise: std in
    8-bit levels; jpeg: JPEG quality (0 = none)."""

    blur: float = 1.2
    scale: float = 2.0
    noise: float = 4.0
    jpeg: int = 60

    def apply(self, rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(H, W, 3) uint8 -> degraded uint8 of the same size."""
        x = rgb.astype(np.float32)
        h, w = x.shape[:2]
        if self.blur > 0:
            x = cv2.GaussianBlur(x, (0, 0), self.blur)
        if self.scale > 1:
            small = (max(1, round(w / self.scale)), max(1, round(h / self.scale)))
            x = cv2.resize(cv2.resize(x, small, interpolation=cv2.INTER_AREA), (w, h), interpolation=cv2.INTER_LINEAR)
        if self.noise > 0:
            x = x + rng.normal(0.0, self.noise, x.shape).astype(np.float32)
        out = np.clip(np.rint(x), 0, 255).astype(np.uint8)
        if self.jpeg > 0:
            ok, buf = cv2.imencode(".jpg", out[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(self.jpeg)])
            out = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]
        return np.ascontiguousarray(out)


@dataclass
class CameraPath:
    """center0/1: view centre as fractions (x, y) of the photo; zoom0/1: see the module docstring."""

    center0: tuple[float, float] = (0.35, 0.5)
    center1: tuple[float, float] = (0.65, 0.5)
    zoom0: float = 1.0
    zoom1: float = 1.25

    def matrices(self, photo_hw: tuple[int, int], out_hw: tuple[int, int], frames: int) -> np.ndarray:
        """(frames, 2, 3) photo -> frame matrices."""
        ph, pw = photo_hw
        oh, ow = out_hw
        vw0 = min(pw, ph * ow / oh)  # the zoom-1 view: largest rectangle of the output's aspect
        mats = np.zeros((frames, 2, 3))
        for t in range(frames):
            a = 0.5 - 0.5 * math.cos(math.pi * t / max(frames - 1, 1))  # cosine ease 0 -> 1
            z = self.zoom0 + (self.zoom1 - self.zoom0) * a
            vw = vw0 / z
            vh = vw * oh / ow
            s = ow / vw
            cx = (self.center0[0] + (self.center1[0] - self.center0[0]) * a) * pw
            cy = (self.center0[1] + (self.center1[1] - self.center0[1]) * a) * ph
            cx = min(max(cx, vw / 2), pw - vw / 2)  # keep the view inside the photo
            cy = min(max(cy, vh / 2), ph - vh / 2)
            # photo pixel-centre coordinates -> frame: x' = s (x + 0.5 - cx) + ow / 2 - 0.5
            mats[t] = [[s, 0, s * (0.5 - cx) + ow / 2 - 0.5], [0, s, s * (0.5 - cy) + oh / 2 - 0.5]]
        return mats


def render_frame(photo: np.ndarray, matrix: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """The camera's view of photo (H, W, 3) uint8 through a (2, 3) photo -> frame matrix (area-
    averaged when shrinking: the photo is first resized close to the view's scale)."""
    s = float(matrix[0, 0])
    m = np.asarray(matrix, np.float64).copy()
    img = photo
    if s < 0.9:
        h, w = photo.shape[:2]
        sw, sh = max(1, round(w * s * 1.1)), max(1, round(h * s * 1.1))
        img = cv2.resize(photo, (sw, sh), interpolation=cv2.INTER_AREA)
        fx, fy = sw / w, sh / h  # small (u, v) -> photo ((u + 0.5) / fx - 0.5, ...)
        back = np.array([[1 / fx, 0, 0.5 / fx - 0.5], [0, 1 / fy, 0.5 / fy - 0.5], [0, 0, 1]])
        m = m @ back
    return cv2.warpAffine(img, m, (out_hw[1], out_hw[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def sine_sweep(seconds: float, rate: int = 44100, f0: float = 220.0, f1: float = 880.0) -> np.ndarray:
    """A logarithmic sine sweep f0 -> f1 Hz, amplitude 0.3, (1, n) float32."""
    t = np.arange(int(round(seconds * rate))) / rate
    k = math.log(f1 / f0) / max(seconds, 1e-9)
    phase = 2 * math.pi * f0 * (np.exp(k * t) - 1) / k
    return (0.3 * np.sin(phase)).astype(np.float32)[None]


@dataclass(frozen=True)
class ClipSpec:
    """What `make_clip` renders: size (width, height), even; fps; seconds; camera (None: CameraPath());
    degradation (None: clean frames); audio: an AAC sine sweep; seed: of the per-frame degradation; crf: H.264
    quality; rotation: a display rotation (ccw degrees) recorded in the file, with the pixels stored rotated
    the other way (so the clip displays as rendered; for tests)."""

    size: tuple[int, int] = (640, 360)
    fps: float | Fraction = 25
    seconds: float = 4.0
    camera: CameraPath | None = None
    degradation: Degradation | None = field(default_factory=Degradation)
    audio: bool = True
    seed: int = 0
    crf: int = 18
    rotation: int = 0


def make_clip(photo: np.ndarray, dst: str | os.PathLike, spec: ClipSpec | None = None, *, sidecar: bool = True,
              extra: dict | None = None) -> dict:
    """Write a pan-and-zoom clip over `photo` ((H, W, 3) uint8 RGB) to `dst` (MP4, H.264 yuv420p,
    AAC sine sweep when `spec.audio`), streaming frame by frame, as `spec` (ClipSpec; None: the defaults) says.

    Writes `dst` with the suffix .json beside it (the sidecar) unless sidecar=False, and returns
    its content: size, fps, frames, seconds, camera, degradation, seed, and `matrices` (photo ->
    displayed frame, one (2, 3) per frame); `extra` entries are added.
    """
    spec = spec or ClipSpec()
    size, fps, seconds, camera, audio, seed, crf, rotation = (spec.size, spec.fps, spec.seconds, spec.camera,
                                                              spec.audio, spec.seed, spec.crf, spec.rotation)
    av = require_av()
    dst = Path(dst)
    w, h = size
    if w % 2 or h % 2:
        raise ValueError(f"size must be even, got {w}x{h}")
    rate = Fraction(fps).limit_denominator(1001)
    frames = max(1, int(round(seconds * float(rate))))
    camera = camera or CameraPath()
    deg = spec.degradation
    mats = camera.matrices(photo.shape[:2], (h, w), frames)
    rng = np.random.default_rng(seed)
    dst.parent.mkdir(parents=True, exist_ok=True)
    k = (rotation // 90) % 4
    with av.open(str(dst), "w", format="mp4") as out:
        vs = out.add_stream("libx264", rate=rate)
        vs.width, vs.height = (h, w) if k % 2 else (w, h)
        vs.pix_fmt = "yuv420p"
        vs.options = {"crf": str(crf), "preset": "medium"}
        if k:
            if not hasattr(vs, "set_display_rotation"):
                raise RuntimeError("writing a display rotation needs PyAV >= 17")
            vs.set_display_rotation(90 * k)
        a_s = None
        if audio:
            a_s = out.add_stream("aac", rate=44100, layout="mono")
            a_s.bit_rate = 96_000
        for t in range(frames):
            img = deg.apply(render_frame(photo, mats[t], (h, w)), rng) if deg else render_frame(photo, mats[t], (h, w))
            stored = np.ascontiguousarray(np.rot90(img, -k)) if k else img
            f = av.VideoFrame.from_ndarray(stored, format="rgb24")
            f.pts = t
            out.mux(vs.encode(f))
        out.mux(vs.encode(None))
        if a_s is not None:
            pcm = sine_sweep(frames / float(rate))
            for i in range(0, pcm.shape[1], 1024):
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[:, i:i + 1024]), format="fltp", layout="mono")
                af.sample_rate, af.pts = 44100, i
                out.mux(a_s.encode(af))
            out.mux(a_s.encode(None))
    meta = {"clip": dst.name, "size": [w, h], "fps": [rate.numerator, rate.denominator], "frames": frames,
            "seconds": frames / float(rate), "photo_size": list(photo.shape[:2]), "camera": asdict(camera),
            "degradation": asdict(deg) if deg else None, "seed": seed, "rotation": 90 * k,
            "matrices": np.round(mats, 10).tolist(), **(extra or {})}
    if sidecar:
        dst.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    return meta


def group_photo_from(face_photo: np.ndarray, count: int = 3, height: int = 360) -> np.ndarray:
    """A synthetic 'group photo': `count` copies of a portrait side by side at slightly different
    sizes on a gray background ((H, W, 3) uint8), for tests that must run without shared data."""
    tiles = []
    for i in range(count):
        s = height * (1.0 - 0.12 * (i % 3)) / face_photo.shape[0]
        tile = cv2.resize(face_photo, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        pad = height - tile.shape[0]
        tiles.append(np.pad(tile, ((pad // 2, pad - pad // 2), (8, 8), (0, 0)), constant_values=128))
    return np.ascontiguousarray(np.concatenate(tiles, axis=1))
