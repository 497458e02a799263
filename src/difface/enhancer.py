"""DifFace as one ONNX face-enhancer file for host programs (facefusion, ComfyUI's ReActor node, plain onnxruntime).

The host's contract: a crop aligned to the FFHQ 512 five-point template (the one difface aligns to), one input
`input` float32 (1, 3, 512, 512), RGB in [-1, 1]; the first output's first item (3, 512, 512) in [-1, 1], which the
host clips, pastes back with its own mask and blends. `Enhancer` computes that in torch:

    face = input * 0.5 + 0.5;  seen = down(face)           (the model size s; no-op when s = 512)
    est = clamp(estimator(seen), 0, 1)
    sample = DifFace.diffuse_from(est, start, fixed noise)  (q_sample, then the sampler: the same code as restore)
    out = sample (s = 512)  or  clamp(face + up(sample - seen), 0, 1)   (difface.face.band: the band merge)
    output = out * 2 - 1

down / up are bicubic resizes with antialiasing written as two matrix products, the matrices taken from
difface.face.band.resize itself (the exporter has no antialiased bicubic). The noise is drawn once from the
seed's generator (as `generator_noise` draws it) and kept as constants: every host, every frame of a video, gives
the same pixels for the same crop. `export_enhancer` traces the module into one self-contained .onnx: the sampler
is unrolled, every step reads the same network weights (one copy in the file).

The file has no `weight` input: facefusion hides its weight slider for such a model and ReActor passes none, and
the realism of DifFace is set by the start step at export.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import warnings
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from difface import hub
from difface.atomic import atomic_write_bytes
from difface.backends.onnx_export import DEFAULT_OPSET, file_sha256, parameters_sha256
from difface.bundled import BUNDLED_DIR
from difface.config import DEFAULT_NFE, OptionError, SamplingOptions
from difface.core import DifFace
from difface.diffusion.sampling import replay_noise
from difface.diffusion.solvers import OFFICIAL
from difface.face import band
from difface.plan import SamplingPlan

SIZE = 512  # the hosts' crop (FFHQ 512 template)
DEFAULT_SAMPLER = "ddim"  # few-step DDIM: few evaluations per face and few noise images stored in the file
INPUT, OUTPUT = "input", "output"
ENHANCER_FORMAT = 1
LICENCES = {
    "bundled": "research and non-commercial use only (the bundled small model was trained on CelebA, whose terms "
               "allow non-commercial research only; see difface's docs/model-card.md)",
    "official": "NTU S-Lab License 1.0 (the official DifFace weights): non-commercial use only",
    "filler": "no trained weights (deterministic filler values, for tests and timing only)",
    "other": "the terms of the weights files it was made from (not known to difface)",
}


def default_sampling(model: DifFace) -> SamplingOptions:
    """The enhancer's settings when none are given: the model's fixed default start (the bundled model's `auto` is
    replaced by its fixed alternative, t = 80), its eta, few-step DDIM with DEFAULT_NFE evaluations (or as many as
    fit below the start), the default seed."""
    t0 = int(model.diffusion.timestep_map[model.default_start_step])
    return SamplingOptions(start_step=model.default_start_step, sampler=DEFAULT_SAMPLER,
                           nfe=min(DEFAULT_NFE, t0 + 1) if t0 else None)


def resolve_sampling(model: DifFace, sampling: SamplingOptions | None) -> tuple[SamplingOptions, SamplingPlan]:
    """The settings the enhancer runs and their plan: `sampling` with its start step, eta and evaluations filled from
    the model, checked against it once (difface.plan; OptionError naming the option: `start_step` auto or outside
    the chain, `nfe` that does not fit)."""
    if sampling is None:
        sampling = default_sampling(model)
    if sampling.start_step == "auto":
        raise OptionError("start_step", "auto chooses a start per image; an enhancer file runs one fixed start: "
                          f"give a number (the model's default fixed start is {model.default_start_step})")
    if sampling.start_step is None:  # the model's fixed default, also where its default is "auto"
        sampling = replace(sampling, start_step=model.default_start_step)
    plan = SamplingPlan.from_options(model, sampling)
    return replace(sampling, eta=plan.eta, nfe=plan.nfe if plan.start else sampling.nfe), plan


def resize_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) float32 A with A @ v = band.resize of v along one axis (bicubic, antialiased)."""
    eye = torch.eye(n_in, dtype=torch.float32).view(1, 1, n_in, n_in)
    return band.resize(eye, (n_out, n_in))[0, 0].contiguous()


