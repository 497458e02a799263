"""RRDBNet (Real-ESRGAN x2) layout, checkpoint loading, tiling and the background upsamplers."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from difface.face.background import (
    RealESRGANUpsampler,
    get_bg_upsampler,
    lanczos_upsampler,
    load_rrdbnet,
    tiled_forward,
)
from difface.models import fill_deterministic
from difface.models.rrdbnet import RRDBNet

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = [ROOT / "tests/fixtures/manifests", ROOT / "../shared/reference/manifests"]


def _manifest() -> dict:
    for d in MANIFESTS:
        if (d / "rrdbnet_x2_realesrgan.json").is_file():
            return json.loads((d / "rrdbnet_x2_realesrgan.json").read_text())
    pytest.skip("rrdbnet_x2_realesrgan.json manifest not found")


def test_keys_and_shapes_equal_manifest():
    man = _manifest()
    sd = RRDBNet(**man["config"]).state_dict()
    assert list(sd) == list(man["state_dict"])  # same keys, same order
    assert {k: list(v.shape) for k, v in sd.items()} == man["state_dict"]
    assert sum(v.numel() for v in sd.values()) == man["num_params"] == 16_703_171  # RealESRGAN_x2plus.pth


def _marked(net: RRDBNet, offset: float = 0.0) -> RRDBNet:
    """Give every tensor its own constant value (cheap, and tells keys apart after loading)."""
    with torch.no_grad():
        for i, v in enumerate(net.state_dict().values()):
            v.fill_(offset + 1e-3 * i)
    return net


def test_realesrgan_x2_checkpoint_loads_weights_only(tmp_path):
    src = _marked(RRDBNet())
    path = tmp_path / "RealESRGAN_x2plus.pth"
    torch.save({"params_ema": src.state_dict()}, path)
    torch.load(path, weights_only=True)  # the file itself is weights-only loadable
    net = load_rrdbnet(str(path))
    for k, v in net.state_dict().items():
        assert torch.equal(v, src.state_dict()[k]), k


def test_params_fallback_and_params_ema_preference(tmp_path):
    a, b = _marked(RRDBNet(num_block=1), 1.0), _marked(RRDBNet(num_block=1), 2.0)
    torch.save({"params": a.state_dict()}, tmp_path / "p.pth")
    torch.save({"params": a.state_dict(), "params_ema": b.state_dict()}, tmp_path / "both.pth")
    from difface.weights import load_weights

    got = load_weights(RRDBNet(num_block=1), tmp_path / "p.pth")
    assert torch.equal(got.conv_last.weight, a.conv_last.weight)
    got = load_weights(RRDBNet(num_block=1), tmp_path / "both.pth")
    assert torch.equal(got.conv_last.weight, b.conv_last.weight)


def test_forward_is_x2_and_matches_pixel_unshuffle_layout():
    net = fill_deterministic(RRDBNet(num_block=1)).eval()
    with torch.no_grad():
        y = net(torch.rand(1, 3, 12, 18, generator=torch.Generator().manual_seed(0)))
    assert y.shape == (1, 3, 24, 36)


def test_tiled_equals_untiled_small_model():
    # 1 RRDB: receptive field of the whole net is < 40 input px, so tile_pad 40 gives exact tiles
    net = fill_deterministic(RRDBNet(num_block=1)).eval()
    x = torch.rand(1, 3, 46, 70, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = net(x)
        tiled = tiled_forward(net, x, scale=2, tile=16, tile_pad=40)
        rough = tiled_forward(net, x, scale=2, tile=16, tile_pad=2)
    torch.testing.assert_close(tiled, full, atol=1e-5, rtol=1e-5)
    assert (rough - full).abs().max() > 1e-3  # too little context does change the result


def test_upsampler_odd_sizes_and_scales():
    up = RealESRGANUpsampler(fill_deterministic(RRDBNet(num_block=1)), tile=16, tile_pad=4)
    img = np.random.default_rng(0).random((21, 33, 3)).astype(np.float32)
    out = up(img, 2)
    assert out.shape == (42, 66, 3) and out.dtype == np.float32
    assert 0 <= out.min() and out.max() <= 1
    assert up(img, 3).shape == (63, 99, 3)
    assert up(img[:1, :1], 2).shape == (2, 2, 3)


def test_lanczos_fallback():
    img = np.random.default_rng(0).random((10, 15, 3)).astype(np.float32)
    out = lanczos_upsampler(img, 2)
    ref = np.clip(cv2.resize(img, (30, 20), interpolation=cv2.INTER_LANCZOS4), 0, 1)
    np.testing.assert_array_equal(out, ref)
    assert get_bg_upsampler(None) is lanczos_upsampler
    assert get_bg_upsampler("/nonexistent/RealESRGAN_x2plus.pth") is lanczos_upsampler
