"""ImageFolder, PairedFolder and SyntheticPairs: ranges, matching, skipping bad files, determinism."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
import torch
from skimage import data
from torch.utils.data import DataLoader

from difface.data.datasets import ImageFolder, PairedFolder, SyntheticPairs, list_images, resize_square
from difface.data.degrade import DegradationConfig, get_degradation


def _write(path, rgb_u8):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb_u8[:, :, ::-1]))


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """A folder with 6 astronaut crops (32x32 PNG/JPG, one in a sub-folder) and their uint8 data."""
    root = tmp_path_factory.mktemp("faces")
    a = data.astronaut()
    imgs = {}
    for i in range(6):
        u8 = cv2.resize(a[i * 6 : 220 + i * 6, 140:360], (32, 32), interpolation=cv2.INTER_AREA)
        name = f"sub/f{i}.png" if i == 5 else f"f{i}.png"
        _write(root / name, u8)
        imgs[f"f{i}"] = u8
    return root, imgs


def test_list_images_recursive(faces):
    root, _ = faces
    (root / "notes.txt").write_text("x")
    assert [p.stem for p in list_images(root)] == ["f0", "f1", "f2", "f3", "f4", "f5"]
    assert len(list_images(root, recursive=False)) == 5


def test_image_folder_values_and_range(faces):
    root, imgs = faces
    ds = ImageFolder(root)
    x = ds[2]
    assert len(ds) == 6 and x.shape == (3, 32, 32) and x.dtype == torch.float32
    ref = imgs["f2"].astype(np.float32).transpose(2, 0, 1) / 255 * 2 - 1
    np.testing.assert_allclose(x.numpy(), ref, atol=1e-6)
    y = ImageFolder(root, value_range=(0.0, 1.0))[2]
    np.testing.assert_allclose(y.numpy(), (ref + 1) / 2, atol=1e-6)


def test_image_folder_resize_and_flip(faces):
    root, _ = faces
    ds = ImageFolder(root, size=16, flip=True, seed=3)
    flips = set()
    for epoch in range(8):
        ds.set_epoch(epoch)
        x = ds[0]
        assert x.shape == (3, 16, 16)
        plain = ImageFolder(root, size=16)[0]
        assert torch.equal(x, plain) or torch.equal(x, plain.flip(-1))
        flips.add(torch.equal(x, plain))
        assert torch.equal(ds.item(0, epoch), x)
    assert flips == {True, False}


def test_resize_square_crops_centre():
    img = np.zeros((40, 20, 3), np.float32)
    img[10:30] = 1.0  # centre 20 rows white
    out = resize_square(img, 10)
    assert out.shape == (10, 10, 3) and out.min() == 1.0
    same = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)
    assert resize_square(same, 8) is same


def test_bad_image_skipped_counted_and_logged(tmp_path, caplog):
    a = data.astronaut()[:32, :32]
    _write(tmp_path / "a.png", a)
    (tmp_path / "b.png").write_bytes(b"garbage")
    _write(tmp_path / "c.png", a[::-1])
    ds = ImageFolder(tmp_path)
    with caplog.at_level(logging.WARNING):
        x = ds[1]
    assert torch.equal(x, ds[2])  # the next good file
    assert ds.num_failed == 1 and list(ds.failed) == [1]
    assert "b.png" in caplog.text
    assert torch.equal(ds[1], x) and ds.num_failed == 1  # not retried, not re-counted
    loader_items = list(DataLoader(ds, batch_size=3))
    assert loader_items[0].shape == (3, 3, 32, 32)


def test_all_bad_raises(tmp_path):
    (tmp_path / "x.png").write_bytes(b"")
    with pytest.raises(RuntimeError, match="none of the 1"):
        ImageFolder(tmp_path)[0]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        ImageFolder(tmp_path / "empty")


def test_paired_folder_matches_by_stem(tmp_path, caplog):
    a = data.astronaut()
    for name in ("p1", "p2", "only_lq"):
        _write(tmp_path / "lq" / f"{name}.png", a[:16, :16])
    for name, off in (("p1", 0), ("p2", 50), ("only_hq", 0)):
        _write(tmp_path / "hq" / f"{name}.jpg" if name == "p2" else tmp_path / "hq" / f"{name}.png",
               a[off : off + 32, :32])
    with caplog.at_level(logging.WARNING):
        ds = PairedFolder(tmp_path / "lq", tmp_path / "hq")
    assert "2 file(s) without a partner" in caplog.text
    assert len(ds) == 2 and ds.names == ["p1", "p2"]
    item = ds[0]
    assert item["name"] == "p1" and item["lq"].shape == (3, 16, 16) and item["gt"].shape == (3, 32, 32)
    np.testing.assert_allclose(item["gt"].numpy(), a[:32, :32].transpose(2, 0, 1) / 255, atol=1e-6)
    _write(tmp_path / "hq" / "p1.bmp", a[:8, :8])
    with pytest.raises(ValueError, match="share the name"):
        PairedFolder(tmp_path / "lq", tmp_path / "hq")


def test_synthetic_pairs_shapes_grid_and_gt(faces):
    root, imgs = faces
    ds = SyntheticPairs(root, get_degradation("gfpgan"), seed=1, size=32)
    assert ds.cfg.resolution == 32 and ds.cfg.effective_kernel_size == 3
    item = ds[0]
    assert set(item) == {"lq", "gt"}
    assert item["lq"].shape == item["gt"].shape == (3, 32, 32)
    lq = item["lq"].numpy()
    assert lq.min() >= 0 and lq.max() <= 1
    np.testing.assert_allclose(lq * 255, np.rint(lq * 255), atol=1e-4)
    gt = imgs["f0"].astype(np.float32).transpose(2, 0, 1) / 255
    assert np.allclose(item["gt"].numpy(), gt, atol=1e-6) or np.allclose(item["gt"].numpy(),
                                                                          gt[:, :, ::-1], atol=1e-6)


def test_synthetic_pairs_gray_makes_both_gray(faces):
    root, _ = faces
    item = SyntheticPairs(root, DegradationConfig(gray_prob=1.0), size=32)[3]
    for key in ("lq", "gt"):
        assert torch.equal(item[key][0], item[key][1]) and torch.equal(item[key][1], item[key][2])


def test_synthetic_pairs_independent_of_order_and_workers(faces):
    root, _ = faces
    ds = SyntheticPairs(root, get_degradation("severe"), seed=11, size=32)
    ds.set_epoch(2)
    forward = [ds[i] for i in range(len(ds))]
    backward = [ds[i] for i in reversed(range(len(ds)))][::-1]
    for f, b in zip(forward, backward):
        assert torch.equal(f["lq"], b["lq"]) and torch.equal(f["gt"], b["gt"])
    serial = torch.cat([b["lq"] for b in DataLoader(ds, batch_size=2, num_workers=0)])
    parallel = torch.cat([b["lq"] for b in DataLoader(ds, batch_size=2, num_workers=2)])
    assert torch.equal(serial, parallel)
    assert torch.equal(serial, torch.stack([f["lq"] for f in forward]))
    ds.set_epoch(3)
    assert not torch.equal(ds[0]["lq"], forward[0]["lq"])
    other = SyntheticPairs(root, get_degradation("severe"), seed=12, size=32)
    other.set_epoch(2)
    assert not torch.equal(other[0]["lq"], forward[0]["lq"])
