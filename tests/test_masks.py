"""Inpainting masks: official detection, user masks (threshold, resize, errors), seeded generators."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from _train_utils import write_images
from difface.data.datasets import MaskedFaces
from difface.data.masks import (
    apply_mask,
    box_mask,
    detect_mask,
    irregular_mask,
    load_mask,
    make_mask,
    mixed_mask,
    outpainting_mask,
    resize_nearest,
    seeded_mask,
)
from difface.images import ImageReadError

KINDS = ("irregular", "box", "outpainting", "mixed")


# --------------------------------------------------------------------------- detection


def test_detect_mask_is_channel_sum_exactly_zero():
    lq = torch.full((2, 3, 2, 3), 0.5)
    lq[0, :, 0, 0] = 0.0                                  # a hole
    lq[0, :, 1, 2] = torch.tensor([0.0, 0.0, 1e-7])       # nearly black: known
    lq[1, :, 0, 1] = torch.tensor([0.25, -0.25, 0.0])     # sums to 0: a hole by the official rule
    m = detect_mask(lq)
    assert m.shape == (2, 1, 2, 3) and m.dtype == lq.dtype
    expected = torch.zeros(2, 1, 2, 3)
    expected[0, 0, 0, 0] = 1
    expected[1, 0, 0, 1] = 1
    assert torch.equal(m, expected)
    with pytest.raises(ValueError):
        detect_mask(lq[0])


def test_apply_mask_makes_holes_exactly_black_and_detectable():
    img = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.9 + 0.05
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:5, 3:7] = 1
    lq = apply_mask(img, mask)
    assert torch.equal(lq[..., 2:5, 3:7], torch.zeros(1, 3, 3, 4))
    assert torch.equal(lq[..., :2, :], img[..., :2, :])
    assert torch.equal(detect_mask(lq), mask)


# --------------------------------------------------------------------------- user masks


def _write(path, array):
    assert cv2.imwrite(str(path), array)
    return path


def test_load_mask_gray_threshold_at_half(tmp_path):
    a = np.zeros((4, 4), np.uint8)
    a[0, 0], a[0, 1], a[1, 1], a[2, 2] = 127, 128, 255, 200
    m = load_mask(_write(tmp_path / "m.png", a))
    assert m.dtype == np.float32 and m.shape == (4, 4)
    expected = np.zeros((4, 4), np.float32)
    expected[0, 1] = expected[1, 1] = expected[2, 2] = 1  # 127/255 < 0.5 <= 128/255
    np.testing.assert_array_equal(m, expected)


def test_load_mask_rgb_uses_luma_and_rgba_composites_on_black(tmp_path):
    bgr = np.zeros((2, 3, 3), np.uint8)
    bgr[0, 0] = (0, 0, 255)      # pure red: luma 0.299 -> known
    bgr[0, 1] = (0, 255, 255)    # yellow: luma 0.886 -> missing
    bgr[0, 2] = (255, 255, 255)  # white -> missing
    bgr[1, 0] = (0, 255, 0)      # green: luma 0.587 -> missing
    bgr[1, 1] = (255, 0, 0)      # blue: luma 0.114 -> known
    np.testing.assert_array_equal(load_mask(_write(tmp_path / "rgb.png", bgr)), [[0, 1, 1], [1, 0, 0]])
    bgra = np.full((2, 2, 4), 255, np.uint8)
    bgra[0, 0, 3] = 0      # white but transparent -> known
    bgra[0, 1, 3] = 100    # white, alpha 0.39 -> known
    bgra[1, 1, :3] = 0     # black, opaque -> known
    np.testing.assert_array_equal(load_mask(_write(tmp_path / "rgba.png", bgra)), [[0, 0], [1, 0]])


def test_load_mask_16_bit_and_arrays(tmp_path):
    a16 = np.zeros((3, 3), np.uint16)
    a16[1, 1] = 40000
    a16[0, 0] = 30000  # 0.458 -> known
    expected = np.zeros((3, 3), np.float32)
    expected[1, 1] = 1
    np.testing.assert_array_equal(load_mask(_write(tmp_path / "m16.png", a16)), expected)
    np.testing.assert_array_equal(load_mask(a16), expected)
    np.testing.assert_array_equal(load_mask(expected.astype(bool)), expected)
    np.testing.assert_array_equal(load_mask(torch.from_numpy(expected * 0.8)), expected)
    np.testing.assert_array_equal(load_mask((expected * 255).astype(np.uint8)[:, :, None]), expected)


def test_resize_nearest_uses_pixel_centres():
    a = np.arange(16, dtype=np.float32).reshape(4, 4)
    np.testing.assert_array_equal(resize_nearest(a, 2), [[5, 7], [13, 15]])
    np.testing.assert_array_equal(resize_nearest(a, (1, 4)), [[8, 9, 10, 11]])
    b = np.array([[0, 1], [1, 0]], np.float32)
    np.testing.assert_array_equal(resize_nearest(b, 4), [[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]])
    c = np.arange(9, dtype=np.float32).reshape(3, 3)
    np.testing.assert_array_equal(resize_nearest(c, 2), [[0, 2], [6, 8]])  # floor((i + 0.5) * 1.5) = 0, 2


def test_load_mask_resizes_to_the_image(tmp_path):
    a = np.zeros((8, 16), np.uint8)
    a[:4, 8:] = 255  # the top-right quarter
    m = load_mask(_write(tmp_path / "m.png", a), (64, 64))
    assert m.shape == (64, 64) and set(np.unique(m)) == {0.0, 1.0}
    assert m[:32, 32:].all() and not m[32:, :].any() and not m[:, :32].any()
    assert load_mask(_write(tmp_path / "m2.png", a), 4).tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [0] * 4, [0] * 4]


def test_load_mask_errors_name_the_file(tmp_path):
    black = _write(tmp_path / "black.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"black\.png: the mask marks no pixel as missing"):
        load_mask(black)
    white = _write(tmp_path / "white.png", np.full((8, 8), 255, np.uint8))
    with pytest.raises(ValueError, match=r"white\.png: the mask marks every pixel as missing"):
        load_mask(white, 16)
    dot = np.zeros((8, 8), np.uint8)
    dot[0, 0] = 255  # one pixel that nearest-neighbour downsizing to 2x2 does not sample
    with pytest.raises(ValueError, match=r"dot\.png: the mask marks no pixel"):
        load_mask(_write(tmp_path / "dot.png", dot), 2)
    assert load_mask(tmp_path / "dot.png").sum() == 1
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"empty\.png"):
        load_mask(tmp_path / "empty.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ValueError, match=r"corrupt\.png"):
        load_mask(tmp_path / "corrupt.png")
    with pytest.raises(ValueError, match="my mask: the mask marks no pixel"):
        load_mask(np.zeros((4, 4)), name="my mask")
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        load_mask(np.zeros((4, 4, 5)))


# --------------------------------------------------------------------------- generators


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", [256, 64, (48, 80)])
def test_generators_are_seeded_binary_and_sized(kind, size):
    a = make_mask(kind, np.random.default_rng([3, 1]), size)
    b = make_mask(kind, np.random.default_rng([3, 1]), size)
    shape = (size, size) if isinstance(size, int) else size
    assert a.shape == shape and a.dtype == np.float32
    assert set(np.unique(a)) <= {0.0, 1.0}
    np.testing.assert_array_equal(a, b)
    others = [make_mask(kind, np.random.default_rng([3, k]), size) for k in range(2, 12)]
    assert any(not np.array_equal(a, o) for o in others)
    np.testing.assert_array_equal(seeded_mask(kind, size, 3, 1), a)


def test_generators_do_not_touch_the_global_rng():
    np.random.seed(5)
    before = np.random.random()
    np.random.seed(5)
    for kind in KINDS:
        make_mask(kind, np.random.default_rng(0), 64)
    assert np.random.random() == before
    with pytest.raises(ValueError, match="unknown mask kind"):
        make_mask("stripes", np.random.default_rng(0), 64)


def _coverage(fn, size, n=300):
    return np.array([fn(np.random.default_rng([11, i]), size).mean() for i in range(n)])


@pytest.mark.parametrize("fn,lo,hi", [(irregular_mask, 0.30, 0.60), (box_mask, 0.15, 0.35),
                                      (outpainting_mask, 0.20, 0.45)])
def test_coverage_is_sane_and_scales_with_size(fn, lo, hi):
    c256, c64 = _coverage(fn, 256), _coverage(fn, 64)
    assert lo < c256.mean() < hi
    assert (c256 > 0).all() and (c256 < 1).all() and (c64 > 0).all() and (c64 < 1).all()
    # the parameters scale with the size: the same fraction of the image in distribution
    assert abs(c256.mean() - c64.mean()) < 0.04


def test_box_masks_keep_the_margin_and_are_rectangles():
    for i in range(50):
        m = box_mask(np.random.default_rng(i), 256)
        border = np.ones_like(m, bool)
        border[10:-10, 10:-10] = False
        assert not m[border].any()
        n, labels = cv2.connectedComponents(m.astype(np.uint8))
        assert 2 <= n <= 5  # 1 to 4 boxes (overlapping boxes merge)
    for i in range(50):  # at 64 px the 10-px margin becomes round(2.5) = 2 px
        m = box_mask(np.random.default_rng(i), 64)
        assert not m[:2].any() and not m[-2:].any() and not m[:, :2].any() and not m[:, -2:].any()


def _is_outpainting(m: np.ndarray) -> bool:
    """True when the known region is one axis-aligned rectangle and every masked pixel lies in a band
    between it and a border (and at least one border is touched)."""
    known = np.argwhere(m == 0)
    if len(known) == 0 or m.sum() == 0:
        return False
    (y0, x0), (y1, x1) = known.min(0), known.max(0)
    inner = np.zeros_like(m)
    inner[y0:y1 + 1, x0:x1 + 1] = 1
    return bool(((m == 0) == (inner == 1)).all())


def test_outpainting_masks_are_border_bands_of_the_official_widths():
    for i in range(100):
        m = outpainting_mask(np.random.default_rng(i), 256)
        assert _is_outpainting(m)
        known = np.argwhere(m == 0)
        (y0, x0), (y1, x1) = known.min(0), known.max(0)
        for width in (x0, y0, 255 - x1, 255 - y1):  # band widths: 0 or int(0.04 S)..int(0.30 S)-1
            assert width == 0 or 10 <= width <= 75


def test_mixed_draws_each_kind_about_a_third_of_the_time(monkeypatch):
    import difface.data.masks as masks

    calls = []
    for name in ("irregular_mask", "box_mask", "outpainting_mask"):
        def stub(rng, size, _name=name):
            calls.append(_name)
            return np.full((size, size), len(calls), np.float32)
        monkeypatch.setattr(masks, name, stub)
    n = 600
    for i in range(n):
        out = masks.mixed_mask(np.random.default_rng([7, i]), 8)
        assert out.shape == (8, 8) and out[0, 0] == len(calls) == i + 1  # exactly one generator per mask
    for name in ("irregular_mask", "box_mask", "outpainting_mask"):
        assert abs(calls.count(name) - n / 3) < 60, name  # binomial(600, 1/3): sd 11.5
    calls.clear()
    for i in range(50):
        masks.mixed_mask(np.random.default_rng(i), 8, probs=(0, 2, 0))  # unnormalised weights are fine
    assert calls == ["box_mask"] * 50
    monkeypatch.undo()
    assert all(_is_outpainting(mixed_mask(np.random.default_rng(i), 64, probs=(0, 0, 1))) for i in range(20))


# --------------------------------------------------------------------------- dataset


def test_masked_faces_items(tmp_path):
    folder = write_images(tmp_path / "faces", 3, size=32)
    ds = MaskedFaces(folder, size=32, seed=4, flip=True)
    a, b = ds.item(1, 0), ds.item(1, 0)
    assert set(a) == {"lq", "gt", "mask"}
    assert a["lq"].shape == a["gt"].shape == (3, 32, 32) and a["mask"].shape == (1, 32, 32)
    for k in a:
        assert torch.equal(a[k], b[k])  # a function of (seed, epoch, index)
    assert torch.equal(a["lq"], a["gt"] * (1 - a["mask"]))
    assert set(a["mask"].unique().tolist()) <= {0.0, 1.0} and 0 < a["mask"].mean() < 1
    black = (a["gt"].sum(0, keepdim=True) == 0).float()  # truly black known pixels count as holes
    assert torch.equal(detect_mask(a["lq"][None])[0], torch.maximum(a["mask"], black))
    assert not torch.equal(ds.item(1, 1)["mask"], a["mask"])  # another epoch, another mask
    assert not torch.equal(ds.item(2, 0)["mask"], a["mask"])
    assert 0.0 <= float(a["gt"].min()) and float(a["gt"].max()) <= 1.0
    with pytest.raises(ValueError, match="unknown mask kind"):
        MaskedFaces(folder, size=32, mask_kind="blobs")
