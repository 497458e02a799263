"""LaMa generator (`FFCResNetGenerator`, fast Fourier convolutions): DifFace's inpainting estimator.

Input (B, 4, H, W): `cat(lq, mask)` with lq in [0, 1] (missing pixels 0) and mask in {0, 1}
(1 = missing); H and W divisible by 2**n_downsampling (8 for the official model). Output
(B, 3, H, W) in [0, 1] (sigmoid); `logits(x)` returns the values before the sigmoid.

Layout (the official `FFCResNetGenerator`), all inside one `nn.Sequential` called `model`, so parameter and buffer names
equal those of the official `lama_inpainting256.pth`:

    0  ReflectionPad2d(3)          1  FFC_BN_ACT(in -> ngf, k7)          local branch only
    2.. FFC_BN_ACT k3 stride 2 (n_downsampling of them); the last one splits its output into a
        local and a global (spectral) part with the resnet blocks' ratio
    .. n_blocks FFCResnetBlock (two FFC_BN_ACT k3 each, residual on both branches)
    .. ConcatTupleLayer (cat local, global)
    .. n_downsampling x [ConvTranspose2d(k3, s2, p1, output_padding 1), BatchNorm2d, ReLU]
    .. ReflectionPad2d(3), Conv2d(ngf -> out, k7), Sigmoid

An FFC splits its channels into a local part (ordinary 3x3 convolutions) and a global part whose
global-to-global path is a SpectralTransform: 1x1 conv (halving) + BN + ReLU, a FourierUnit (real
FFT over H, W with norm "ortho", real/imaginary parts interleaved per channel, 1x1 conv + BN + ReLU
in the frequency domain, inverse FFT), then a 1x1 conv of (input + Fourier output). Convolutions
have no bias and pad by reflection. Used in eval mode: BatchNorm uses its running statistics.

Supported: any ratios (0 <= ratio <= 1) in the three stages, ReLU activations, BatchNorm, max_features
capping, output activation sigmoid / tanh / none. Not supported (unused by DifFace): the local
Fourier unit (`enable_lfu`), gating, spatial transforms, an FFC output block.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch
from torch import nn

Pair = tuple[torch.Tensor | None, torch.Tensor | None]
OUT_ACTS = ("sigmoid", "tanh", "none")


@dataclass(frozen=True)
class LamaConfig:
    """Constructor arguments of the official `FFCResNetGenerator` (defaults: lama_inpainting256).

    The official nested `*_conv_kwargs` dicts are flattened into `<stage>_ratio_gin/_gout`
    (stages: init, downsample, resnet); `from_official` reads the nested form.
    """

    input_nc: int = 4
    output_nc: int = 3
    ngf: int = 64
    n_downsampling: int = 3
    n_blocks: int = 18
    max_features: int = 1024
    add_out_act: str = "sigmoid"
    init_ratio_gin: float = 0.0
    init_ratio_gout: float = 0.0
    downsample_ratio_gin: float = 0.0
    downsample_ratio_gout: float = 0.0
    resnet_ratio_gin: float = 0.75
    resnet_ratio_gout: float = 0.75

    def __post_init__(self) -> None:
        if self.add_out_act not in OUT_ACTS:
            raise ValueError(f"add_out_act must be one of {OUT_ACTS}, got {self.add_out_act!r}")
        for name in ("init", "downsample", "resnet"):
            for side in ("gin", "gout"):
                r = getattr(self, f"{name}_ratio_{side}")
                if not 0.0 <= r <= 1.0:
                    raise ValueError(f"{name}_ratio_{side} must lie in [0, 1], got {r}")
        sizes = (self.input_nc, self.output_nc, self.ngf, self.n_downsampling, self.max_features)
        if min(sizes) < 1 or self.n_blocks < 0:
            raise ValueError("input_nc, output_nc, ngf, n_downsampling, max_features must be >= 1, n_blocks >= 0")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def multiple(self) -> int:
        """H and W of an input must be multiples of this (2 ** n_downsampling)."""
        return 2**self.n_downsampling

    @classmethod
    def from_official(cls, params: Mapping) -> LamaConfig:
        """Config from the official constructor kwargs (nested `init_conv_kwargs` etc., as in the
        DifFace YAML and our manifests). `enable_lfu: true` and other unused options are refused."""
        params = dict(params)
        kw: dict = {}
        for stage in ("init", "downsample", "resnet"):
            sub = dict(params.pop(f"{stage}_conv_kwargs", None) or {})
            if sub.pop("enable_lfu", False):
                raise ValueError(f"{stage}_conv_kwargs.enable_lfu is not supported")
            for side in ("gin", "gout"):
                if f"ratio_{side}" in sub:
                    kw[f"{stage}_ratio_{side}"] = float(sub.pop(f"ratio_{side}"))
            if sub:
                raise ValueError(f"unsupported {stage}_conv_kwargs: {sorted(sub)}")
        if params.get("add_out_act") in (None, False, "", True):
            act = params.pop("add_out_act", None)
            params["add_out_act"] = "tanh" if act is True else "none"
        unknown = set(params) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unsupported FFCResNetGenerator options: {sorted(unknown)}")
        return cls(**params, **kw)


def _add(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    if a is None:
        return b
    return a if b is None else a + b


class FourierUnit(nn.Module):
    """Pointwise conv + BN + ReLU in the 2-D real-FFT domain: (B, C, H, W) -> (B, C_out, H, W).

    The spectrum (B, C, H, W//2+1) complex becomes (B, 2C, H, W//2+1) real with channels
    [c0.re, c0.im, c1.re, c1.im, ...]; both transforms use norm "ortho".
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv_layer = nn.Conv2d(2 * in_channels, 2 * out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(2 * out_channels)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        dtype = x.dtype
        # FFTs in float32 (half-precision FFTs need power-of-two sizes and lose accuracy).
        spec = torch.fft.rfftn(x.float(), dim=(-2, -1), norm="ortho")
        z = torch.stack((spec.real, spec.imag), dim=2).flatten(1, 2)  # (B, 2C, H, W//2+1), interleaved
        z = self.relu(self.bn(self.conv_layer(z.to(dtype))))
        z = z.float().unflatten(1, (-1, 2))  # (B, C_out, 2, H, W//2+1)
        out = torch.fft.irfftn(torch.complex(z[:, :, 0], z[:, :, 1]), s=(h, w), dim=(-2, -1), norm="ortho")
        return out.to(dtype)


class SpectralTransform(nn.Module):
    """Global-to-global path of an FFC: (B, C_in, H, W) -> (B, C_out, H/stride, W/stride)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.downsample = nn.AvgPool2d(2, 2) if stride == 2 else nn.Identity()
        mid = out_channels // 2
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU())
        self.fu = FourierUnit(mid, mid)
        self.conv2 = nn.Conv2d(mid, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.downsample(x))
        return self.conv2(x + self.fu(x))


class FFC(nn.Module):
    """Fast Fourier convolution on a (local, global) pair; a branch with 0 channels is None.

    out_local = convl2l(x_l) + convg2l(x_g); out_global = convl2g(x_l) + convg2g(x_g) (absent
    paths contribute nothing; they are not modules, so no keys).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, ratio_gin: float, ratio_gout: float,
                 stride: int = 1, padding: int = 0, dilation: int = 1) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError("FFC stride must be 1 or 2")
        in_g = int(in_channels * ratio_gin)
        in_l = in_channels - in_g
        out_g = int(out_channels * ratio_gout)
        out_l = out_channels - out_g
        self.channels = (out_l, out_g)

        def conv(cin: int, cout: int) -> nn.Module | None:
            if cin == 0 or cout == 0:
                return None
            return nn.Conv2d(cin, cout, kernel_size, stride, padding, dilation, bias=False, padding_mode="reflect")

        self.convl2l = conv(in_l, out_l)
        self.convl2g = conv(in_l, out_g)
        self.convg2l = conv(in_g, out_l)
        self.convg2g = SpectralTransform(in_g, out_g, stride) if in_g and out_g else None

    def forward(self, x: Pair) -> Pair:
        x_l, x_g = x
        out_l = out_g = None
        if self.channels[0]:
            if self.convl2l is not None and x_l is not None:
                out_l = self.convl2l(x_l)
            if self.convg2l is not None and x_g is not None:
                out_l = _add(out_l, self.convg2l(x_g))
        if self.channels[1]:
            if self.convl2g is not None and x_l is not None:
                out_g = self.convl2g(x_l)
            if self.convg2g is not None and x_g is not None:
                out_g = _add(out_g, self.convg2g(x_g))
        return out_l, out_g


class FFC_BN_ACT(nn.Module):  # noqa: N801 - official name, kept for recognisability
    """FFC followed by BatchNorm + ReLU on each present branch. Accepts a tensor (all local) or a pair."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, ratio_gin: float, ratio_gout: float,
                 stride: int = 1, padding: int = 0, dilation: int = 1) -> None:
        super().__init__()
        self.ffc = FFC(in_channels, out_channels, kernel_size, ratio_gin, ratio_gout, stride, padding, dilation)
        out_l, out_g = self.ffc.channels
        self.bn_l = nn.BatchNorm2d(out_l) if out_l else None
        self.bn_g = nn.BatchNorm2d(out_g) if out_g else None
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor | Pair) -> Pair:
        x_l, x_g = self.ffc(x if isinstance(x, tuple) else (x, None))
        if x_l is not None and self.bn_l is not None:
            x_l = self.act(self.bn_l(x_l))
        if x_g is not None and self.bn_g is not None:
            x_g = self.act(self.bn_g(x_g))
        return x_l, x_g


class FFCResnetBlock(nn.Module):
    """Two FFC_BN_ACT (k3, reflect padding) with a residual connection on both branches."""

    def __init__(self, dim: int, ratio_gin: float, ratio_gout: float, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = FFC_BN_ACT(dim, dim, 3, ratio_gin, ratio_gout, padding=dilation, dilation=dilation)
        self.conv2 = FFC_BN_ACT(dim, dim, 3, ratio_gin, ratio_gout, padding=dilation, dilation=dilation)

    def forward(self, x: torch.Tensor | Pair) -> Pair:
        x_l, x_g = x if isinstance(x, tuple) else (x, None)
        y_l, y_g = self.conv2(self.conv1((x_l, x_g)))
        return _add(x_l, y_l), _add(x_g, y_g)


class ConcatTupleLayer(nn.Module):
    """(local, global) -> one tensor, channels [local | global]."""

    def forward(self, x: torch.Tensor | Pair) -> torch.Tensor:
        if not isinstance(x, tuple):
            return x
        parts = [t for t in x if t is not None]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


class FFCResNetGenerator(nn.Module):
    """LaMa generator (module docstring). forward: (B, input_nc, H, W) -> (B, output_nc, H, W)."""

    def __init__(self, cfg: LamaConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or LamaConfig()
        self.config = cfg

        def width(mult: float) -> int:
            return min(cfg.max_features, int(cfg.ngf * mult))

        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            FFC_BN_ACT(cfg.input_nc, cfg.ngf, 7, cfg.init_ratio_gin, cfg.init_ratio_gout),
        ]
        for i in range(cfg.n_downsampling):
            gin, gout = cfg.downsample_ratio_gin, cfg.downsample_ratio_gout
            if i == cfg.n_downsampling - 1:
                gout = cfg.resnet_ratio_gin  # the bottleneck's split is made by the last downsampling
            layers.append(FFC_BN_ACT(width(2**i), width(2 ** (i + 1)), 3, gin, gout, stride=2, padding=1))
        dim = width(2**cfg.n_downsampling)
        layers += [FFCResnetBlock(dim, cfg.resnet_ratio_gin, cfg.resnet_ratio_gout) for _ in range(cfg.n_blocks)]
        layers.append(ConcatTupleLayer())
        for i in range(cfg.n_downsampling):
            mult = 2 ** (cfg.n_downsampling - i)
            cout = width(mult / 2)
            layers += [nn.ConvTranspose2d(width(mult), cout, 3, stride=2, padding=1, output_padding=1),
                       nn.BatchNorm2d(cout), nn.ReLU()]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(cfg.ngf, cfg.output_nc, 7)]
        if cfg.add_out_act == "sigmoid":
            layers.append(nn.Sigmoid())
        elif cfg.add_out_act == "tanh":
            layers.append(nn.Tanh())
        self.model = nn.Sequential(*layers)
        self._n_logit_layers = len(layers) - (cfg.add_out_act != "none")

    def _check(self, x: torch.Tensor) -> None:
        m = self.config.multiple
        if x.ndim != 4 or x.shape[1] != self.config.input_nc or x.shape[2] % m or x.shape[3] % m:
            raise ValueError(f"LaMa expects (B, {self.config.input_nc}, H, W) with H, W divisible by {m}, "
                             f"got {tuple(x.shape)}")

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, input_nc, H, W) -> the last convolution's output (B, output_nc, H, W), before the activation."""
        self._check(x)
        for layer in self.model[: self._n_logit_layers]:
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, input_nc, H, W) -> (B, output_nc, H, W); in [0, 1] with the sigmoid output (official)."""
        y = self.logits(x)
        return self.model[-1](y) if self.config.add_out_act != "none" else y


def inpaint_input(lq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Estimator input: cat(lq * (1 - mask), mask). lq (B, 3, H, W) in [0, 1], mask (B, 1, H, W) in {0, 1}
    (1 = missing) -> (B, 4, H, W). Zeroing the holes keeps the official convention (lq is 0 there)."""
    mask = mask.to(lq.dtype)
    return torch.cat([lq * (1 - mask), mask], dim=1)
