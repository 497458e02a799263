"""`difface export onnx`: a loaded DifFace model as a folder another program can run without this package.

    DIR/prior.onnx, DIR/estimator.onnx (or inpainter.onnx), DIR/manifest.json

The manifest (MANIFEST_FORMAT 1) holds, for each graph, its file, SHA-256, inputs and outputs (names,
shapes with a dynamic "batch", dtypes, value ranges); the model's task, size and name; the diffusion
schedule (the 1000-step linear betas and alphas_cumprod, the respacing and its timestep map and respaced
alphas_cumprod); and the sampling the model's defaults (or the given options) mean, written out step by
step so that a loop needs no schedule arithmetic:

    x0 = (clamp(est, 0, 1) - 0.5) / 0.5;  x = q_sample.c_x0 * x0 + q_sample.c_noise * noise
    for each step: out = prior(x, [t]); eps = out[:, :3]
                   x0 = clamp(recip * x - recipm1 * eps, -1, 1)
                   x = c_x0 * x0 + c_eps * eps + sigma * noise      (noise only where sigma > 0)
    result = clamp(x * 0.5 + 0.5, 0, 1)

every coefficient a float32 value (the official loop computes them in float32 from the float64 schedule,
the few-step solvers in float64; the manifest stores what difface's torch code multiplies by).
docs/onnx.md and examples/onnx_restore.py show such a program (numpy + onnxruntime).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from difface.atomic import atomic_write_bytes
from difface.backends.onnx_export import DEFAULT_OPSET, cache_record, cached_export, file_sha256
from difface.core import DifFace
from difface.diffusion.solvers import OFFICIAL
from difface.plan import SamplingPlan

MANIFEST_FORMAT = 1
# The samplers a manifest can write out as explicit coefficients: the official loop and few-step DDIM.
EXPORT_SAMPLERS = (OFFICIAL, "ddim")


def _f32(v) -> float:
    return float(np.float32(v))


def manifest_steps(model: DifFace, sampling: SamplingPlan) -> dict:
    """The reverse process of a sampling plan (one fixed start) as explicit float32 coefficients (see the module
    doc)."""
    d = model.diffusion
    n, eta, sampler = int(sampling.start), sampling.eta, sampling.sampler
    f32 = np.float32
    plan: dict = {"sampler": sampler, "start_step": n, "start_t": int(d.timestep_map[n]) if n else 0,
                  "eta": float(eta), "nfe": None, "steps": []}
    if n == 0:
        plan["q_sample"] = None
        return plan
    plan["q_sample"] = {"c_x0": _f32(d.sqrt_alphas_cumprod[n]), "c_noise": _f32(d.sqrt_one_minus_alphas_cumprod[n])}
    if sampler == OFFICIAL:
        for i in reversed(range(n)):
            ab, abp = f32(d.alphas_cumprod[i]), f32(d.alphas_cumprod_prev[i])
            one = f32(1)
            sigma = f32(eta) * np.sqrt((one - abp) / (one - ab)) * np.sqrt(one - ab / abp)
            c_eps = np.sqrt(max(one - abp - sigma**2, f32(0)))
            plan["steps"].append({"index": i, "t": int(d.timestep_map[i]),
                                  "recip": _f32(d.sqrt_recip_alphas_cumprod[i]),
                                  "recipm1": _f32(d.sqrt_recipm1_alphas_cumprod[i]), "c_x0": _f32(np.sqrt(abp)),
                                  "c_eps": _f32(c_eps), "sigma": _f32(sigma)})
        return plan
    base = d.base()
    ts = sampling.fixed.timesteps
    plan["nfe"] = len(ts)
    abar = [float(base.alphas_cumprod[t]) for t in ts] + [1.0]
    for k, t in enumerate(ts):
        a, a_next = abar[k], abar[k + 1]
        sigma = eta * math.sqrt((1 - a_next) / (1 - a)) * math.sqrt(1 - a / a_next)
        plan["steps"].append({"index": k, "t": int(t), "recip": _f32(base.sqrt_recip_alphas_cumprod[t]),
                              "recipm1": _f32(base.sqrt_recipm1_alphas_cumprod[t]), "c_x0": _f32(math.sqrt(a_next)),
                              "c_eps": _f32(math.sqrt(max(1 - a_next - sigma**2, 0.0))), "sigma": _f32(sigma)})
    return plan


def schedule_of(model: DifFace) -> dict:
    d = model.diffusion
    base = d.base()
    steps, kind = getattr(d, "source", (len(base.betas), "linear"))
    return {"num_timesteps": int(steps), "beta_schedule": kind, "betas": base.betas.tolist(),
            "alphas_cumprod": base.alphas_cumprod.tolist(), "respaced_steps": int(d.num_timesteps),
            "timestep_map": d.timestep_map.tolist(), "respaced_alphas_cumprod": d.alphas_cumprod.tolist()}


@dataclass(frozen=True)
class ExportSettings:
    """What `export_model` writes: the sampling plan from respaced `start_step` (None: the model's default) at
    `eta` (None: the model's) with `sampler` (one of EXPORT_SAMPLERS; nfe: evaluations of ddim, None:
    DEFAULT_NFE), graphs at precision `dtype` (fp32 | fp16) and ONNX `opset`."""

    start_step: int | None = None
    eta: float | None = None
    sampler: str = OFFICIAL
    nfe: int | None = None
    dtype: str = "fp32"
    opset: int = DEFAULT_OPSET


def export_model(model: DifFace, outdir: str | os.PathLike, settings: ExportSettings | None = None, *,
                 cache_root: str | os.PathLike | None = None, log=print) -> dict:
    """Write the model's graphs (through the export cache) and manifest.json into `outdir` as `settings` say
    (None: the defaults); returns the manifest."""
    settings = settings or ExportSettings()
    start_step, eta, sampler, nfe = settings.start_step, settings.eta, settings.sampler, settings.nfe
    dtype, opset = settings.dtype, settings.opset
    if sampler not in EXPORT_SAMPLERS:
        raise ValueError(f"the manifest writes out the official loop and the ddim sampler, not {sampler!r}")
    step = model.default_start_step if start_step is None else int(start_step)  # "auto" is written as its fixed start
    sampling = model.plan(start_step=step, eta=eta, sampler=sampler, nfe=nfe)  # checked before any file is written
    eta = sampling.eta
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    est_name = "inpainter" if model.task == "inpainting" else "estimator"
    files = {}
    for role, net in (("prior", model.prior), (est_name, model.estimator)):
        src = model.sources.get("prior" if role == "prior" else "estimator")
        path, reused = cached_export(net, source=src, dtype=dtype, opset=opset, image_size=model.image_size,
                                     root=cache_root)
        record = cache_record(path)
        dest = out / f"{role}.onnx"
        tmp = out / f".{role}.onnx.part"
        shutil.copyfile(path, tmp)
        os.replace(tmp, dest)
        files[role] = {"file": dest.name, "sha256": record.get("sha256") or file_sha256(dest),
                       "bytes": dest.stat().st_size, **record.get("io", {}),
                       "source_sha256": record["key"]["source_sha256"], "source": record["key"]["source"],
                       "network": record["key"]["kind"], "config": record["key"]["config"]}
        log(f"{role}: {dest} ({dest.stat().st_size / 2**20:.1f} MiB, {'from the cache' if reused else 'exported'})")
    manifest = {
        "format": MANIFEST_FORMAT, "producer": "difface", "task": model.task, "name": model.name,
        "image_size": model.image_size, "dtype": dtype, "opset": int(opset), "torch": torch.__version__,
        "files": files,
        "estimator_input": ("y = the aligned face (RGB, [0, 1]) resized to image_size (bicubic, antialiased)"
                            if model.task == "restoration" else
                            "y = cat(face with the missing pixels at 0, mask (1 = missing)) at image_size"),
        "schedule": schedule_of(model),
        "sampling": manifest_steps(model, sampling),
        "auto_start": json.loads(model.autostart.to_json()) if model.default_auto else None,
        "default_start_is_auto": bool(model.default_auto),
        "clip_x0": True,
    }
    if model.task == "inpainting":
        manifest["inpainting"] = ("after each x0 prediction: x0 = x0 - 0.5 * (1 - m) * 2 * (x0 - yn), yn = (y - 0.5) / "
                                  "0.5, then clamp to [-1, 1]; the result keeps the input's known pixels")
    atomic_write_bytes(out / "manifest.json", json.dumps(manifest, indent=1).encode())
    return manifest
