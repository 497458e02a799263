"""The background upsampler (Real-ESRGAN's RRDBNet) through onnxruntime or OpenVINO.

Unlike the face networks, RRDBNet runs on tiles of any size (the photo's, clamped to 400 px plus context), so
its graph has a dynamic height and width: x (B, 3, H, W) float32 in [0, 1], H and W multiples of the
network's pixel-unshuffle factor -> (B, 3, scale H, scale W), nominally [0, 1], not clamped. The graph is
cached beside the face graphs (`<weights cache>/../onnx/background-<digest>.onnx`), keyed by the SHA-256 of
the parameters, the scale, the opset and the torch version; a cached graph whose key matches is reused.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from difface.atomic import atomic_write_bytes
from difface.backends import RUNTIMES, check_backend
from difface.backends.onnx_export import DEFAULT_OPSET, cache_dir, file_sha256, key_digest, parameters_sha256
from difface.models.rrdbnet import RRDBNet


def background_key(net: RRDBNet, opset: int = DEFAULT_OPSET) -> dict:
    """The cache key of an RRDBNet graph (JSON-able)."""
    return {"kind": "rrdbnet", "parameters_sha256": parameters_sha256(net), "scale": int(net.scale),
            "opset": int(opset), "torch": torch.__version__, "format": 1}


def cached_background_export(net: RRDBNet, *, opset: int = DEFAULT_OPSET,
                             root: str | os.PathLike | None = None) -> tuple[Path, bool]:
    """(path, reused) of the cached dynamic-size ONNX graph of `net`, exported (atomically) when missing."""
    key = background_key(net, opset)
    folder = Path(root) if root is not None else cache_dir()
    path = folder / f"background-{key_digest(key)[:24]}.onnx"
    meta = path.with_suffix(".json")
    if path.is_file() and meta.is_file():
        with contextlib.suppress(OSError, ValueError):
            stored = json.loads(meta.read_text())
            if stored.get("key") == key and stored.get("size") == path.stat().st_size:
                return path, True
    mod = copy.deepcopy(net).eval().float().cpu()
    m = net.unshuffle
    dummy = torch.rand(1, 3, 8 * m, 6 * m, generator=torch.Generator().manual_seed(0))
    buf = io.BytesIO()
    dyn = {"x": {0: "batch", 2: "height", 3: "width"}, "out": {0: "batch", 2: "out_height", 3: "out_width"}}
    with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(mod, (dummy,), buf, dynamo=False, opset_version=int(opset), input_names=["x"],
                          output_names=["out"], dynamic_axes=dyn, do_constant_folding=True)
    atomic_write_bytes(path, buf.getvalue())
    record = {"key": key, "size": path.stat().st_size, "sha256": file_sha256(path),
              "io": {"x": "(B, 3, H, W) float32 in [0, 1], H and W multiples of " + str(m),
                     "out": f"(B, 3, {net.scale} H, {net.scale} W) float32, nominally [0, 1] (clamp it)"}}
    atomic_write_bytes(meta, json.dumps(record, indent=1).encode())
    return path, False


class RuntimeRRDBNet(nn.Module):
    """An RRDBNet stand-in whose forward runs through a runtime of difface.backends.RUNTIMES (onnxruntime,
    OpenVINO); keeps `scale` and `unshuffle`.

    forward(x (B, 3, H, W) float32 in [0, 1]) -> (B, 3, scale H, scale W) float32 on the CPU.
    """

    def __init__(self, net: RRDBNet, backend: str, *, root: str | os.PathLike | None = None):
        super().__init__()
        build = RUNTIMES[backend].build if backend in RUNTIMES else None
        if build is None:
            runners = " or ".join(name for name, rt in RUNTIMES.items() if rt.build is not None)
            raise ValueError(f"backend must be {runners}, got {backend!r}")
        check_backend(backend)
        self.scale, self.unshuffle = net.scale, net.unshuffle
        path, _ = cached_background_export(net, root=root)
        self._run, self.description = build(path, "fp32", "cpu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._run([np.ascontiguousarray(x.detach().float().cpu().numpy())])
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))

    def extra_repr(self) -> str:
        return self.description

