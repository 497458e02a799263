"""ONNX export of DifFace's networks, and the cache of exported graphs.

Graphs (legacy TorchScript exporter, opset 17 by default; dynamic batch, the spatial size fixed at the
model's resolution S, since SwinIR's attention masks and LaMa's DFT matrices depend on it):

- prior (UNet): x (B, C, S, S) float in [-1, 1] (x_t), t (B,) int64 original timesteps in [0, 999]
  -> out (B, 2C, S, S) float: eps = out[:, :C], learned-variance fraction v = out[:, C:] (about [-1, 1]).
- estimator, restoration (SwinIR): y (B, 3, S, S) in [0, 1] -> est (B, 3, S, S), nominally [0, 1],
  not clamped. The flip ensemble of our estimators (average with the mirrored pass) is inside the graph.
- estimator, inpainting (LaMa): y (B, 4, S, S) = [rgb in [0, 1] with the hole at 0 | mask {0, 1}, 1 =
  missing] -> est (B, 3, S, S). The FFTs of the Fourier units become DFT matrix products (ONNX export of
  torch.fft is not supported by the exporter); outputs agree with torch within float32 rounding.

Cache: `<weights cache>/../onnx/<role>-<digest>.onnx` with `<...>.json` beside it holding the key: the
source file's SHA-256 (for a network without a file, the SHA-256 of its parameters), the network kind and
config, the dtype, the opset, torch's version and this module's EXPORT_FORMAT. Both files are written
atomically; a graph whose key file matches is reused, anything else is exported again.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import math
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from difface import models, weights
from difface.atomic import atomic_write_bytes
from difface.models.lama import FourierUnit

DEFAULT_OPSET = 17
EXPORT_FORMAT = 1  # bump when the wrappers below change what a graph computes
EXPORT_DTYPES = ("fp32", "fp16")


def cache_dir() -> Path:
    """Folder of cached graphs: `onnx/` beside the weights cache's `weights/` folder."""
    return weights.cache_dir().parent / "onnx"


def image_size_of(net: nn.Module) -> int:
    cfg = net.config
    if isinstance(cfg, models.UNetConfig):
        return int(cfg.image_size)
    if isinstance(cfg, models.SwinIRConfig):
        return int(cfg.img_size * (cfg.unshuffle_scale if cfg.unshuffle else 1))
    return 256


