"""SwinIR restoration network with DifFace's pixel-unshuffle stem and `nearest+conv` upsampler.

Input (B, 3, H, W) in [0, 1] with H, W multiples of `sf * window_size` (64 for the official
restoration512 model); output (B, 3, H, W), nominally in [0, 1] (not clamped). `residual=True`
(not in the official code; default off) makes the network predict a correction added to its input;
`flip_ensemble=True` (ours too; default off) averages, in eval mode, the output with the mirror image of
the output for the mirrored input, so the estimate is exactly left-right equivariant (two passes).
Parameter and buffer names follow `swinir_restoration512_L1.pth`. The derived buffers (`attn.relative_position_index`,
`attn_mask` of the shifted blocks) are kept persistent so that our state dicts also load into the
official code; `difface.weights.load_weights` recomputes them when a checkpoint lacks them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.4488, 0.4371, 0.4040)  # DIV2K RGB mean used by SwinIR


@dataclass(frozen=True)
class SwinIRConfig:
    """Constructor arguments of the official `SwinIR` (restoration512 defaults)."""

    img_size: int = 64
    patch_size: int = 1
    in_chans: int = 3
    embed_dim: int = 180
    depths: tuple[int, ...] = (6, 6, 6, 6, 6, 6, 6, 6)
    num_heads: tuple[int, ...] = (6, 6, 6, 6, 6, 6, 6, 6)
    window_size: int = 8
    mlp_ratio: float = 2.0
    sf: int = 8
    img_range: float = 1.0
    upsampler: str = "nearest+conv"
    resi_connection: str = "1conv"
    unshuffle: bool = True
    unshuffle_scale: int = 8
    residual: bool = False  # ours, not official: output = input + network (see SwinIR.forward)
    flip_ensemble: bool = False  # ours, not official: in eval mode, average with the mirrored pass

    def to_dict(self) -> dict:
        return asdict(self)


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * H/ws * W/ws, ws, ws, C)."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws, ws, c)


def window_reverse(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """(B * H/ws * W/ws, ws, ws, C) -> (B, H, W, C)."""
    b = windows.shape[0] // ((h // ws) * (w // ws))
    x = windows.view(b, h // ws, w // ws, ws, ws, -1).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, -1)


def relative_position_index(ws: int) -> torch.Tensor:
    """(ws*ws, ws*ws) int64 index into the ((2ws-1)^2, heads) relative-position bias table."""
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)
    return rel[:, :, 0] * (2 * ws - 1) + rel[:, :, 1]


def shifted_window_mask(h: int, w: int, ws: int, shift: int) -> torch.Tensor:
    """(nW, ws*ws, ws*ws) additive mask: 0 within a region of the rolled map, -100 across regions."""
    img = torch.zeros(1, h, w, 1)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img[:, hs, wsl, :] = cnt
            cnt += 1
    win = window_partition(img, ws).view(-1, ws * ws)
    diff = win[:, None, :] - win[:, :, None]
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside ws x ws windows with a relative position bias."""

    def __init__(self, dim: int, ws: int, num_heads: int):
        super().__init__()
        self.ws, self.num_heads = ws, num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * ws - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(ws))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x: (B*nW, N, C); mask: (nW, N, N) additive or None."""
        bn, n, c = x.shape
        qkv = self.qkv(x).reshape(bn, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(n, n, -1).permute(2, 0, 1)[None].to(attn.dtype)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(bn // nw, nw, self.num_heads, n, n) + mask[None, :, None].to(attn.dtype)
            attn = attn.view(-1, self.num_heads, n, n)
        out = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(bn, n, c)
        return self.proj(out)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinTransformerBlock(nn.Module):
    """(Shifted-)window attention block on a (B, H*W, C) token sequence."""

    def __init__(self, dim: int, resolution: tuple[int, int], num_heads: int, ws: int, shift: int, mlp_ratio: float):
        super().__init__()
        self.resolution = tuple(resolution)
        if min(resolution) <= ws:  # the window covers the whole map: no shifting
            ws, shift = min(resolution), 0
        self.ws, self.shift = ws, shift
        if shift > 0:
            self.register_buffer("attn_mask", shifted_window_mask(*resolution, ws, shift))
        else:
            self.attn_mask = None
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, ws, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        h, w = size
        b, _, c = x.shape
        ws, s = self.ws, self.shift
        y = self.norm1(x).view(b, h, w, c)
        if s > 0:
            y = torch.roll(y, shifts=(-s, -s), dims=(1, 2))
            mask = self.attn_mask if tuple(size) == self.resolution else shifted_window_mask(h, w, ws, s)
            mask = mask.to(x.device)
        else:
            mask = None
        y = self.attn(window_partition(y, ws).view(-1, ws * ws, c), mask)
        y = window_reverse(y.view(-1, ws, ws, c), ws, h, w)
        if s > 0:
            y = torch.roll(y, shifts=(s, s), dims=(1, 2))
        x = x + y.reshape(b, h * w, c)
        return x + self.mlp(self.norm2(x))


class BasicLayer(nn.Module):
    def __init__(self, dim: int, resolution: tuple[int, int], depth: int, num_heads: int, ws: int, mlp_ratio: float):
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(dim, resolution, num_heads, ws, 0 if i % 2 == 0 else ws // 2, mlp_ratio)
            for i in range(depth)
        )

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x, size)
        return x


class RSTB(nn.Module):
    """Residual Swin Transformer block: Swin blocks, a 3x3 conv on the unflattened map, residual."""

    def __init__(self, dim: int, resolution: tuple[int, int], depth: int, num_heads: int, ws: int, mlp_ratio: float):
        super().__init__()
        self.residual_group = BasicLayer(dim, resolution, depth, num_heads, ws, mlp_ratio)
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        b, _, c = x.shape
        y = self.residual_group(x, size).transpose(1, 2).reshape(b, c, *size)
        return self.conv(y).flatten(2).transpose(1, 2) + x


class PatchEmbed(nn.Module):
    """(B, C, H, W) -> (B, H*W, C) followed by LayerNorm (patch size 1)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.flatten(2).transpose(1, 2))


