"""Never less detail than the input: the band merge of a model smaller than the face.

The bundled 64 px model on sharp faces larger than 64 px: the Laplacian energy of the output over the
input's where the output changed (`metrics.sharpness.detail_ratio`) stays >= 0.9, for aligned 512 and
128 px faces and for a whole photo at --upscale 1; at 64 px the merge changes nothing, bit for bit.
Data: the public-domain NASA astronaut portrait (scikit-image), and ../shared/data's real faces in
the slow variant.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from difface.face import band
from difface.face.align import align_faces
from difface.face.background import lanczos_upsampler
from difface.face.detect import Detections, get_detector
from difface.face.photo import PhotoSettings, crop_sides, find_faces, restore_photo
from difface.images import LoadedImage, image_to_tensor, read_image, tensor_to_image
from difface.metrics.sharpness import changed_mask, detail_ratio
from difface.pipeline import PhotoOptions, RestoreOptions, RestorePipeline

from conftest import shared_data


def _q8(a: np.ndarray) -> np.ndarray:
    return (np.round(np.clip(a, 0, 1) * 255) / 255).astype(np.float32)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut().astype(np.float32) / 255


@pytest.fixture(scope="module")
def aligned_pipe() -> RestorePipeline:
    return RestorePipeline.load(RestoreOptions(aligned=True))


@pytest.fixture(scope="module")
def photo_pipe() -> RestorePipeline:
    return RestorePipeline.load(RestoreOptions(photo=PhotoOptions(upscale=1, bg_upsampler="lanczos")))


@pytest.fixture(scope="module")
def known(astronaut):
    """A detector that returns the astronaut's MTCNN face (detected once), scaled to the image it is given."""
    dets = find_faces(astronaut, get_detector("mtcnn"), largest_face=True)

    class Known:
        name = "known"

        def detect(self, rgb: np.ndarray) -> Detections:
            r = rgb.shape[1] / astronaut.shape[1]
            return Detections(dets.boxes * r, dets.scores, dets.landmarks * r)

    return Known()


def _aligned(rgb: np.ndarray, size: int, detector) -> tuple[np.ndarray, float]:
    dets = find_faces(rgb, detector, largest_face=True)
    crops, mats = align_faces(rgb, np.asarray(dets.landmarks, np.float64).reshape(-1, 5, 2), size)
    return _q8(crops[0]), float(crop_sides(mats, size)[0])


def _old_way(pipe: RestorePipeline, face: np.ndarray) -> np.ndarray:
    """What the pipeline did before the merge: the model's 64 px output enlarged (same seed, same output)."""
    s = pipe.model.image_size
    y = pipe.restore_faces(band.resize(image_to_tensor(face), (s, s))).result
    return tensor_to_image(band.resize(y, face.shape[:2]))


def test_detail_ratio_definition():
    rng = np.random.default_rng(0)
    x = rng.random((32, 32, 3)).astype(np.float32)
    assert detail_ratio(x, x) == 1.0  # nothing changed, nothing lost
    assert not changed_mask(x + 1.9 / 255, x).any() and changed_mask(x + 2.1 / 255, x).all()
    blur = cv2.GaussianBlur(x, (5, 5), 1.5)
    assert detail_ratio(blur, x) < 0.1
    y = np.clip(0.5 + 2 * (x - 0.5), 0, 1)  # more contrast: more detail
    assert detail_ratio(y, x) > 1.5
    assert detail_ratio(x, y) < 0.7


def test_merge_is_exact_at_the_model_size_and_an_identity_elsewhere():
    rng = np.random.default_rng(1)
    y = torch.from_numpy(rng.random((1, 3, 64, 64)).astype(np.float32))
    x64 = torch.from_numpy(rng.random((1, 3, 64, 64)).astype(np.float32))
    assert band.merge_band(x64, y, x64) is y  # no arithmetic at all at 64 px
    x = torch.from_numpy(rng.random((1, 3, 200, 200)).astype(np.float32))
    seen = band.resize(x, (64, 64))
    torch.testing.assert_close(band.merge_band(x, seen, seen), x, atol=1e-6, rtol=0)  # unchanged -> the input
    assert not band.applies((64, 64), 64) and not band.applies((48, 200), 64) and band.applies((65, 64), 64)


def test_aligned_64_px_is_bit_identical_to_the_model_output(aligned_pipe, astronaut, known):
    face, _ = _aligned(astronaut, 64, known)
    got = aligned_pipe.restore_aligned([LoadedImage(face, None, 8, False)])[0]
    y = aligned_pipe.restore_faces(image_to_tensor(face)).result
    np.testing.assert_array_equal(got.image, tensor_to_image(y))


@pytest.mark.parametrize("size", [512, 128])
def test_sharp_aligned_faces_keep_their_detail(aligned_pipe, astronaut, known, size, caplog):
    if size == 512:  # the portrait's face spans 172 px: x3.5 Lanczos, plus seeded fine grain to make it sharp
        big = cv2.resize(astronaut, None, fx=3.5, fy=3.5, interpolation=cv2.INTER_LANCZOS4).clip(0, 1)
        face, side = _aligned(big, size, known)
        noise = np.random.default_rng(2).standard_normal(face.shape[:2]).astype(np.float32)
        grain = cv2.GaussianBlur(noise, (0, 0), 0.7)
        face = _q8(face + 0.04 * grain[:, :, None])
    else:
        face, side = _aligned(astronaut, size, known)
    assert side >= size  # a true crop of the source, not an upscale
    with caplog.at_level("INFO", logger="difface"):
        out = _q8(aligned_pipe.restore_aligned([LoadedImage(face, None, 8, False)])[0].image)
    assert f"face {size} px, model 64 px: coarse band restored, fine detail kept from the input" in caplog.text
    assert changed_mask(out, face).mean() > 0.05  # the model did change the face
    assert detail_ratio(out, face) >= 0.9
    assert detail_ratio(_q8(_old_way(aligned_pipe, face)), face) < (0.05 if size == 512 else 0.5)  # the blur it was


