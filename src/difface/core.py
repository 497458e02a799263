"""DifFace on aligned faces: restoration and inpainting, as the official `sample_func_ir_aligned`.

    y  --estimator-->  f(y)  --q_sample to respaced step N-->  x_N  --sampler N-1..0-->  x_0

Tensors: lq (B, 3, H, W) float in [0, 1]; results have the input's size. The networks run at the
prior's resolution S; other sizes are resized with bicubic antialiasing and resized back. The
sampler is injected (difface.diffusion.sampling: the official respaced loop or a few-step solver),
and so is the randomness (one generator per image, or a replayed noise source).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from difface import models, weights
from difface.autostart import AutoStart, estimate_change, steps_for_error
from difface.backends import backend_network
from difface.bundled import BUNDLED_DIR, BundledModelMissing, bundled_model_paths  # noqa: F401 (re-exported)
from difface.config import DEFAULT_MODEL, DEFAULT_STEPS, MODELS, OFFICIAL_MODEL, OptionError, ref
from difface.data.masks import FEATHER_MODEL_PX, detect_mask, fill_mask, known_resize  # noqa: F401 (re-exported)
from difface.device import autocast as autocast_ctx
from difface.device import fast_module, pick_device
from difface.diffusion.sampling import EpsDenoiser, NoiseFn, X0Fn, generator_noise
from difface.diffusion.schedule import Diffusion
from difface.plan import SamplingPlan
from difface.weights import trained_t_max

# The defaults of the official models (difface.config.MODELS), kept under these names for callers
DEFAULT_START_T, DEFAULT_ETA = MODELS["official-512"].start_t, MODELS["official-512"].eta
INPAINT_START_T, INPAINT_ETA = MODELS["official-256-inpaint"].start_t, MODELS["official-256-inpaint"].eta
DEFAULT_RESPACING = DEFAULT_STEPS


def image_seed(seed: int, image: torch.Tensor) -> int:
    """A per-image seed from the user's seed and the image's content (float32 bytes).

    Each image gets its own noise (no shared artefact pattern across a folder), and its result
    depends only on the image and the seed: not on file names, order, batching or sharding.
    """
    digest = hashlib.sha256(image.detach().float().contiguous().cpu().numpy().tobytes()).digest()
    return (int(seed) * 1_000_003 + int.from_bytes(digest[:8], "little")) % 2**63


_metadata = weights.read_metadata  # kept for callers


def _check_role(net: nn.Module, source, option: str, what: str, roles: tuple[str, ...]) -> None:
    """OptionError naming the file when a network's role (difface.models.ROLES) is not one its option takes."""
    if models.role_of(net) not in roles:
        raise OptionError(option, f"{source}: this file holds a {type(net).__name__} network, not {what}; check the "
                          f"order of {ref('prior')} and {ref('estimator')}")


@dataclass
class Restoration:
    """result, estimate: (B, 3, H, W) in [0, 1] at the input size (estimate = clamped f(y));
    start_steps: the respaced start step used for each image."""

    result: torch.Tensor
    estimate: torch.Tensor
    start_steps: list[int] | None = None


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic antialiased resize (as the official sampler); a no-op at the same size."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bicubic", antialias=True)


