"""Paste-back and `restore_photo`: round trip with an identity restorer, no face, odd inputs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from difface.face.background import lanczos_upsampler
from difface.face.detect import Detections
from difface.face.paste import inverse_affine, paste_faces, soft_mask
from difface.face.photo import MAX_OUTPUT_PIXELS, PhotoSettings, as_float_image, crop_sides, restore_photo
from difface.face.template import FFHQ_TEMPLATE_512


class _FixedDetector:
    """Fake backend returning faces at fixed fractions of the image (robust to resizing).

    faces: list of (centre_x, centre_y, eye_distance, angle) as fractions of the image width.
    """

    name = "fixed"

    def __init__(self, faces: list[tuple[float, float, float, float]]) -> None:
        self.faces = faces

    def detect(self, rgb: np.ndarray) -> Detections:
        h, w = rgb.shape[:2]
        tpl = (FFHQ_TEMPLATE_512 - FFHQ_TEMPLATE_512.mean(0)) / 125.92
        lms, boxes = [], []
        for cx, cy, eye, ang in self.faces:
            c, s = np.cos(ang), np.sin(ang)
            pts = tpl @ np.array([[c, s], [-s, c]]) * eye * w + (cx * w, cy * w) - 0.5
            lms.append(pts)
            boxes.append([*(pts.min(0) - eye * w), *(pts.max(0) + eye * w)])
        return Detections(np.array(boxes).reshape(-1, 4), np.ones(len(lms)), np.array(lms).reshape(-1, 5, 2))


def _smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth random colour field (features ~30 px), values in [0.1, 0.9]."""
    small = np.random.default_rng(seed).random((h // 30 + 2, w // 30 + 2, 3)).astype(np.float32)
    big = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(0.1 + 0.8 * (big - big.min()) / (big.max() - big.min()), 0, 1).astype(np.float32)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x.clone()


FACES = [(0.3, 0.35, 0.12, 0.2), (0.7, 0.4, 0.08, -0.3)]


def _face_regions(res, shape, upscale):
    inner = np.zeros(shape[:2], bool)
    touched = np.zeros(shape[:2], bool)
    for m in res.matrices:
        s = soft_mask(inverse_affine(m, upscale), res.crops.shape[1], (shape[1], shape[0]), upscale)
        inner |= s > 0.999
        touched |= s > 0
    return inner, touched


def test_round_trip_identity_restorer():
    img = _smooth_image(300, 400)
    res = restore_photo(img, _identity, detector=_FixedDetector(FACES), face_size=256,
                        settings=PhotoSettings(upscale=2))
    bg = lanczos_upsampler(img, 2)
    assert res.image.shape == (600, 800, 3) and res.num_faces == 2 and res.message == ""
    inner, touched = _face_regions(res, bg.shape, 2)
    assert inner.sum() > 20000
    err = np.abs(res.image - bg)
    # outside the faces: exactly the upscaled background; inside: bilinear warps vs Lanczos
    assert err[~touched].max() == 0
    assert err[inner].max() < 0.01 and err[inner].mean() < 1e-3
    # the official +upscale/2 translation (a half-pixel shift at x2) fails the same tolerance
    shifted = [m.copy() for m in res.matrices]
    for m in shifted:
        m[:, 2] -= m[:, :2] @ np.array([0.25, 0.25])  # moves the paste by 0.5 canvas px
    alt = paste_faces(bg, res.restored, np.array(shifted), 2)
    assert np.abs(alt - bg)[inner].max() > 0.01


def test_faces_cut_by_the_border_and_many_faces_batched():
    img = _smooth_image(200, 200, seed=1)
    faces = [(0.02, 0.5, 0.1, 0.0)] + [(0.2 + 0.15 * i, 0.7, 0.04, 0.0) for i in range(5)]
    seen = []

    def restorer(x):
        seen.append(x.shape[0])
        return x

    res = restore_photo(img, restorer, detector=_FixedDetector(faces), face_size=64,
                        settings=PhotoSettings(upscale=1, batch_size=4))
    assert seen == [4, 2] and res.num_faces == 6
    assert np.abs(res.image - img).max() < 0.02  # including the face half outside the image
    gray_fill = np.isclose(res.crops[0, :, 0], np.array([132, 133, 135]) / 255, atol=1e-6).all(axis=-1)
    assert gray_fill.all()  # the left column of the cut face's crop lies outside the image: gray


def test_overlapping_faces_do_not_depend_on_order():
    img = _smooth_image(240, 240, seed=2)
    a = restore_photo(img, lambda x: 1 - x, detector=_FixedDetector([(0.42, 0.5, 0.15, 0), (0.6, 0.5, 0.15, 0.1)]),
                      face_size=128, settings=PhotoSettings(upscale=1))
    b = restore_photo(img, lambda x: 1 - x, detector=_FixedDetector([(0.6, 0.5, 0.15, 0.1), (0.42, 0.5, 0.15, 0)]),
                      face_size=128, settings=PhotoSettings(upscale=1))
    np.testing.assert_allclose(a.image, b.image, atol=1e-6)
    # at each face centre the pixel comes from that face's own crop (inverted colours)
    for cx in (0.42, 0.6):
        x, y = round(cx * 240), round(0.5 * 240)
        np.testing.assert_allclose(a.image[y, x], 1 - img[y, x], atol=0.03)


def test_no_face_still_upscaled():
    img = _smooth_image(50, 80)
    res = restore_photo(img, _identity, detector=_FixedDetector([]), face_size=64, settings=PhotoSettings(upscale=2))
    assert res.num_faces == 0 and "no face" in res.message
    np.testing.assert_array_equal(res.image, lanczos_upsampler(img, 2))
    assert res.crops.shape == (0, 64, 64, 3) and res.matrices.shape == (0, 2, 3)


def test_no_face_with_the_real_detector():
    res = restore_photo(np.full((60, 90, 3), 0.5, np.float32), _identity, detector="mtcnn", face_size=64)
    assert res.num_faces == 0 and res.image.shape == (120, 180, 3)


def test_tiny_faces_are_skipped():
    img = _smooth_image(400, 400)
    res = restore_photo(img, _identity, detector=_FixedDetector([(0.5, 0.5, 0.01, 0)]), face_size=64,
                        settings=PhotoSettings(min_eye_dist=5))
    assert res.num_faces == 0  # eye distance 4 px < 5


def test_rgba_gray_and_16bit_inputs():
    img = _smooth_image(60, 80)
    rgba = np.concatenate([img, np.linspace(0, 1, 80, dtype=np.float32)[None, :, None].repeat(60, 0)], 2)
    res = restore_photo((rgba * 65535).astype(np.uint16), _identity, detector=_FixedDetector(FACES),
                        face_size=64, settings=PhotoSettings(upscale=2))
    assert res.bit_depth == 16 and res.alpha is not None and res.alpha.shape == (120, 160)
    np.testing.assert_allclose(res.alpha[:, 0], 0, atol=0.01)
    np.testing.assert_allclose(res.alpha[:, -1], 1, atol=0.01)
    gray = (img[:, :, 0] * 255).astype(np.uint8)
    res = restore_photo(gray, lambda x: x * torch.tensor([1.0, 0.5, 0.2])[:, None, None],
                        detector=_FixedDetector(FACES), face_size=64)
    assert res.gray and res.bit_depth == 8
    np.testing.assert_array_equal(res.image[..., 0], res.image[..., 2])  # gray in, gray out


def test_input_validation_and_size_limit():
    with pytest.raises(ValueError, match="shape"):
        as_float_image(np.zeros((4, 4, 5)))
    with pytest.raises(ValueError, match="alpha"):
        as_float_image(np.zeros((4, 4, 3)), alpha=np.zeros((3, 3)))
    side = int(np.sqrt(MAX_OUTPUT_PIXELS)) // 2 + 10
    with pytest.raises(ValueError, match="exceeds"):
        restore_photo(np.zeros((side, side, 3), np.uint8), _identity, detector=_FixedDetector([]),
                      face_size=64, settings=PhotoSettings(upscale=2))
    with pytest.raises(ValueError, match="returned shape"):
        restore_photo(_smooth_image(60, 60), lambda x: x[:, :, :10], detector=_FixedDetector(FACES),
                      face_size=64)


def test_parsing_mask_hook_limits_the_paste():
    img = _smooth_image(200, 200)

    def top_half(face):
        m = np.zeros(face.shape[:2], np.float32)
        m[: face.shape[0] // 2] = 1
        return m

    res = restore_photo(img, lambda x: torch.zeros_like(x), detector=_FixedDetector([(0.5, 0.5, 0.2, 0)]),
                        face_size=128, settings=PhotoSettings(upscale=1), mask_fn=top_half)
    centre_top, centre_bottom = res.image[50, 100], res.image[140, 100]  # crop rows ~2..84 are its top half
    assert centre_top.max() < 0.05  # pasted (black) face
    np.testing.assert_allclose(centre_bottom, img[140, 100], atol=1e-6)  # masked out by parsing


def test_draw_boxes_draws_green():
    img = np.zeros((100, 100, 3), np.float32)
    res = restore_photo(img, _identity, detector=_FixedDetector([(0.5, 0.5, 0.2, 0)]), face_size=64,
                        settings=PhotoSettings(upscale=1, draw_boxes=True))
    g = res.image[..., 1] - res.image[..., 0]
    assert (g > 0.5).sum() > 50


def test_pipeline_whole_photo_path(tmp_path, small_models):
    """The whole-photo path of `difface restore` (difface.pipeline): one good RGBA photo, one unreadable;
    per-face seeds from --seed and the crop; crops, restorations and alpha written."""
    import cv2

    from difface.core import DifFace, image_seed
    from difface.face.background import lanczos_upsampler
    from difface.images import write_image
    from difface.pipeline import PhotoOptions, RestoreOptions, RestorePipeline, SamplingOptions, files

    rgba = np.concatenate([_smooth_image(60, 80), np.full((60, 80, 1), 0.5, np.float32)], 2)
    write_image(tmp_path / "a.png", rgba[..., :3], alpha=rgba[..., 3])
    (tmp_path / "b.png").write_bytes(b"broken")
    model = DifFace.from_modules(*small_models)
    calls = []
    restore = model.restore

    def spy(x, plan, **kw):
        seeded = list(kw["seeds"]) == [image_seed(7, im) for im in x]
        calls.append((tuple(x.shape), plan.start, plan.eta, seeded))
        return restore(x, plan, **kw)

    model.restore = spy
    opts = RestoreOptions(sampling=SamplingOptions(start_step=3, eta=0.0, seed=7), photo=PhotoOptions(upscale=2))
    pipe = RestorePipeline(model, opts, detector=_FixedDetector(FACES), bg_upsampler=lanczos_upsampler)
    outcomes = files.run(pipe, [tmp_path / "a.png", tmp_path / "b.png"], tmp_path / "out", progress=False)
    assert [(o.src.name, o.ok, o.faces) for o in outcomes] == [("a.png", True, 2), ("b.png", False, 0)]
    assert "not a readable image" in outcomes[1].reason
    out = cv2.imread(str(tmp_path / "out" / "a.png"), cv2.IMREAD_UNCHANGED)
    assert out.shape == (120, 160, 4) and (out[:, :, 3] == 128).all()
    assert calls == [((1, 3, 64, 64), 3, 0.0, True)] * 2  # two faces, batch size 1
    assert sorted(p.name for p in (tmp_path / "out" / "restored_faces").iterdir()) == ["a_00.png", "a_01.png"]
    assert len(list((tmp_path / "out" / "cropped_faces").iterdir())) == 2


def test_faces_larger_than_max_face_side_are_left_as_they_were():
    img = _smooth_image(300, 400)
    full = restore_photo(img, lambda x: 1 - x, detector=_FixedDetector(FACES), face_size=64,
                         settings=PhotoSettings(upscale=1))
    sides = crop_sides(full.matrices, 64)
    assert sides[0] > sides[1] * 1.4
    limit = float(sides.mean())
    res = restore_photo(img, lambda x: 1 - x, detector=_FixedDetector(FACES), face_size=64,
                        settings=PhotoSettings(upscale=1, max_face_side=limit))
    assert res.num_faces == 1 and res.skipped_large == 1 and "1 face(s) larger than" in res.message
    np.testing.assert_array_equal(res.matrices, full.matrices[1:])
    # the large face's centre keeps the input; the small one's is restored (inverted)
    for (cx, cy, _, _), restored in zip(FACES, (False, True)):
        x, y = round(cx * 400), round(cy * 400)
        expect = 1 - img[y, x] if restored else img[y, x]
        np.testing.assert_allclose(res.image[y, x], expect, atol=0.03)
    none = restore_photo(img, _identity, detector=_FixedDetector(FACES), face_size=64,
                         settings=PhotoSettings(upscale=1, max_face_side=1))
    assert none.num_faces == 0 and none.skipped_large == 2 and "no face restored" in none.message


def test_crop_sides_of_a_similarity():
    m = np.array([[[0.5, 0.0, 3.0], [0.0, 0.5, 1.0]], [[0.0, 0.25, 0.0], [-0.25, 0.0, 0.0]]])
    np.testing.assert_allclose(crop_sides(m, 64), [128.0, 256.0])