class _ZeroPrior(nn.Module):
    """A stand-in prior predicting zeros: runs a sampler's structure (which steps draw noise) without a network."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[0], 2 * self.channels, *x.shape[2:])


def fixed_noise(model: DifFace, plan: SamplingPlan, seed: int) -> list[torch.Tensor]:
    """The noise one enhancement draws, in order (q_sample's first), from the generator seeded with `seed`: the
    draws the plan's sampler makes, found by running it once with a zero-predicting prior."""
    s = model.image_size
    gen = torch.Generator().manual_seed(int(seed))
    drawn: list[torch.Tensor] = []

    def draw(x: torch.Tensor) -> torch.Tensor:
        drawn.append(torch.randn(x.shape[1:], generator=gen, dtype=torch.float32).unsqueeze(0))
        return drawn[-1]

    if plan.start:
        dry = replace(model, prior=_ZeroPrior(3))
        with torch.no_grad():
            dry.diffuse_from(torch.zeros(1, 3, s, s), plan.start, draw, plan)
    return drawn


class Enhancer(nn.Module):
    """DifFace on a host's 512 crop, with fixed noise: forward((1, 3, 512, 512) in [-1, 1]) -> the same shape in
    [-1, 1] (see the module doc). `sampling`: start step (a number), eta, sampler, nfe, seed (None:
    default_sampling); schedule "fitted" uses the schedule stored for the prior (difface.schedules)."""

    def __init__(self, model: DifFace, sampling: SamplingOptions | None = None):
        super().__init__()
        if model.task != "restoration":
            raise OptionError("estimator", f"an enhancer restores faces; {model.name} is a {model.task} model")
        self.settings, self.plan = resolve_sampling(model, sampling)
        self.model = model
        self.prior, self.estimator = model.prior, model.estimator  # registered: the traced graph's weights
        s = model.image_size
        self.band = s != SIZE
        if self.band:
            self.register_buffer("down", resize_matrix(SIZE, s), persistent=False)
            self.register_buffer("up", resize_matrix(s, SIZE), persistent=False)
        self.noise = fixed_noise(model, self.plan, self.settings.seed)

    def resize(self, x: torch.Tensor, mat: torch.Tensor) -> torch.Tensor:
        return mat @ x @ mat.T

    def restore(self, face: torch.Tensor) -> torch.Tensor:
        """face (1, 3, 512, 512) in [0, 1] -> the enhanced face, same shape, [0, 1]."""
        seen = self.resize(face, self.down) if self.band else face
        est = self.estimator(seen).float().clamp(0, 1)
        st = self.settings
        sample = est
        if st.start_step:
            sample = self.model.diffuse_from(est, st.start_step, replay_noise(self.noise), self.plan)
        if not self.band:
            return sample
        return (face + self.resize(sample - seen, self.up)).clamp(0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape) != (1, 3, SIZE, SIZE):
            raise ValueError(f"an enhancer takes one aligned face (1, 3, {SIZE}, {SIZE}) in [-1, 1], got "
                             f"{tuple(x.shape)}")
        return self.restore(x * 0.5 + 0.5) * 2 - 1

    def describe(self) -> str:
        st, m = self.settings, self.model
        t = int(m.diffusion.timestep_map[st.start_step]) if st.start_step else 0
        how = "estimator only" if not st.start_step else (
            f"{st.sampler} with {self.plan.nfe} evaluations" if st.sampler != OFFICIAL
            else f"the official loop, {st.start_step} evaluations")
        return (f"{m.name} at {m.image_size} px, start step {st.start_step} (t = {t}), eta {st.eta:g}, {how}, "
                f"seed {st.seed}, {len(self.noise)} noise draws")


def licence_of(model: DifFace) -> str:
    """The terms of the weights an enhancer file carries (LICENCES), from the model's weights files."""
    sources = [Path(p) for p in model.sources.values() if p is not None]
    if not sources:
        return LICENCES["filler"] if model.name.startswith("filler") else LICENCES["other"]
    if all(p.resolve().parent == Path(BUNDLED_DIR).resolve() for p in sources):
        return LICENCES["bundled"]
    official = {e.filename for e in hub.REGISTRY.values() if "zsyOAOA/DifFace" in e.url}
    if all(p.name in official for p in sources):
        return LICENCES["official"]
    return LICENCES["other"]


def metadata(enhancer: Enhancer) -> dict[str, str]:
    """The metadata_props of an enhancer file: name, licence, the weights' SHA-256, the settings, the contract."""
    m, st = enhancer.model, enhancer.settings
    sources = {role: file_sha256(p) for role, p in sorted(m.sources.items()) if p is not None}
    if not sources:
        sources = {"prior_parameters": parameters_sha256(m.prior),
                   "estimator_parameters": parameters_sha256(m.estimator)}
    settings = {"start_step": st.start_step, "steps_respacing": m.diffusion.num_timesteps,
                "start_t": int(m.diffusion.timestep_map[st.start_step]) if st.start_step else 0, "eta": st.eta,
                "sampler": st.sampler, "nfe": st.nfe, "schedule": st.schedule, "seed": st.seed,
                "model_size": m.image_size, "band_merge": enhancer.band}
    return {
        "difface.format": str(ENHANCER_FORMAT), "difface.model": m.name, "difface.licence": licence_of(m),
        "difface.source_sha256": json.dumps(sources), "difface.settings": json.dumps(settings),
        "difface.describe": enhancer.describe(),
        "difface.contract": f"{INPUT}: float32 (1, 3, {SIZE}, {SIZE}) RGB in [-1, 1], a crop aligned to the FFHQ "
                            f"512 five-point template; {OUTPUT}: the enhanced crop, same shape and range",
    }


def export_enhancer(enhancer: Enhancer, path: str | Path, *, opset: int = DEFAULT_OPSET) -> dict:
    """Trace `enhancer` into one self-contained ONNX file at `path` (written atomically) with its metadata;
    returns {"path", "bytes", "metadata"}. Needs the onnx package (as torch's exporter does)."""
    import onnx  # optional: the exporter's own dependency

    g = torch.Generator().manual_seed(0)
    example = torch.rand(1, 3, SIZE, SIZE, generator=g) * 2 - 1
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(enhancer.eval(), (example,), buf, dynamo=False, opset_version=int(opset),
                          input_names=[INPUT], output_names=[OUTPUT], do_constant_folding=True)
    proto = onnx.load_from_string(buf.getvalue())
    meta = metadata(enhancer)
    onnx.helper.set_model_props(proto, meta)
    proto.doc_string = "DifFace face enhancer (difface export enhancer)"
    data = proto.SerializeToString()
    atomic_write_bytes(Path(path), data)
    return {"path": str(path), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "metadata": meta}
