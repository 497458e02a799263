"""Inpainting a face larger than the model: the known pixels are shrunk on their own (no dark or bright rim
from the hole's zeros), and the enlarged fill is blended in over a soft edge (no step at the hole's border)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from difface.core import DifFace
from difface.data.masks import FEATHER_MODEL_PX, feathered_mask, known_resize
from difface.models import build, fill_deterministic


class _Constant(nn.Module):
    """An inpainting estimator whose estimate is one colour: (B, 4, S, S) -> (B, 3, S, S) of `value`."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value
        self.scale = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x[:, :3], self.value) + 0 * self.scale


def _model(value: float) -> DifFace:
    prior = fill_deterministic(build("unet_small"))
    return DifFace.from_modules(prior, _Constant(value), task="inpainting")


def _box(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
    m = torch.zeros(1, 1, h, w)
    m[..., y0:y1, x0:x1] = 1
    return m


def test_feathered_mask_is_one_on_the_mask_and_zero_beyond_its_width():
    m = _box(40, 50, 10, 20, 15, 30)
    f = feathered_mask(m, 6)[0, 0]
    assert f.shape == (40, 50) and f.dtype == torch.float32
    assert torch.equal(f[10:20, 15:30], torch.ones(10, 15))
    row = f[15, 30:].numpy()  # leaving the mask to the right: 1 -> 0 over 6 px, smoothly, then 0
    assert np.all(np.diff(row) <= 0) and row[0] < 1 and row[6:].max() == 0 and np.abs(np.diff(row)).max() < 0.3
    assert 0.4 < float(f[15, 32]) < 0.9  # d = 3 px of 6: smoothstep 0.5 (distance from the pixel centre)
    assert torch.equal(feathered_mask(m, 0), m)
    assert float(f[0, 0]) == 0.0 and float(f[:, :15 - 6].max()) == 0.0


def test_known_resize_does_not_darken_the_pixels_beside_a_hole():
    img = torch.full((1, 3, 128, 128), 0.7)
    hole = _box(128, 128, 40, 90, 30, 100)
    plain = torch.nn.functional.interpolate(img * (1 - hole), size=(16, 16), mode="bicubic", antialias=True)
    ours = known_resize(img, 1 - hole, (16, 16))
    cover = torch.nn.functional.interpolate(hole, size=(16, 16), mode="area")[0, 0]
    outside = cover == 0  # model pixels with no missing pixel under them
    assert (plain[0][:, outside] - 0.7).abs().max() > 0.05  # a plain resize: a rim of wrong values
    torch.testing.assert_close(ours[0][:, outside], torch.full_like(ours[0][:, outside], 0.7), atol=1e-5, rtol=0)
    full = known_resize(img, torch.ones_like(hole), (16, 16))  # nothing missing: the plain resize
    torch.testing.assert_close(full, torch.nn.functional.interpolate(img, size=(16, 16), mode="bicubic",
                                                                     antialias=True))


def test_larger_face_fill_has_no_step_at_the_holes_border():
    model = _model(0.2)  # the fill is 0.2 everywhere, the face 0.8: the hardest seam
    size = 256
    face = torch.full((1, 3, size, size), 0.8)
    mask = _box(size, size, 100, 180, 60, 200)
    hard = model.inpaint(face, mask, start_step=0, feather=False).result[0, 0]
    soft = model.inpaint(face, mask, start_step=0).result[0, 0]
    width = FEATHER_MODEL_PX * size / model.image_size
    assert model.image_size < size and width >= 6
    torch.testing.assert_close(hard[100:180, 60:200], torch.full((80, 140), 0.2), atol=1e-5, rtol=0)
    jump = lambda a: float(torch.cat([a.diff(dim=0).abs().flatten(), a.diff(dim=1).abs().flatten()]).max())  # noqa: E731
    assert jump(hard) > 0.55  # the hard edge: a 0.6 step at the mask's bounding box
    assert jump(soft) < 1.6 * 0.6 / width  # the smoothstep's steepest slope, 1.5 / width per pixel
    assert torch.equal(soft[100:180, 60:200], hard[100:180, 60:200])  # the hole itself: the fill, as before
    band = feathered_mask(mask, width)[0, 0] > 0
    assert torch.equal(soft[~band], face[0, 0][~band])  # known pixels beyond the soft edge: exactly the input
    assert band.sum() > (mask > 0).sum() + 2 * (80 + 140) * (width - 1)  # the edge lies outside the hole


def test_zeros_convention_on_a_larger_face_is_resized_from_known_pixels():
    model = _model(0.5)
    face = torch.full((1, 3, 192, 192), 0.6)
    face[..., 70:120, 50:140] = 0  # the official convention: the hole is exact black
    seen = []
    model.estimator.register_forward_hook(lambda mod, args, out: seen.append(args[0].clone()))
    out = model.inpaint(face, start_step=0)
    y, m = seen[0][:, :3], seen[0][:, 3:]
    known = m[0, 0] == 0
    assert 0 < int((~known).sum()) < known.numel()
    torch.testing.assert_close(y[0][:, known], torch.full_like(y[0][:, known], 0.6), atol=1e-5, rtol=0)
    assert torch.equal(y[0][:, ~known], torch.zeros_like(y[0][:, ~known]))
    assert out.result.shape == face.shape
