"""Improved-DDPM UNet as used by DifFace (eps prediction + learned-range variance).

Module and parameter names follow the official checkpoints (`iddpm_ffhq512_ema500000.pth`, ...),
so their state dicts load strictly. Input x: (B, C_in, H, W) in diffusion space [-1, 1];
t: (B,) integer (or float) timesteps of the *original* 1000-step chain; output (B, C_out, H, W)
with C_out = 2 * C_in when sigma is learned ([eps | v]).

Differences from guided-diffusion (official checkpoints rely on them): `attention_resolutions` are feature-map
side lengths (not downsampling rates), `num_res_blocks` may be a per-level list, the timestep
embedding puts cos before sin, and the output head is not zero-initialised.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class UNetConfig:
    """Constructor arguments of the official `UNetModel` (names kept for checkpoint configs)."""

    image_size: int = 512
    in_channels: int = 3
    model_channels: int = 32
    out_channels: int = 6
    num_res_blocks: tuple[int, ...] | int = (1, 2, 2, 2, 2, 3, 4)
    attention_resolutions: tuple[int, ...] = (32, 16, 8)
    dropout: float = 0.0
    channel_mult: tuple[int, ...] = (1, 2, 4, 8, 8, 16, 16)
    conv_resample: bool = True
    num_heads: int = 1
    num_head_channels: int = 64
    use_scale_shift_norm: bool = True
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("extra")
        return d


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (B,) -> (B, dim): [cos(t f_k) | sin(t f_k)], f_k = max_period^(-k/half)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 and cast back to the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x.float(), self.num_groups, self.weight, self.bias, self.eps).type(x.dtype)


def normalization(ch: int) -> nn.Module:
    return GroupNorm32(32, ch)


class TimestepBlock(nn.Module):
    """A block whose forward also takes the timestep embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class TimestepEmbedSequential(nn.Sequential):
    """Sequential container that passes the embedding to the children that take it."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class Downsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.op = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class ResBlock(TimestepBlock):
    """GN-SiLU-conv, scale-shift by the embedding, GN-SiLU-dropout-conv, plus a (1x1) skip."""

    def __init__(self, ch: int, emb_ch: int, out_ch: int, dropout: float, scale_shift: bool):
        super().__init__()
        self.scale_shift = scale_shift
        self.in_layers = nn.Sequential(normalization(ch), nn.SiLU(), nn.Conv2d(ch, out_ch, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_ch, 2 * out_ch if scale_shift else out_ch))
        self.out_layers = nn.Sequential(
            normalization(out_ch), nn.SiLU(), nn.Dropout(dropout), nn.Conv2d(out_ch, out_ch, 3, padding=1)
        )
        nn.init.zeros_(self.out_layers[3].weight)
        nn.init.zeros_(self.out_layers[3].bias)
        self.skip_connection = nn.Identity() if ch == out_ch else nn.Conv2d(ch, out_ch, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        e = self.emb_layers(emb).type(h.dtype)[:, :, None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[3](self.out_layers[2](self.out_layers[1](h)))
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Spatial self-attention with the legacy per-head [q | k | v] channel grouping of the qkv conv.

    `use_sdpa` switches to torch's fused scaled_dot_product_attention (same parameters; fp32 outputs
    agree to ~1e-6).
    """

    use_sdpa: bool = True

    def __init__(self, ch: int, num_heads: int, num_head_channels: int):
        super().__init__()
        self.num_heads = ch // num_head_channels if num_head_channels != -1 else num_heads
        self.norm = normalization(ch)
        self.qkv = nn.Conv1d(ch, 3 * ch, 1)
        self.proj_out = nn.Conv1d(ch, ch, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        qkv = self.qkv(self.norm(x).reshape(b, c, -1))  # (B, 3C, T)
        d = c // self.num_heads
        q, k, v = qkv.reshape(b * self.num_heads, 3 * d, -1).split(d, dim=1)  # (BH, d, T) each
        if self.use_sdpa:
            a = F.scaled_dot_product_attention(
                q.transpose(1, 2).float(), k.transpose(1, 2).float(), v.transpose(1, 2).float()
            )
            a = a.type(qkv.dtype).transpose(1, 2)
        else:
            s = 1.0 / math.sqrt(math.sqrt(d))
            w = torch.einsum("bct,bcs->bts", q * s, k * s)
            w = torch.softmax(w.float(), dim=-1).type(w.dtype)
            a = torch.einsum("bts,bcs->bct", w, v)
        h = self.proj_out(a.reshape(b, c, -1))
        return x + h.reshape(b, c, *spatial)


class UNetModel(nn.Module):
    """The DifFace/iDDPM UNet. forward(x (B,C,H,W) in [-1,1], t (B,)) -> (B, out_channels, H, W)."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.config = cfg
        mc, mult = cfg.model_channels, tuple(cfg.channel_mult)
        nrb = cfg.num_res_blocks
        nrb = tuple(nrb) if isinstance(nrb, (list, tuple)) else (nrb,) * len(mult)
        if len(nrb) != len(mult):
            raise ValueError(f"num_res_blocks {nrb} does not match channel_mult {mult}")
        emb_ch = 4 * mc
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_ch), nn.SiLU(), nn.Linear(emb_ch, emb_ch))

        def res(ch_in: int, ch_out: int) -> ResBlock:
            return ResBlock(ch_in, emb_ch, ch_out, cfg.dropout, cfg.use_scale_shift_norm)

        def attn(ch: int) -> AttentionBlock:
            return AttentionBlock(ch, cfg.num_heads, cfg.num_head_channels)

        ch = mult[0] * mc
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(cfg.in_channels, ch, 3, padding=1))])
        skip_chans, ds = [ch], cfg.image_size
        for level, m in enumerate(mult):
            for _ in range(nrb[level]):
                layers: list[nn.Module] = [res(ch, m * mc)]
                ch = m * mc
                if ds in cfg.attention_resolutions:
                    layers.append(attn(ch))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_chans.append(ch)
            if level != len(mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(Downsample(ch)))
                skip_chans.append(ch)
                ds //= 2
        self.middle_block = TimestepEmbedSequential(res(ch, ch), attn(ch), res(ch, ch))
        self.output_blocks = nn.ModuleList()
        for level, m in reversed(list(enumerate(mult))):
            for i in range(nrb[level] + 1):
                layers = [res(ch + skip_chans.pop(), m * mc)]
                ch = m * mc
                if ds in cfg.attention_resolutions:
                    layers.append(attn(ch))
                if level and i == nrb[level]:
                    layers.append(Upsample(ch))
                    ds *= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(normalization(ch), nn.SiLU(), nn.Conv2d(ch, cfg.out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time_embed(timestep_embedding(t, self.config.model_channels))
        hs, h = [], x
        for block in self.input_blocks:
            h = block(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)


def set_sdpa(model: nn.Module, enabled: bool) -> None:
    """Switch every AttentionBlock of `model` between fused SDPA and the explicit einsum path."""
    for m in model.modules():
        if isinstance(m, AttentionBlock):
            m.use_sdpa = enabled