def test_whole_photo_at_upscale_1_keeps_its_detail(photo_pipe, astronaut, known):
    for scale in (1.0, 0.6):  # the face spans 172 px, then about 103 px
        photo = _q8(cv2.resize(astronaut, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))
        res = photo_pipe.restore_image(LoadedImage(photo, None, 8, False))  # the real detector
        assert res.faces == 1 and "coarse band restored, fine detail kept from the input" in res.message
        out = _q8(res.image)
        assert changed_mask(out, photo).mean() > 0.005
        assert detail_ratio(out, photo) >= 0.9
        old = restore_photo(photo, lambda x: photo_pipe.restore_faces(x).result, detector=known, face_size=64,
                            settings=PhotoSettings(upscale=1, keep_detail=False), bg_upsampler=lanczos_upsampler)
        assert detail_ratio(_q8(old.image), photo) < 0.6  # the face pasted from 64 px, as before


def test_photo_faces_of_any_size_lose_nothing_to_the_paste(astronaut, known):
    """A restorer that changes nothing gives the background back exactly (faces of ~52 and ~172 px, x1 and
    x2); pasting the crops whole, as before the merge, loses detail to the warp into the crop and back."""
    for scale in (0.3, 1.0):
        photo = _q8(cv2.resize(astronaut, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))
        for up in (1, 2):
            kw = dict(detector=known, face_size=64, bg_upsampler=lanczos_upsampler)
            merged = restore_photo(photo, lambda x: x.clone(), settings=PhotoSettings(upscale=up), **kw)
            assert merged.num_faces == 1
            np.testing.assert_array_equal(merged.image, lanczos_upsampler(photo, up))
            if up == 1:
                whole = restore_photo(photo, lambda x: x.clone(),
                                      settings=PhotoSettings(upscale=1, keep_detail=False), **kw)
                assert detail_ratio(_q8(whole.image), photo) < 0.7
    # a parsing mask of zeros keeps the background; the outlines are drawn on top of the corrections
    kw = dict(detector=known, face_size=64, settings=PhotoSettings(upscale=1), bg_upsampler=lanczos_upsampler)
    masked = restore_photo(astronaut, lambda x: 1 - x, mask_fn=lambda f: np.zeros(f.shape[:2], np.float32), **kw)
    np.testing.assert_array_equal(masked.image, astronaut)
    boxed = restore_photo(astronaut, lambda x: 1 - x, **{**kw, "settings": PhotoSettings(upscale=1, draw_boxes=True)})
    assert np.abs(boxed.image - restore_photo(astronaut, lambda x: 1 - x, **kw).image).max() > 0.5


@pytest.mark.slow
def test_real_sharp_faces_keep_their_detail(aligned_pipe, photo_pipe):
    hq = sorted(shared_data("real-world", "ffhq-pairs-gpen", "hq").glob("*.png"))[:3]
    for size in (512, 128):
        faces = [_aligned(read_image(p).rgb, size, get_detector("mtcnn"))[0] for p in hq]
        outs = aligned_pipe.restore_aligned([LoadedImage(f, None, 8, False) for f in faces])
        for f, o in zip(faces, outs):
            assert detail_ratio(_q8(o.image), f) >= 0.9
    photos = shared_data("real-world")
    for p in (photos / "difface-testdata" / "whole_imgs" / "04.jpg", photos / "pypi-samples" / "t1.jpg"):
        im = read_image(p)
        res = photo_pipe.restore_image(im)
        assert res.faces >= 1
        assert detail_ratio(_q8(res.image), im.rgb) >= 0.9


def test_sharp_clip_keeps_its_detail_at_upscale_1(astronaut, tmp_path, capsys):
    """Videos use the band merge too: a lossless 3-frame clip of the sharp astronaut (face ~170 px,
    restored by default) comes back at --upscale 1 with >= 0.9 of each frame's detail where it changed (the crops
    pasted whole, as before, kept 0.51)."""
    av = pytest.importorskip("av")
    from difface.cli import main

    frames = [(np.roll(astronaut, 2 * k, axis=1) * 255).round().astype(np.uint8) for k in range(3)]
    src = tmp_path / "sharp.mp4"
    with av.open(str(src), "w") as c:
        s = c.add_stream("libx264", rate=10, options={"qp": "0"})  # lossless luma
        s.width, s.height, s.pix_fmt = 512, 512, "yuv444p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)

    def decode(path):
        with av.open(str(path)) as c:
            return [f.to_ndarray(format="rgb24").astype(np.float32) / 255 for f in c.decode(video=0)]

    assert main(["restore", str(src), "-o", str(tmp_path / "out"), "--upscale", "1", "--bg-upsampler", "lanczos",
                 "--crf", "0"]) == 0
    inp, out = decode(src), decode(tmp_path / "out" / "sharp.mp4")
    assert len(out) == len(inp) == 3
    ratios = [detail_ratio(o, i) for o, i in zip(out, inp)]
    assert "3 frames, 3 faces" in capsys.readouterr().err  # the face was restored in every frame, not left alone
    assert min(ratios) >= 0.9, ratios
