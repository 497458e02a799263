"""Identity similarity between a restored face and its ground truth.

* `ArcFaceONNX`: any ArcFace-style embedding network in ONNX form, supplied by the user (for
  example insightface's `w600k_r50.onnx`), run through onnxruntime (extra `[metrics]`).
  IDS = cosine similarity of the embeddings, Deg = their angle in degrees (arccos of IDS).
* `DlibEmbedder`: an offline score from dlib's ResNet face descriptor (extra `[metrics]`: packages
  `dlib-bin` and `face-recognition-models`): HOG face box, 5-point shape predictor, 150x150 aligned
  chip (`dlib.get_face_chip`, padding 0.25), 128-d descriptor; reported as `ids_dlib` (cosine).

Inputs are (H, W, 3) float RGB in [0, 1]. For ArcFace the faces are assumed FFHQ-aligned (the
layout of DifFace's inputs and outputs) and are warped to the ArcFace 112x112 layout by the fixed
similarity that maps the FFHQ 5-point template onto the ArcFace template (`align="ffhq"`), or
resized whole (`align="resize"`) for networks trained on whole aligned faces.
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path

import cv2
import numpy as np

# 5 points (left eye, right eye, nose, left and right mouth corners), (x, y) in pixels.
FFHQ_TEMPLATE_512 = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                              [201.26117, 371.41043], [313.08905, 371.15118]])
ARCFACE_TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                                 [41.5493, 92.3655], [70.7299, 92.2041]])


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of the angle between two embedding vectors (float64)."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def angle_degrees(cos: float) -> float:
    """Angle in degrees for a cosine similarity (clipped to [-1, 1])."""
    return math.degrees(math.acos(min(1.0, max(-1.0, cos))))


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src (N, 2) onto dst.

    Umeyama (1991), without reflection. Returns a (2, 3) matrix M with dst ~ M @ [x, y, 1].
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    s, d = src - ms, dst - md
    u, sv, vt = np.linalg.svd(d.T @ s / len(src))
    fix = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    r = u @ fix @ vt
    scale = float(np.trace(np.diag(sv) @ fix) / (s**2).sum(1).mean())
    return np.hstack([scale * r, (md - scale * r @ ms)[:, None]])


def ffhq_to_arcface(rgb: np.ndarray, size: tuple[int, int] = (112, 112)) -> np.ndarray:
    """Warp an FFHQ-aligned (H, W, 3) face to the ArcFace layout at `size` (h, w); area pre-shrink."""
    h, w = rgb.shape[:2]
    src = FFHQ_TEMPLATE_512 * np.array([w / 512.0, h / 512.0])
    dst = ARCFACE_TEMPLATE_112 * np.array([size[1] / 112.0, size[0] / 112.0])
    m = similarity_transform(src, dst)
    scale = math.hypot(m[0, 0], m[1, 0])
    img = np.ascontiguousarray(rgb, np.float32)
    if scale < 1.0:  # shrink with an area filter first so that the warp does not alias
        sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
        img = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_AREA)
        pre = np.array([[sw / w, 0, 0.5 * sw / w - 0.5], [0, sh / h, 0.5 * sh / h - 0.5], [0, 0, 1.0]])
        m = m @ np.linalg.inv(pre)
    return cv2.warpAffine(img, m, (size[1], size[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def _require(module: str, package: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ImportError(f"this metric needs the '{package}' package: pip install 'difface[metrics]'")


class ArcFaceONNX:
    """An ONNX face-embedding network: `embed(faces)` -> (N, D) unit vectors (float64).

    Input layout read from the model (N, C, H, W), C = 3 (RGB) or 1 (gray); pixels are mapped to
    (x * 255 - mean) / std with mean = std = 127.5 by default (insightface's ArcFace convention).
    """

    def __init__(self, path: str | os.PathLike, *, align: str = "ffhq", mean: float = 127.5, std: float = 127.5,
                 providers: list[str] | None = None):
        _require("onnxruntime", "onnxruntime")
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: ArcFace ONNX model not found")
        if align not in ("ffhq", "resize"):
            raise ValueError(f"align must be 'ffhq' or 'resize', got {align!r}")
        self.session = ort.InferenceSession(str(path), providers=providers or ["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        dims = [d if isinstance(d, int) else None for d in inp.shape]
        if len(dims) != 4 or dims[1] not in (1, 3):
            raise ValueError(f"{path}: expected an (N, C, H, W) input with C = 1 or 3, got {inp.shape}")
        self.input_name, self.channels = inp.name, dims[1]
        self.size = (dims[2] or 112, dims[3] or 112)
        self.align, self.mean, self.std = align, mean, std

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) float RGB [0, 1] -> (C, h, w) float32 network input."""
        if self.align == "ffhq":
            face = ffhq_to_arcface(rgb, self.size)
        else:
            face = cv2.resize(np.ascontiguousarray(rgb, np.float32), self.size[::-1], interpolation=cv2.INTER_AREA)
        if self.channels == 1:
            face = cv2.cvtColor(face, cv2.COLOR_RGB2GRAY)[:, :, None]
        return ((face * 255.0 - self.mean) / self.std).transpose(2, 0, 1).astype(np.float32)

    def embed(self, faces: list[np.ndarray]) -> np.ndarray:
        """Embeddings of a list of faces, each (H, W, 3) float RGB [0, 1] -> (N, D) unit float64."""
        batch = np.stack([self.preprocess(f) for f in faces])
        out = np.asarray(self.session.run(None, {self.input_name: batch})[0], np.float64).reshape(len(faces), -1)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def dlib_model_files() -> tuple[Path, Path]:
    """(shape_predictor_5_face_landmarks.dat, dlib_face_recognition_resnet_model_v1.dat) paths."""
    spec = importlib.util.find_spec("face_recognition_models")  # located without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("ids_dlib needs 'face-recognition-models': pip install 'difface[metrics]'")
    root = Path(list(spec.submodule_search_locations)[0]) / "models"
    files = (root / "shape_predictor_5_face_landmarks.dat", root / "dlib_face_recognition_resnet_model_v1.dat")
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"{f}: missing from the face-recognition-models package")
    return files


