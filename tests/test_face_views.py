"""Whole photos: the crops written to cropped_faces/ and restored_faces/ are at each face's own resolution,
and the restored one is what is pasted back (the band merge)."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from difface.core import DifFace
from difface.face.align import estimate_alignment
from difface.face.background import lanczos_upsampler
from difface.face.detect import Detections
from difface.face.paste import inverse_affine, soft_mask
from difface.face.photo import MAX_VIEW_SIDE, PhotoSettings, crop_sides, restore_photo, scale_alignment, view_sides
from difface.face.template import FFHQ_TEMPLATE_512
from difface.images import write_image
from difface.pipeline import RestoreOptions, RestorePipeline, SamplingOptions, files


class _Faces:
    """Fake detector: template-shaped faces at (centre x, centre y, eye distance) fractions of the width."""

    name = "faces"

    def __init__(self, faces: list[tuple[float, float, float]]) -> None:
        self.faces = faces

    def detect(self, rgb: np.ndarray) -> Detections:
        w = rgb.shape[1]
        tpl = (FFHQ_TEMPLATE_512 - FFHQ_TEMPLATE_512.mean(0)) / 125.92
        lms = np.array([tpl * eye * w + (cx * w, cy * w) - 0.5 for cx, cy, eye in self.faces])
        boxes = np.concatenate([lms.min(1) - 20, lms.max(1) + 20], axis=1)
        return Detections(boxes, np.ones(len(lms)), lms)


def _textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth colour blobs plus a 2-pixel texture: detail far above a 64 px face's band."""
    rng = np.random.default_rng(seed)
    small = rng.random((h // 40 + 2, w // 40 + 2, 3)).astype(np.float32)
    base = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    base = 0.2 + 0.6 * (base - base.min()) / (base.max() - base.min())
    fine = 0.08 * (rng.random((h, w, 1)) > 0.5).astype(np.float32)
    return np.clip(base + fine, 0, 1).astype(np.float32)


def _invert(x: torch.Tensor) -> torch.Tensor:
    return 1 - x


def _laplacian_energy(a: np.ndarray) -> float:
    return float(np.mean(cv2.Laplacian(np.ascontiguousarray(a, np.float32), cv2.CV_32F) ** 2))


def test_view_sides_follow_the_face_and_are_capped():
    mats = np.array([[[s, 0.0, 0.0], [0.0, s, 0.0]] for s in (64 / 200, 64 / 30, 64 / 5000, 1.0)])
    np.testing.assert_array_equal(view_sides(mats, 64), [200, 64, MAX_VIEW_SIDE, 64])
    assert view_sides(mats, 64, max_side=128).tolist() == [128, 64, 128, 64]
    assert view_sides(np.zeros((0, 2, 3)), 64).shape == (0,)


def test_large_face_crops_at_their_own_resolution_keep_the_detail():
    img = _textured(300, 400)
    res = restore_photo(img, lambda x: x.clone(), detector=_Faces([(0.5, 0.45, 0.15)]), face_size=64,
                        settings=PhotoSettings(upscale=1))
    n = int(round(crop_sides(res.matrices, 64)[0]))
    assert n > 200 and res.crops.shape == (1, 64, 64, 3)
    crop, restored = res.face_crops[0], res.face_restored[0]
    assert crop.shape == restored.shape == (n, n, 3) and crop.dtype == np.float32
    # a restorer that changes nothing gives the crop back exactly (the band merge adds a zero correction)
    np.testing.assert_array_equal(restored, crop)
    # the crop is the photo's own pixels: the template's eyes land where the landmarks are
    lm = res.landmarks[0]
    for (tx, ty), (x, y) in zip(FFHQ_TEMPLATE_512[:2] * n / 512, lm[:2]):
        np.testing.assert_allclose(crop[round(ty), round(tx)], img[round(y), round(x)], atol=0.1)
    # ... with the fine texture that a 64 px crop enlarged has lost
    enlarged = cv2.resize(res.crops[0], (n, n), interpolation=cv2.INTER_CUBIC)
    assert _laplacian_energy(crop) > 5 * _laplacian_energy(enlarged)


def test_the_restored_view_is_what_is_pasted_back():
    img = _textured(300, 400, seed=1)
    res = restore_photo(img, _invert, detector=_Faces([(0.5, 0.45, 0.15)]), face_size=64,
                        settings=PhotoSettings(upscale=1))
    n = res.face_restored[0].shape[0]
    big = scale_alignment(res.matrices[0], n / 64)
    inv = inverse_affine(big, 1)
    back = [cv2.warpAffine(v[0], inv, (400, 300), flags=cv2.INTER_LINEAR) for v in (res.face_restored, res.face_crops)]
    inner = soft_mask(inv, n, (400, 300), 1) > 0.999
    assert inner.sum() > 10_000
    # what the view changes of the face (restored - crop) is what the photo's face was changed by (the background
    # at upscale 1 is the photo itself)
    err = np.abs((back[0] - back[1])[inner] - (res.image - img)[inner])
    assert err.mean() < 0.01 and np.quantile(err, 0.99) < 0.05
    # the restorer's coarse change is there: the face is inverted at the model's band, not kept
    seen = cv2.resize(res.face_crops[0], (64, 64), interpolation=cv2.INTER_AREA)
    got = cv2.resize(res.face_restored[0], (64, 64), interpolation=cv2.INTER_AREA)
    assert np.abs(got - (1 - seen))[16:48, 16:48].mean() < 0.05


def test_small_faces_keep_the_model_size_crops():
    img = _textured(120, 160, seed=2)
    res = restore_photo(img, _invert, detector=_Faces([(0.3, 0.4, 0.05), (0.7, 0.4, 0.06)]), face_size=64,
                        settings=PhotoSettings(upscale=2))
    assert res.num_faces == 2 and (crop_sides(res.matrices, 64) < 64).all()
    for k in range(2):
        np.testing.assert_array_equal(res.face_crops[k], res.crops[k])
        np.testing.assert_array_equal(res.face_restored[k], res.restored[k])


def test_whole_photo_path_writes_the_crops_at_the_faces_size(tmp_path, small_models):
    write_image(tmp_path / "a.png", _textured(300, 400, seed=3))
    model = DifFace.from_modules(*small_models)
    opts = RestoreOptions(sampling=SamplingOptions(start_step=2, eta=0.0, seed=1))
    faces = _Faces([(0.3, 0.45, 0.12), (0.75, 0.5, 0.02)])
    pipe = RestorePipeline(model, opts, detector=faces, bg_upsampler=lanczos_upsampler)
    outcomes = files.run(pipe, [tmp_path / "a.png"], tmp_path / "out", progress=False)
    assert outcomes[0].ok and outcomes[0].faces == 2
    dets = faces.detect(np.zeros((300, 400, 3), np.float32))
    sides = np.round(crop_sides(estimate_alignment(dets.landmarks.astype(np.float64), 64), 64)).astype(int)
    assert sides[0] > 150 and sides[1] < 64
    for folder in ("cropped_faces", "restored_faces"):
        shapes = [cv2.imread(str(tmp_path / "out" / folder / f"a_{k:02d}.png")).shape for k in range(2)]
        assert shapes == [(sides[0], sides[0], 3), (64, 64, 3)]
