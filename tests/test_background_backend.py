"""Real-ESRGAN's RRDBNet through onnxruntime (difface.backends.background): dynamic tile sizes, the torch
result within float rounding, a cached graph reused."""

import numpy as np
import pytest
import torch

from difface.face.background import RealESRGANUpsampler
from difface.models import fill_deterministic
from difface.models.rrdbnet import RRDBNet

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install difface[onnx])")

from difface.backends.background import RuntimeRRDBNet, cached_background_export  # noqa: E402


@pytest.fixture(scope="module")
def small_rrdb():
    return fill_deterministic(RRDBNet(num_feat=16, num_block=2, num_grow_ch=8)).eval()


def test_graph_takes_any_tile_size_and_matches_torch(small_rrdb, tmp_path):
    net = RuntimeRRDBNet(small_rrdb, "onnxruntime", root=tmp_path)
    assert (net.scale, net.unshuffle) == (2, 2)
    for hw in ((36, 50), (14, 22)):
        x = torch.rand(1, 3, *hw, generator=torch.Generator().manual_seed(hw[0]))
        with torch.inference_mode():
            ref = small_rrdb(x)
        out = net(x)
        assert out.shape == (1, 3, 2 * hw[0], 2 * hw[1])
        assert (out - ref).abs().max().item() < 1e-4


def test_cached_graph_is_reused_and_keyed_by_the_weights(small_rrdb, tmp_path):
    path, reused = cached_background_export(small_rrdb, root=tmp_path)
    assert not reused and path.is_file()
    again, reused = cached_background_export(small_rrdb, root=tmp_path)
    assert reused and again == path
    other = fill_deterministic(RRDBNet(num_feat=16, num_block=2, num_grow_ch=8), seed=1)
    assert cached_background_export(other, root=tmp_path)[0] != path


def test_tiled_upsampler_through_onnxruntime_equals_torch(small_rrdb, tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFACE_HOME", str(tmp_path))  # the graph cache lives under the weights cache
    rgb = np.random.default_rng(0).random((70, 90, 3), dtype=np.float32)
    ref = RealESRGANUpsampler(small_rrdb, tile=32, tile_pad=4)(rgb, 2.0)
    out = RealESRGANUpsampler(small_rrdb, tile=32, tile_pad=4, backend="onnxruntime")(rgb, 2.0)
    assert out.shape == ref.shape == (140, 180, 3)
    assert np.abs(out - ref).max() < 1e-4
