"""Similarity estimation, template, crop warping and face selection."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from difface.face.align import (
    align_faces,
    apply_affine,
    estimate_alignment,
    select_faces,
    similarity_lmeds,
    similarity_lstsq,
    warp_faces,
)
from difface.face.template import BORDER_GRAY_RGB, FFHQ_TEMPLATE_512, eye_distance, face_template


def _similarity(scale: float, angle_deg: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    c, s = scale * np.cos(a), scale * np.sin(a)
    return np.array([[c, -s, tx], [s, c, ty]])


def test_template_values_and_scaling():
    assert FFHQ_TEMPLATE_512[0].tolist() == [192.98138, 239.94708]
    assert FFHQ_TEMPLATE_512[4].tolist() == [313.08905, 371.15118]
    np.testing.assert_allclose(face_template(64), FFHQ_TEMPLATE_512 / 8)
    # eye distance of the 512 template, by hand: hypot(318.90277 - 192.98138, 240.1936 - 239.94708)
    assert eye_distance(FFHQ_TEMPLATE_512) == pytest.approx(125.921631, abs=1e-5)


@pytest.mark.parametrize("params", [(1.0, 0, 0, 0), (0.37, 23.0, -14.2, 88.1), (3.1, -170.0, 500.0, -3.0)])
def test_lstsq_recovers_known_transform(params):
    m = _similarity(*params)
    src = np.random.default_rng(1).uniform(-50, 300, (5, 2))
    dst = src @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(similarity_lstsq(src, dst), m, atol=1e-9)
    est, inliers = similarity_lmeds(src, dst)
    np.testing.assert_allclose(est, m, atol=1e-9)
    assert inliers.all()


def test_lmeds_rejects_one_outlier():
    m = _similarity(0.8, 10.0, 5.0, -7.0)
    src = FFHQ_TEMPLATE_512 * 0.5 + 40
    dst = src @ m[:, :2].T + m[:, 2]
    dst[2] += (30.0, -25.0)  # a badly detected nose
    est, inliers = similarity_lmeds(src, dst)
    assert inliers.tolist() == [True, True, False, True, True]
    np.testing.assert_allclose(est, m, atol=1e-9)
    assert not np.allclose(similarity_lstsq(src, dst), m, atol=1e-3)


def test_matches_opencv_estimate_affine_partial_lmeds():
    rng = np.random.default_rng(7)
    tpl = face_template(512)
    for _ in range(20):
        m = _similarity(rng.uniform(0.2, 3), rng.uniform(-40, 40), *rng.uniform(-100, 100, 2))
        src = (tpl - m[:, 2]) @ np.linalg.inv(m[:, :2]).T + rng.normal(0, 2.0, (5, 2))
        ref, _ = cv2.estimateAffinePartial2D(src.astype(np.float32), tpl.astype(np.float32), method=cv2.LMEDS)
        ours = estimate_alignment(src, 512)
        # compare where it matters: the mapped landmarks, within 0.5 px in the 512 crop
        np.testing.assert_allclose(apply_affine(ours, src), apply_affine(ref, src), atol=0.5)


def test_coincident_points_raise():
    with pytest.raises(ValueError, match="coincide"):
        similarity_lstsq(np.zeros((5, 2)), np.ones((5, 2)))


def test_warp_matches_opencv_inside_and_is_gray_outside():
    rng = np.random.default_rng(3)
    img = cv2.GaussianBlur(rng.random((120, 160, 3)).astype(np.float32), (0, 0), 2)
    m = _similarity(1.3, 12.0, -30.0, 10.0)
    crop = warp_faces(img, m[None], 96)[0]
    ref = cv2.warpAffine(img, m, (96, 96), flags=cv2.INTER_LINEAR)
    inv = cv2.invertAffineTransform(m)
    v, u = np.mgrid[0:96, 0:96]
    x = inv[0, 0] * u + inv[0, 1] * v + inv[0, 2]
    y = inv[1, 0] * u + inv[1, 1] * v + inv[1, 2]
    inside = (x >= 0) & (x <= 159) & (y >= 0) & (y <= 119)
    far = (x < -2) | (x > 161) | (y < -2) | (y > 121)
    assert inside.sum() > 1000 and far.sum() > 100
    np.testing.assert_allclose(crop[inside], ref[inside], atol=1e-5)
    np.testing.assert_allclose(crop[far], np.broadcast_to(BORDER_GRAY_RGB, crop[far].shape), atol=1e-6)


def test_align_faces_puts_landmarks_on_template():
    m = _similarity(0.5, -8.0, 20.0, 15.0)  # image -> crop
    lm_img = (face_template(64) - m[:, 2]) @ np.linalg.inv(m[:, :2]).T
    crops, mats = align_faces(np.zeros((200, 200, 3), np.float32), lm_img[None], 64)
    assert crops.shape == (1, 64, 64, 3) and mats.shape == (1, 2, 3)
    np.testing.assert_allclose(mats[0], m, atol=1e-9)


def test_select_faces_uses_the_eye_indices():
    # face 0: eyes 4 px apart, but the official index slip would read |y_le - y_re|, |x_re - x_nose|
    # = (0, 40) -> 40 and keep it; face 1: eyes 30 px apart.
    lm = np.array([
        [[100, 100], [104, 100], [144, 120], [95, 140], [110, 140]],
        [[10, 10], [40, 10], [25, 25], [15, 35], [35, 35]],
    ], np.float64)
    boxes = np.array([[80, 80, 150, 160], [0, 0, 50, 50]], np.float64)
    raw = {"plausible_only": False}  # face 0 is no face's layout (the layout check is tested in test_face_plausible)
    assert select_faces(boxes, lm, (200, 200), min_eye_dist=5, **raw).tolist() == [1]
    assert select_faces(boxes, lm, (200, 200), min_eye_dist=3, **raw).tolist() == [0, 1]
    assert select_faces(boxes, lm, (200, 200), min_eye_dist=3).tolist() == [1]
    # centre face: box centres (115, 120) and (25, 25); image centre (100, 100)
    assert select_faces(boxes, lm, (200, 200), min_eye_dist=0, only_center_face=True, **raw).tolist() == [0]
    assert select_faces(boxes, lm, (200, 200), min_eye_dist=0, largest_face=True, **raw).tolist() == [1]
    assert select_faces(boxes[:0], lm[:0], (200, 200)).tolist() == []