class DlibEmbedder:
    """dlib ResNet face descriptor: `embed(rgb)` -> (128,) float64; `fallbacks` counts undetected faces.

    When the HOG detector finds no face, the box `fallback_box` (fractions x1, y1, x2, y2 of the
    image) seeds the shape predictor, which suits aligned crops whose face fills the centre.
    """

    def __init__(self, fallback_box: tuple[float, float, float, float] = (0.15, 0.15, 0.85, 0.9), upsample: int = 1):
        _require("dlib", "dlib-bin")
        import dlib

        sp_file, rec_file = dlib_model_files()
        self._dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.shape_predictor = dlib.shape_predictor(str(sp_file))
        self.recognizer = dlib.face_recognition_model_v1(str(rec_file))
        self.fallback_box, self.upsample, self.fallbacks = fallback_box, upsample, 0

    def face_box(self, img: np.ndarray):
        """Largest HOG detection on a uint8 RGB image, else the fallback rectangle."""
        dets = list(self.detector(img, self.upsample))
        if dets:
            return max(dets, key=lambda r: r.width() * r.height())
        self.fallbacks += 1
        h, w = img.shape[:2]
        x1, y1, x2, y2 = self.fallback_box
        return self._dlib.rectangle(int(x1 * w), int(y1 * h), int(x2 * w), int(y2 * h))

    def embed(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) float RGB [0, 1] -> 128-d descriptor (float64)."""
        img = np.ascontiguousarray(np.rint(np.clip(rgb, 0, 1) * 255.0).astype(np.uint8))
        shape = self.shape_predictor(img, self.face_box(img))
        chip = self._dlib.get_face_chip(img, shape, size=150, padding=0.25)
        return np.asarray(self.recognizer.compute_face_descriptor(chip), np.float64)
