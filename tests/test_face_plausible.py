"""The five-point layout check that every detector's faces pass (difface.face.template.plausible_faces): synthetic
layouts, and (slow, on the shared real photos) the faces found per whole photo."""

from __future__ import annotations

import numpy as np
import pytest

from difface.face.align import select_faces
from difface.face.detect import get_detector
from difface.face.photo import find_faces
from difface.face.template import FFHQ_TEMPLATE_512, face_frame, plausible_faces, template_residual
from difface.images import read_image

from conftest import shared_data


def _face(angle_deg: float = 0.0, eye: float = 40.0, centre=(200.0, 150.0), box_scale: float = 2.2) -> tuple:
    """The template's layout rotated by angle, with eye distance `eye` px, and a box box_scale eye distances wide."""
    t = (FFHQ_TEMPLATE_512 - FFHQ_TEMPLATE_512.mean(0)) / 125.92 * eye
    a = np.radians(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    lm = t @ rot.T + centre
    half = box_scale * eye / 2
    box = np.array([centre[0] - half, centre[1] - half * 1.2, centre[0] + half, centre[1] + half * 1.2])
    return lm, box


def _check(lm, box) -> bool:
    return bool(plausible_faces(np.asarray(lm)[None], np.asarray(box)[None])[0])


def test_faces_at_any_rotation_and_size_pass():
    for angle in (0, 15, -40, 90, 180, 270):
        for eye in (6, 40, 400):
            lm, box = _face(angle, eye)
            assert _check(lm, box), (angle, eye)
    assert plausible_faces(np.zeros((0, 5, 2)), np.zeros((0, 4))).shape == (0,)


def test_face_frame_and_template_residual():
    lm, _ = _face(30, 50)
    p = face_frame(lm)
    np.testing.assert_allclose(p[1] - p[0], [1.0, 0.0], atol=1e-9)  # eyes one eye distance apart along x
    assert 0.5 < p[2, 1] < 0.7 and 0.95 < p[3:, 1].mean() < 1.1  # nose and mouth below the eyes
    assert template_residual(lm) < 1e-9
    lm[2] += (0, 30)  # the nose moved 0.6 eye distances
    assert 0.3 < template_residual(lm) < 0.7


def test_turned_faces_pass_and_broken_layouts_fail():
    lm, box = _face()
    turned = lm.copy()
    turned[2, 0] += 0.4 * 40  # nose towards one cheek (a turned head), mouth following a little
    turned[3:, 0] += 0.15 * 40
    assert _check(turned, box)
    broken = {
        "mirrored (eyes swapped)": lm[[1, 0, 2, 3, 4]],
        "nose above the eyes": np.vstack([lm[:2], lm[2] - (0, 40), lm[3:]]),
        "mouth above the nose": np.vstack([lm[:3], lm[3:] - (0, 25)]),
        "mouth corners together": np.vstack([lm[:3], lm[3:].mean(0), lm[3:].mean(0) + (1, 0)]),
        "mouth line 20 degrees off": np.vstack([lm[:4], lm[4] + (0, np.tan(np.radians(20)) * 35)]),
        "mouth far below": np.vstack([lm[:3], lm[3:] + (0, 80)]),
    }
    for why, bad in broken.items():
        assert not _check(bad, box), why
    assert not _check(lm, np.array([0, 0, 800, 800]))  # eyes 40 px apart in an 800 px box: not this face's box
    assert not _check(lm, np.array([195, 145, 215, 165]))  # a box narrower than the eyes


def test_scattered_points_fail():
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 100, (2000, 5, 2))
    boxes = np.concatenate([pts.min(1) - 10, pts.max(1) + 10], axis=1)
    assert plausible_faces(pts, boxes).mean() < 0.01


def test_select_faces_drops_implausible_layouts():
    good, box = _face()
    bad = good[[1, 0, 2, 3, 4]]
    lms, boxes = np.stack([good, bad, good + (300, 0)]), np.stack([box, box, box + (300, 0, 300, 0)])
    assert select_faces(boxes, lms, (400, 700)).tolist() == [0, 2]
    assert select_faces(boxes, lms, (400, 700), plausible_only=False).tolist() == [0, 1, 2]


# Faces in each whole photo of the shared real photos, counted by eye (docs/whole-photos.md's table).
TRUE_FACES = {
    "difface-testdata/whole_imgs/00.jpg": 4, "difface-testdata/whole_imgs/01.jpg": 4,
    "difface-testdata/whole_imgs/02.png": 4, "difface-testdata/whole_imgs/03.png": 2,
    "difface-testdata/whole_imgs/04.jpg": 1, "difface-testdata/whole_imgs/05.jpg": 1,
    "difface-testdata/Solvay_conference_1927.png": 29, "gfpgan-inputs/whole_imgs/00.jpg": 2,
    "gfpgan-inputs/whole_imgs/10045.png": 3, "gfpgan-inputs/whole_imgs/Blake_Lively.jpg": 2,
    "codeformer-inputs/whole_imgs/03.jpg": 1, "pypi-samples/t1.jpg": 6,
}


@pytest.mark.slow
def test_every_real_face_of_the_whole_photos_is_kept():
    root = shared_data("real-world")
    detector = get_detector("mtcnn")
    found = {name: len(find_faces(read_image(root / name).rgb, detector)) for name in TRUE_FACES}
    assert found == TRUE_FACES
