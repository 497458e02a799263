"""Weights the metrics need: registry entries (public URLs) and lookup of local copies.

The backbones are the standard public files, loaded unchanged with `torch.load(weights_only=True)`:
torchvision's AlexNet / VGG-16 (for LPIPS) and pytorch-fid's Inception (for FID). A file is looked
for, in order, at an explicit path, in the difface weights cache (`difface.weights.cache_dir()`),
and in torch's hub cache (`$TORCH_HOME/hub/checkpoints`, where torchvision and pytorch-fid keep them).
The 8 hex digits in each file name are the start of its SHA-256 and are checked.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from difface import weights as W

ALEXNET = "lpips-alexnet"
VGG16 = "lpips-vgg16"
FID_INCEPTION = "fid-inception"

# their registry entries are in difface.weights.REGISTRY


class MissingWeights(FileNotFoundError):
    """A metric's weights file is not available locally; the message names the file and the folder."""


def _hash_prefix(filename: str) -> str | None:
    stem = filename.rsplit(".", 1)[0]
    tail = stem.rsplit("-", 1)[-1]
    return tail if len(tail) >= 8 and all(c in "0123456789abcdef" for c in tail) else None


def candidates(name: str) -> list[Path]:
    """Places where the file of registry entry `name` is looked for, in order."""
    e = W.entry(name)
    return [W.cache_dir() / e.filename, Path(torch.hub.get_dir()) / "checkpoints" / e.filename]


def missing_message(name: str, hint: str = "or pass its path") -> str:
    """One line: which file a metric needs and where to put it."""
    e = W.entry(name)
    return f"needs {e.filename}: download {e.url} into {W.cache_dir()} ({hint})"


def locate(name: str, path: str | os.PathLike | None = None, *, allow_download: bool = False) -> Path:
    """Path of the weights file of registry entry `name` (or `path`), SHA-256 prefix checked.

    Raises MissingWeights (message from `missing_message`) when no copy is found and downloading is
    not allowed or fails.
    """
    e = W.entry(name)
    if path is not None:
        found = Path(path)
        if not found.is_file():
            raise MissingWeights(f"{found}: weights file not found ({e.description})")
    else:
        found = next((p for p in candidates(name) if p.is_file()), None)
        if found is None:
            if not allow_download:
                raise MissingWeights(missing_message(name))
            try:
                found = W.download(name)
            except (W.WeightsUnavailable, OSError) as err:
                raise MissingWeights(f"{missing_message(name)} ({err.__class__.__name__})") from err
    prefix = _hash_prefix(e.filename)
    if path is None and prefix and not W.sha256_of(found).startswith(prefix):
        raise ValueError(f"{found}: SHA-256 does not start with {prefix}; the file is corrupt or another one")
    return found


def load_state_dict(file: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a .pth (weights_only) or .safetensors file, on the CPU."""
    file = Path(file)
    W.check_bundled(file)  # a file shipped in the package must be unchanged
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(file))
    sd = torch.load(file, map_location="cpu", weights_only=True)
    if not isinstance(sd, dict):
        raise ValueError(f"{file}: expected a state dict, got {type(sd).__name__}")
    return sd