class SwinIR(nn.Module):
    """DifFace's SwinIR estimator. forward(x (B,3,H,W) in [0,1]) -> (B,3,H,W)."""

    def __init__(self, cfg: SwinIRConfig):
        super().__init__()
        if cfg.upsampler != "nearest+conv" or not cfg.unshuffle or cfg.patch_size != 1:
            raise ValueError("only the DifFace variant (unshuffle stem, nearest+conv, patch 1) is implemented")
        if cfg.sf not in (2, 4, 8):
            raise ValueError(f"sf must be 2, 4 or 8, got {cfg.sf}")
        self.config = cfg
        dim, num_feat = cfg.embed_dim, 64
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.conv_first = nn.Sequential(
            nn.PixelUnshuffle(cfg.sf), nn.Conv2d(cfg.in_chans * cfg.unshuffle_scale**2, dim, 3, padding=1)
        )
        self.patch_embed = PatchEmbed(dim)
        res = (cfg.img_size, cfg.img_size)
        self.layers = nn.ModuleList(
            RSTB(dim, res, d, h, cfg.window_size, cfg.mlp_ratio) for d, h in zip(cfg.depths, cfg.num_heads)
        )
        self.norm = nn.LayerNorm(dim)
        self.conv_after_body = nn.Conv2d(dim, dim, 3, padding=1)
        # LeakyReLU slope 0.01 (PyTorch default) here, 0.2 after the upsampling convs: as official.
        self.conv_before_upsample = nn.Sequential(nn.Conv2d(dim, num_feat, 3, padding=1), nn.LeakyReLU())
        self.n_up = {2: 1, 4: 2, 8: 3}[cfg.sf]
        for i in range(1, self.n_up + 1):
            self.add_module(f"conv_up{i}", nn.Conv2d(num_feat, num_feat, 3, padding=1))
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, padding=1)
        self.conv_last = nn.Conv2d(num_feat, cfg.in_chans, 3, padding=1)
        self.lrelu = nn.LeakyReLU(0.2)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[2], x.shape[3])
        y = self.patch_embed(x)
        for layer in self.layers:
            y = layer(y, size)
        y = self.norm(y)
        return y.transpose(1, 2).reshape(x.shape[0], -1, *size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.flip_ensemble and not self.training:
            # One batch of 2B: the mirrored copies ride along (faces are near-symmetric, so the two
            # estimates differ only where the network is unsure; their mean is the better guess).
            both = self._forward(torch.cat([x, x.flip(-1)]))
            return 0.5 * (both[: len(x)] + both[len(x):].flip(-1))
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        ws = self.config.window_size
        # Official quirk, kept for its checkpoints: padding is computed on the input size, not on the feature size.
        x = F.pad(x, (0, (ws - w % ws) % ws, 0, (ws - h % ws) % ws), mode="reflect")
        mean = self.mean.to(x.dtype)
        # residual=False (official): the head's output is added to the dataset mean, so the network
        # has to rebuild the whole face through the sf-times unshuffled stem. residual=True: it is
        # added to the input itself, so the identity costs nothing and the network predicts only
        # the correction (zero head output = input returned unchanged).
        base = x if self.config.residual else mean
        x = (x - mean) * self.config.img_range
        x = self.conv_first(x)
        x = self.conv_after_body(self.forward_features(x)) + x
        x = self.conv_before_upsample(x)
        for i in range(1, self.n_up + 1):
            x = self.lrelu(getattr(self, f"conv_up{i}")(F.interpolate(x, scale_factor=2, mode="nearest")))
        x = self.conv_last(self.lrelu(self.conv_hr(x)))
        x = x / self.config.img_range + base
        return x[:, :, :h, :w]