@dataclass
class DifFace:
    """A prior (diffusion UNet), an estimator and the respaced diffusion they run on.

    task "restoration": the estimator maps (B, 3, S, S) -> (B, 3, S, S); "inpainting": it maps
    cat(lq, mask) (B, 4, S, S) -> (B, 3, S, S). default_start_t / default_eta: the settings used when a
    call gives none (as an original timestep, so that they mean the same on any respacing);
    default_auto: when a call gives no start step, choose one per image (`start_step="auto"`) instead of
    default_start_t; t_max: the largest timestep the prior was trained on (start steps beyond it are
    refused).
    """

    prior: nn.Module
    estimator: nn.Module
    diffusion: Diffusion
    image_size: int
    name: str = "difface"
    default_start_t: int = DEFAULT_START_T
    default_eta: float = DEFAULT_ETA
    t_max: int | None = None
    task: str = "restoration"
    autostart: AutoStart = field(default_factory=AutoStart)
    default_auto: bool = False
    sources: dict[str, Path] = field(default_factory=dict)  # weights files of "prior" / "estimator", when known

    @classmethod
    def from_modules(
        cls, prior: nn.Module, estimator: nn.Module, respacing: str = DEFAULT_RESPACING, name: str = "difface",
        task: str = "restoration",
    ) -> DifFace:
        size = prior.config.image_size if hasattr(prior, "config") else 512
        model = cls(prior, estimator, Diffusion.create(1000, "linear", respacing), size, name, task=task)
        model.apply_defaults(OFFICIAL_MODEL[task])
        return model

    def apply_defaults(self, name: str) -> None:
        """Take the defaults (start, eta, auto rule; t_max when the entry fixes one) of the named model
        `MODELS[name]` (difface.config)."""
        p = MODELS[name]
        self.default_start_t, self.default_eta, self.default_auto = p.start_t, p.eta, p.auto
        if p.t_max is not None:
            self.t_max = p.t_max

    @classmethod
    def _load(
        cls, prior: str | None = None, estimator: str | None = None, respacing: str = DEFAULT_RESPACING,
        task: str = "restoration", model: str | None = None,
    ) -> DifFace:
        """Load from registry names or files (with the official defaults of their task); with neither given, the
        bundled small model for `task` ("restoration" or "inpainting"). With named files the task follows the
        estimator's kind. `model`: a name of MODELS whose defaults replace those (the bundled files: the task's
        DEFAULT_MODEL)."""
        bundled = prior is None and estimator is None
        if bundled:
            prior, estimator = bundled_model_paths(task)
            name = "bundled small model (difface-small64, trained on CelebA; see docs/model-card.md)"
        elif prior is None or estimator is None:
            raise ValueError("give both a prior and an estimator (or neither, for the bundled model)")
        else:
            name = f"prior={Path(str(prior)).name}, estimator={Path(str(estimator)).name}"
        p, e = weights.load_networks(prior, estimator)
        _check_role(p, prior, "prior", "a diffusion prior (UNet)", ("prior",))
        _check_role(e, estimator, "estimator", "a diffused estimator (SwinIR, or LaMa for inpainting)",
                    ("estimator", "inpainter"))
        task = "inpainting" if models.role_of(e) == "inpainter" else "restoration"
        net = cls.from_modules(p, e, respacing, name=name, task=task)
        net.sources = {"prior": weights.resolve(prior, allow_download=False),
                       "estimator": weights.resolve(estimator, allow_download=False)}
        net.t_max = trained_t_max(net.sources["prior"])
        net.autostart = AutoStart.from_json(weights.autostart_rule(net.sources["estimator"]))
        if model is None and bundled:
            model = DEFAULT_MODEL[task]
        if model is not None:
            net.apply_defaults(model)
        return net

    @classmethod
    def from_pretrained(
        cls, model: str | None = None, *, prior: str | None = None, estimator: str | None = None,
        task: str = "restoration", device: torch.device | str | None = None, dtype: str = "fp32",
        backend: str = "torch", steps: str = DEFAULT_STEPS, channels_last: bool = False, compile: bool = False,
    ) -> DifFace:
        """The one entry to a ready model: a name of difface.config.MODELS (its weights and its own defaults:
        start, eta, t_max, auto rule), or files / registry names (prior and estimator, with the official defaults
        of their task; neither: the bundled model of `task`, DEFAULT_MODEL), moved to `device` (None: the best
        available), optionally optimized, its networks run through `backend`.

        Raises ValueError naming the weights file that cannot be used (or the device that is not usable)."""
        if model is not None:
            if model not in MODELS:
                raise ValueError(f"unknown model {model!r}; choose one of: {', '.join(MODELS)}")
            if prior is not None or estimator is not None:
                raise ValueError("give a model name or the prior and estimator files, not both")
            prior, estimator, task = MODELS[model].prior, MODELS[model].estimator, MODELS[model].task
        try:
            net = cls._load(prior, estimator, respacing=steps, task=task, model=model)
        except weights.WeightsError as e:
            raise ValueError(str(e)) from None
        except (OSError, RuntimeError, KeyError) as e:
            raise ValueError(str(e).strip("'\"")) from None
        net = net.to(device if isinstance(device, torch.device) else pick_device(device or "auto"))
        if channels_last or compile:
            net = net.optimized(channels_last=channels_last, compile=compile)
        return net.with_backend(backend, dtype=dtype)

    def optimized(self, *, channels_last: bool = False, compile: bool = False) -> DifFace:
        """A copy running faster stand-ins of both networks (difface.device.fast_module); self is unchanged.

        fp32 outputs stay within 1e-4 of eager (docs/speed-details.md); compiling costs minutes on a CPU, once.
        """
        return replace(self, prior=fast_module(self.prior, channels_last=channels_last, compile=compile),
                       estimator=fast_module(self.estimator, channels_last=channels_last, compile=compile))

    def with_backend(self, backend: str, *, dtype: str = "fp32") -> DifFace:
        """A copy whose two networks run through `backend` (difface.backends: torch, onnxruntime, openvino);
        self is unchanged. "torch" returns self. The ONNX graphs come from the export cache."""
        if backend == "torch":
            return self

        dev = self.device
        return replace(self, prior=backend_network(self.prior, backend, dtype=dtype, device=dev,
                                                   source=self.sources.get("prior"), image_size=self.image_size),
                       estimator=backend_network(self.estimator, backend, dtype=dtype, device=dev,
                                                 source=self.sources.get("estimator"), image_size=self.image_size))

    def to(self, device: torch.device | str) -> DifFace:
        self.prior.to(device)
        self.estimator.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.prior.parameters()).device

    @property
    def default_start(self) -> int | str:
        """What a call without a start step uses: "auto" (default_auto) or default_start_step."""
        return "auto" if self.default_auto else self.default_start_step

    @property
    def default_start_step(self) -> int:
        """The default start as a respaced step of this model's chain (nearest to default_start_t)."""
        return self.step_for_t(self.default_start_t)

    def step_for_t(self, t: int) -> int:
        """The respaced step whose original timestep is nearest to t."""
        return int(np.argmin(np.abs(self.diffusion.timestep_map - int(t))))

    def check_start_step(self, start_step: int) -> int:
        """Raise ValueError naming `start_step` when it is outside the chain or the prior's trained range."""
        n = self.diffusion.num_timesteps
        if isinstance(start_step, bool) or not isinstance(start_step, (int, np.integer)) or not 0 <= start_step < n:
            raise ValueError(f"start_step must be an integer in [0, {n - 1}] on this chain of {n} steps, "
                             f"got {start_step!r}")
        t = int(self.diffusion.timestep_map[start_step]) if start_step else 0
        if self.t_max is not None and t > self.t_max:
            top = int(np.flatnonzero(self.diffusion.timestep_map <= self.t_max)[-1])
            raise ValueError(f"start_step {start_step} means t = {t}, beyond the t <= {self.t_max} this prior was "
                             f"trained on; use a start step of at most {top}")
        return int(start_step)

    def plan(self, **settings) -> SamplingPlan:
        """The sampling plan for this model (difface.plan.SamplingPlan.make): settings start_step, eta, sampler, nfe,
        method, schedule, strength; None or absent: this model's defaults. Validated here, once."""
        return SamplingPlan.make(self, **settings)

    @torch.inference_mode()
    def estimate(self, y: torch.Tensor, mask: torch.Tensor | None = None,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """f(y) clamped to [0, 1]: y (B, 3, S, S) in [0, 1]; mask (B, 1, S, S) {0, 1} for inpainting."""
        x = y if self.task == "restoration" else torch.cat([y, mask.to(y)], dim=1)
        with autocast_ctx(y.device, dtype):
            out = self.estimator(x)
        return out.float().clamp_(0, 1)

    @torch.inference_mode()
    def restore(self, lq: torch.Tensor, plan: SamplingPlan | None = None, *, seeds: Sequence[int] | None = None,
                noise_fn: NoiseFn | None = None, dtype: torch.dtype = torch.float32,
                callback: Callable[[dict], None] | None = None, **settings) -> Restoration:
        """Restore aligned faces lq (B, 3, H, W) in [0, 1].

        Sampling: a `plan` (difface.plan.SamplingPlan, made once for a run), or its settings as keywords
        (`start_step`: the respaced index N the estimate is diffused to, one per image allowed, "auto" per image
        (difface.autostart), 0: the estimator's output; `eta`; `sampler`: "official" (the respaced loop, N
        evaluations), a few-step solver of difface.diffusion.solvers.SOLVERS (`nfe` evaluations from the same start
        state) or a Sampler callable; `nfe`; `method`; `schedule`); absent: the model's defaults.
        Randomness: either `seeds` (one per image; image b draws from its own generator, so its result does not
        depend on the batch) or an explicit `noise_fn` (replays).
        """
        if self.task != "restoration":
            raise ValueError("this model inpaints; call inpaint()")
        plan = _plan(self, plan, settings)
        y0 = self._check_lq(lq)
        s = self.image_size
        y = _resize(y0, (s, s))
        est = self.estimate(y, dtype=dtype)
        steps = self.auto_start_steps(y, est) if plan.auto else plan.starts(len(y))
        sample = self._diffuse_back(est, steps, plan, _Draws(seeds, noise_fn, dtype, callback))
        h, w = y0.shape[2:]
        if (h, w) != (s, s):
            sample = _resize(sample, (h, w)).clamp(0, 1)
            est = _resize(est, (h, w)).clamp(0, 1)
        return Restoration(result=sample, estimate=est, start_steps=steps)

    @torch.inference_mode()
    def inpaint(self, lq: torch.Tensor, mask: torch.Tensor | None = None, plan: SamplingPlan | None = None, *,
                seeds: Sequence[int] | None = None, noise_fn: NoiseFn | None = None,
                dtype: torch.dtype = torch.float32, callback: Callable[[dict], None] | None = None,
                feather: bool = True, **settings) -> Restoration:
        """Fill the missing region of aligned faces lq (B, 3, H, W) in [0, 1] (DifFace's second task).

        mask (B, 1, H, W), 1 = missing; None: the official convention (pixels whose three channels are
        exactly 0 are missing). At every step the known pixels of the x0 prediction are replaced by
        the input's (the masking regularizer with gamma 0.5 and one update); the result keeps the input's known
        pixels exactly (mask_back; a face larger than the model: beyond the fill's soft edge, `masks.fill_mask`,
        unless feather=False). Sampling and randomness as `restore` (no "auto" start); defaults: start t = 480,
        eta 1 (official).
        """
        if self.task != "inpainting":
            raise ValueError("this model restores; inpainting needs an inpainting estimator (e.g. LaMa)")
        plan = _plan(self, plan, settings)
        if plan.auto:
            raise ValueError("start_step 'auto' chooses a start from the damage of a restoration input; give a number")
        y0 = self._check_lq(lq)
        if mask is None:
            m0 = detect_mask(y0)
        else:
            m0 = (mask.to(y0.device, torch.float32) > 0.5).float()
            if m0.shape != (y0.shape[0], 1, *y0.shape[2:]):
                raise ValueError(f"mask must have shape {(y0.shape[0], 1, *y0.shape[2:])}, got {tuple(mask.shape)}")
            y0 = y0 * (1 - m0)
        s = self.image_size
        y = _resize(y0, (s, s))
        m = m0 if y.shape == y0.shape else (F.interpolate(m0, size=(s, s), mode="area") > 0).float()
        if y.shape != y0.shape:  # any missing pixel under a model pixel makes it missing; the rest from known pixels
            y = known_resize(y0, 1 - m0, (s, s)) * (1 - m)
        est = self.estimate(y, m, dtype=dtype)
        yn = (y - 0.5) / 0.5

        def keep_known(idx: list[int]) -> X0Fn:
            known, target = 1 - m[idx], yn[idx]
            # one gradient step (gamma 0.5) on sum((x0 - yn)^2 (1 - m)), written as autograd computes it
            return lambda x0: x0 - 0.5 * (known * (2 * (x0 - target)))

        steps = plan.starts(len(y))
        sample = self._diffuse_back(est, steps, plan, _Draws(seeds, noise_fn, dtype, callback), keep_known)
        h, w = y0.shape[2:]
        if (h, w) != (s, s):
            sample = _resize(sample, (h, w)).clamp(0, 1)
            est = _resize(est, (h, w)).clamp(0, 1)
            m0 = fill_mask(m0, s) if feather else m0  # a larger face: the fill blended in over a soft edge
        result = sample * m0 + y0 * (1 - m0)
        return Restoration(result=result, estimate=est, start_steps=steps)

    def auto_start_steps(self, y: torch.Tensor, est: torch.Tensor) -> list[int]:
        """`start_step="auto"`: one start step per image from the estimator's change (difface.autostart).

        y, est: (B, 3, S, S) in [0, 1] at the model size (input and estimate)."""
        rule = self.autostart
        err = rule.scale * estimate_change(y, est).cpu().numpy() + rule.offset
        return steps_for_error(self.diffusion, err, rule, self.t_max)

    # -- internals -------------------------------------------------------------------------------
    def _check_lq(self, lq: torch.Tensor) -> torch.Tensor:
        if lq.ndim != 4 or lq.shape[1] != 3:
            raise ValueError(f"expected lq of shape (B, 3, H, W), got {tuple(lq.shape)}")
        return lq.to(self.device, torch.float32)

    def _diffuse_back(self, est: torch.Tensor, steps: list[int], plan: SamplingPlan, draws: _Draws,
                      x0_fn_for: Callable[[list[int]], X0Fn] | None = None) -> torch.Tensor:
        """q_sample the estimate to each image's start step and run the plan's sampler; (B, 3, S, S) in [0, 1].

        Images sharing a start step run as one batch (a result never depends on the batch);
        `x0_fn_for(indices)` gives the x0 refinement for those images of the batch."""
        if draws.noise_fn is None and any(steps):
            if draws.seeds is None or len(draws.seeds) != est.shape[0]:
                raise ValueError("give one seed per image (seeds) or an explicit noise_fn")
        if draws.noise_fn is not None and len(set(steps)) > 1:
            raise ValueError("a replayed noise source needs one start step for the whole batch")
        out = est.clone()
        for n in sorted(set(steps)):
            if n == 0:
                continue
            idx = [b for b, k in enumerate(steps) if k == n]
            nf = draws.noise_fn or generator_noise([torch.Generator().manual_seed(int(draws.seeds[b])) for b in idx])
            out[idx] = self.diffuse_from(est[idx], n, nf, plan, dtype=draws.dtype, callback=draws.callback,
                                         x0_fn=None if x0_fn_for is None else x0_fn_for(idx))
        return out

    def diffuse_from(self, est: torch.Tensor, start_step: int, noise_fn: NoiseFn, plan: SamplingPlan, *,
                     dtype: torch.dtype = torch.float32, callback: Callable[[dict], None] | None = None,
                     x0_fn: X0Fn | None = None) -> torch.Tensor:
        """The reverse process of DifFace from one start: est (B, 3, S, S) in [0, 1] is q_sampled to respaced
        `start_step` (> 0) with noise_fn's first draw, and the plan's sampler runs to the clean image, drawing the
        rest of its noise from noise_fn. Returns (B, 3, S, S) in [0, 1]. Tensor code only (no inference mode of its
        own): difface.enhancer traces it into an ONNX graph."""
        amp = (lambda: autocast_ctx(est.device, dtype)) if dtype != torch.float32 else None
        x0 = (est - 0.5) / 0.5
        t = torch.full((est.shape[0],), int(start_step), dtype=torch.long, device=est.device)
        x = self.diffusion.q_sample(x0, t, noise_fn(x0))
        run = plan.sampler_at(self, int(start_step), auto=plan.auto)
        x = run(lambda d: EpsDenoiser(self.prior, d, clip=True, autocast=amp, x0_fn=x0_fn), x, noise_fn=noise_fn,
                callback=callback)
        return (x * 0.5 + 0.5).clamp(0, 1)


@dataclass(frozen=True)
class _Draws:
    """Where a call's noise comes from (one seed per image, or a replayed noise_fn), its precision and its per-step
    callback: what `restore` / `inpaint` hand down with the plan."""

    seeds: Sequence[int] | None
    noise_fn: NoiseFn | None
    dtype: torch.dtype
    callback: Callable[[dict], None] | None


def _plan(model: DifFace, plan: SamplingPlan | None, settings: dict) -> SamplingPlan:
    """The call's plan: the one given, or one made from the keyword settings (not both)."""
    if plan is None:
        return model.plan(**settings)
    if settings:
        raise ValueError(f"give a plan or its settings ({', '.join(settings)}), not both")
    return plan
