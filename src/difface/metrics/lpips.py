"""LPIPS (Zhang et al., CVPR 2018, "The Unreasonable Effectiveness of Deep Features"), v0.1.

d(x, y) = sum_l mean_{h,w} || w_l * (f_l(x) / |f_l(x)| - f_l(y) / |f_l(y)|) ||^2   (paper Eq. 1)
with f_l the activations of five ReLU stages of an ImageNet backbone, normalised to unit length
along channels, and w_l the learned non-negative per-channel weights ("lin" layers).

Backbones follow torchvision's `features` layout, so the standard files load as they are
(`features.N.weight` / `features.N.bias`; classifier keys are ignored). The linear heads ship with
difface (`assets/lpips/*.safetensors`, BSD-2 licence, keys `linK.model.1.weight`).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from difface.metrics import backbones as mw

# (kind, out_channels): "C" conv 3x3 pad 1 (VGG) and "M" max-pool 2x2; AlexNet is spelled out below.
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
# LPIPS taps: output of features[:end] for each end (after a ReLU).
_TAPS = {"alex": (2, 5, 8, 10, 12), "vgg": (4, 9, 16, 23, 30)}
_CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}
_BACKBONE_WEIGHTS = {"alex": mw.ALEXNET, "vgg": mw.VGG16}


def alexnet_features() -> nn.Sequential:
    """torchvision AlexNet `features` (indices 0..12): conv weights at 0, 3, 6, 8, 10."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(3, 2),
    )


def vgg16_features() -> nn.Sequential:
    """torchvision VGG-16 `features` (indices 0..30): 13 conv 3x3 + ReLU, 5 max-pools."""
    layers: list[nn.Module] = []
    c_in = 3
    for v in _VGG16:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c_in, int(v), 3, padding=1), nn.ReLU()]
            c_in = int(v)
    return nn.Sequential(*layers)


class Backbone(nn.Module):
    """A torchvision-layout `features` stack that returns the five LPIPS activations."""

    def __init__(self, net: str):
        super().__init__()
        if net not in _TAPS:
            raise ValueError(f"LPIPS backbone must be one of {sorted(_TAPS)}, got {net!r}")
        self.features = alexnet_features() if net == "alex" else vgg16_features()
        self.taps = _TAPS[net]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs, start = [], 0
        for end in self.taps:
            for i in range(start, end):
                x = self.features[i](x)
            outs.append(x)
            start = end
        return outs


class NetLinLayer(nn.Module):
    """1x1 conv without bias from C channels to 1 (key `model.1.weight`; `model.0` is a no-op dropout)."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class LPIPS(nn.Module):
    """LPIPS distance. forward(x, y): (B, 3, H, W) RGB in [0, 1] each -> (B,) distances >= 0."""

    def __init__(self, net: str = "alex"):
        super().__init__()
        self.net_name = net
        self.net = Backbone(net)
        for i, c in enumerate(_CHANNELS[net]):
            self.add_module(f"lin{i}", NetLinLayer(c))
        # Input scaling of the official code: [-1, 1] input, then (x - shift) / scale.
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"LPIPS expects two (B, 3, H, W) tensors of one shape, got {x.shape} and {y.shape}")
        fx = self.net(((2.0 * x - 1.0) - self.shift) / self.scale)
        fy = self.net(((2.0 * y - 1.0) - self.shift) / self.scale)
        total = x.new_zeros(x.shape[0])
        for i, (a, b) in enumerate(zip(fx, fy)):
            diff = (_unit(a) - _unit(b)) ** 2
            total = total + getattr(self, f"lin{i}")(diff).mean(dim=(1, 2, 3))
        return total


def _unit(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Normalise (B, C, H, W) activations to unit length along C (as the official code, eps outside sqrt)."""
    return f / (torch.sqrt(torch.sum(f * f, dim=1, keepdim=True)) + eps)


def linear_head_file(net: str) -> Path:
    """The shipped safetensors file of the v0.1 linear heads for `net` ('alex' or 'vgg')."""
    return Path(str(resources.files("difface") / "assets" / "lpips" / f"{net}_v0.1.safetensors"))


def load_backbone(model: LPIPS, file: str | os.PathLike) -> None:
    """Load torchvision AlexNet/VGG-16 weights (a full classifier file or only `features.*` keys)."""
    sd = mw.load_state_dict(file)
    feats = {k: v for k, v in sd.items() if k.startswith("features.")}
    if not feats:
        raise ValueError(f"{file}: no 'features.*' keys; not a torchvision AlexNet/VGG-16 state dict")
    model.net.load_state_dict(feats, strict=True)


def load_lpips(net: str = "alex", backbone: str | os.PathLike | None = None, *, allow_download: bool = False,
               device: torch.device | str = "cpu") -> LPIPS:
    """LPIPS with the shipped linear heads and the standard backbone (registry or `backbone` path).

    Raises metrics.weights.MissingWeights naming the file when the backbone is not available.
    """
    model = LPIPS(net)
    path = mw.locate(_BACKBONE_WEIGHTS[net], backbone, allow_download=allow_download)
    load_backbone(model, path)
    load_linear_heads(model)
    return model.eval().requires_grad_(False).to(device)


def load_linear_heads(model: LPIPS, file: str | os.PathLike | None = None) -> None:
    """Load the `linK.model.1.weight` tensors (shipped v0.1 file by default)."""
    sd = mw.load_state_dict(file or linear_head_file(model.net_name))
    heads = {k: v for k, v in model.state_dict().items() if k.startswith("lin")}
    if set(sd) != set(heads):
        raise ValueError(f"{file}: keys {sorted(sd)} do not match the LPIPS heads {sorted(heads)}")
    model.load_state_dict(sd, strict=False)