def parameters_sha256(net: nn.Module) -> str:
    """SHA-256 over the state dict (sorted keys, names, shapes, dtypes and float32 bytes)."""
    h = hashlib.sha256()
    for k, v in sorted(net.state_dict().items()):
        h.update(f"{k}:{tuple(v.shape)}:{v.dtype}".encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def export_key(net: nn.Module, *, source_sha256: str | None, dtype: str = "fp32", opset: int = DEFAULT_OPSET,
               image_size: int | None = None) -> dict:
    """The cache key of one graph (a JSON-able dict)."""
    if dtype not in EXPORT_DTYPES:
        raise ValueError(f"ONNX export dtype must be one of {', '.join(EXPORT_DTYPES)}, got {dtype!r}")
    key = {
        "source_sha256": source_sha256 or parameters_sha256(net),
        "source": "file" if source_sha256 else "parameters",
        "kind": models.kind_of(net.config), "config": net.config.to_dict(), "dtype": dtype, "opset": int(opset),
        "image_size": int(image_size or image_size_of(net)), "torch": torch.__version__, "format": EXPORT_FORMAT,
    }
    return json.loads(json.dumps(key))  # as it reads back from the key file (tuples become lists)


def key_digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


# -- graph preparation ---------------------------------------------------------------------------------
class _FlipEnsemble(nn.Module):
    """SwinIR's eval-mode flip ensemble written with batch-size-free ops (same arithmetic)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        both = self.net._forward(torch.cat([x, x.flip(-1)]))
        pair = both.unflatten(0, (2, -1))
        return 0.5 * (pair[0] + pair[1].flip(-1))


def _dft_mats(h: int, w: int) -> tuple[torch.Tensor, ...]:
    """Real DFT matrices (float64 -> float32): ch, sh (h, h); cw, sw (w, w//2+1); icw, isw (w//2+1, w)."""
    k = torch.arange(h, dtype=torch.float64)
    ah = 2 * math.pi * torch.remainder(torch.outer(k, k), h) / h
    n = torch.arange(w, dtype=torch.float64)
    m = torch.arange(w // 2 + 1, dtype=torch.float64)
    prod = torch.remainder(torch.outer(n, m), w)
    aw = 2 * math.pi * prod / w
    sin_w = torch.where(torch.remainder(2 * prod, w) == 0, torch.zeros_like(aw), torch.sin(aw))
    sin_h = torch.where(torch.remainder(2 * torch.remainder(torch.outer(k, k), h), h) == 0, torch.zeros_like(ah),
                        torch.sin(ah))
    # c2r weights: DC and (even w) Nyquist once, the others twice; their imaginary parts are ignored
    wgt = torch.full((w // 2 + 1,), 2.0, dtype=torch.float64)
    wgt[0] = 1.0
    if w % 2 == 0:
        wgt[-1] = 1.0
    mats = (torch.cos(ah), sin_h, torch.cos(aw), sin_w, (wgt[:, None] * torch.cos(aw).T), (wgt[:, None] * sin_w.T))
    return tuple(t.float() for t in mats)


def _matmul_fourier_forward(self, x: torch.Tensor) -> torch.Tensor:
    """FourierUnit.forward with rfftn / irfftn (norm 'ortho') as DFT matrix products (exportable)."""
    b, _, h, w = x.shape
    dtype = x.dtype
    ch, sh, cw, sw, icw, isw = _dft_mats(int(h), int(w))
    scale = 1.0 / math.sqrt(int(h) * int(w))
    xf = x.float()
    ar, ai = xf @ cw, -(xf @ sw)  # along W: real -> half spectrum
    zr = (ch @ ar + sh @ ai) * scale  # along H: complex DFT
    zi = (ch @ ai - sh @ ar) * scale
    z = torch.stack((zr, zi), dim=2).flatten(1, 2)
    z = self.relu(self.bn(self.conv_layer(z.to(dtype))))
    z = z.float().unflatten(1, (-1, 2))
    zr, zi = z[:, :, 0], z[:, :, 1]
    ur, ui = ch @ zr - sh @ zi, ch @ zi + sh @ zr  # inverse along H
    out = (ur @ icw - ui @ isw) * scale  # c2r along W
    return out.to(dtype)


def exportable(net: nn.Module, dtype: str = "fp32") -> nn.Module:
    """A copy of `net` whose forward the ONNX exporter can trace for any batch size (eval mode)."""
    net = copy.deepcopy(net).eval().cpu()
    if dtype == "fp16":
        net = net.half()
    for mod in net.modules():
        if isinstance(mod, FourierUnit):
            mod.forward = _matmul_fourier_forward.__get__(mod)
    if isinstance(net.config, models.SwinIRConfig) and net.config.flip_ensemble:
        wrapped = _FlipEnsemble(net)
        wrapped.config = net.config
        return wrapped
    return net


def io_spec(net: nn.Module, image_size: int | None = None, dtype: str = "fp32") -> dict:
    """Inputs and outputs of the graph of `net`: names, shapes ('batch' is dynamic), dtypes, value ranges."""
    s = int(image_size or image_size_of(net))
    cfg = net.config
    f = "float16" if dtype == "fp16" else "float32"
    if isinstance(cfg, models.UNetConfig):
        c = cfg.in_channels
        return {
            "inputs": [
                {"name": "x", "shape": ["batch", c, s, s], "dtype": f, "range": [-1.0, 1.0],
                 "meaning": "x_t, the noisy image in diffusion space"},
                {"name": "t", "shape": ["batch"], "dtype": "int64", "range": [0, 999],
                 "meaning": "original timestep of the 1000-step chain (the respaced index mapped by timestep_map)"},
            ],
            "outputs": [{"name": "out", "shape": ["batch", cfg.out_channels, s, s], "dtype": f, "range": None,
                         "meaning": f"[eps (channels 0-{c - 1}, raw, std about 1) | learned-variance fraction v "
                                    f"(channels {c}-{cfg.out_channels - 1}, about [-1, 1])]"}],
        }
    if isinstance(cfg, models.SwinIRConfig):
        return {
            "inputs": [{"name": "y", "shape": ["batch", cfg.in_chans, s, s], "dtype": f, "range": [0.0, 1.0],
                        "meaning": "the degraded face, RGB"}],
            "outputs": [{"name": "est", "shape": ["batch", cfg.in_chans, s, s], "dtype": f, "range": [0.0, 1.0],
                         "meaning": "the estimate f(y), RGB, nominally [0, 1], not clamped (clamp it)"}],
        }
    return {
        "inputs": [{"name": "y", "shape": ["batch", 4, s, s], "dtype": f, "range": [0.0, 1.0],
                    "meaning": "[RGB with the missing pixels at 0 | mask, 1 = missing]"}],
        "outputs": [{"name": "est", "shape": ["batch", 3, s, s], "dtype": f, "range": [0.0, 1.0],
                     "meaning": "the filled face, RGB, nominally [0, 1], not clamped (clamp it)"}],
    }


def export_network(net: nn.Module, path: str | os.PathLike, *, dtype: str = "fp32", opset: int = DEFAULT_OPSET,
                   image_size: int | None = None) -> dict:
    """Export one network to an ONNX file at `path` (written atomically); returns its io_spec."""
    spec = io_spec(net, image_size, dtype)
    mod = exportable(net, dtype)
    tf = torch.float16 if dtype == "fp16" else torch.float32
    g = torch.Generator().manual_seed(0)
    args: tuple = ()
    for inp in spec["inputs"]:
        if inp["dtype"] == "int64":
            args += (torch.tensor([396, 100], dtype=torch.long),)
        else:
            args += (torch.rand(2, *inp["shape"][1:], generator=g).to(tf),)
    names_in = [i["name"] for i in spec["inputs"]]
    names_out = [o["name"] for o in spec["outputs"]]
    dyn = {n: {0: "batch"} for n in names_in + names_out}
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(mod, args, buf, dynamo=False, opset_version=int(opset), input_names=names_in,
                          output_names=names_out, dynamic_axes=dyn, do_constant_folding=True)
    atomic_write_bytes(Path(path), buf.getvalue())
    return spec


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def cached_export(net: nn.Module, *, source: str | os.PathLike | None = None, source_sha256: str | None = None,
                  dtype: str = "fp32", opset: int = DEFAULT_OPSET, image_size: int | None = None,
                  root: str | os.PathLike | None = None) -> tuple[Path, bool]:
    """The cached ONNX graph of `net`: (path, reused). Exported (atomically) unless a graph with the same
    key is in the cache. `source`: the weights file `net` was loaded from (its SHA-256 is the key's first
    part); without it, the key holds the SHA-256 of the parameters."""
    if source_sha256 is None and source is not None:
        source_sha256 = file_sha256(source)
    key = export_key(net, source_sha256=source_sha256, dtype=dtype, opset=opset, image_size=image_size)
    digest = key_digest(key)
    folder = Path(root) if root is not None else cache_dir()
    path = folder / f"{models.role_of(net)}-{digest[:24]}.onnx"
    meta = path.with_suffix(".json")
    if path.is_file() and meta.is_file():
        try:
            stored = json.loads(meta.read_text())
        except (OSError, ValueError):
            stored = {}
        if stored.get("key") == key and stored.get("size") == path.stat().st_size:
            return path, True
    spec = export_network(net, path, dtype=dtype, opset=opset, image_size=image_size)
    record = {"key": key, "size": path.stat().st_size, "sha256": file_sha256(path), "io": spec}
    atomic_write_bytes(meta, json.dumps(record, indent=1).encode())
    return path, False


def cache_record(path: str | os.PathLike) -> dict:
    """The key file written beside a cached graph ({} when missing)."""
    meta = Path(path).with_suffix(".json")
    return json.loads(meta.read_text()) if meta.is_file() else {}
