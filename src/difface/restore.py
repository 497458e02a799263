"""DifFace restoration of aligned faces (SPEC 2.2).

    y  --estimator-->  f(y)  --q_sample to respaced step N-->  x_N  --reverse DDIM N-1..0-->  x_0

Tensors: lq (B, 3, H, W) float in [0, 1]; results have the input's size. The network runs at the
prior's resolution S; other sizes are resized with bicubic antialiasing and resized back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from difface.device import autocast as autocast_ctx
from difface.diffusion.sampling import EpsDenoiser, NoiseFn, generator_noise, sample_loop
from difface.diffusion.schedule import Diffusion
from difface.diffusion.solvers import solve, solver_timesteps

DEFAULT_START_STEP = 100  # respaced index on "ddim250": original timestep 400 of 1000
DEFAULT_ETA = 0.5
DEFAULT_RESPACING = "ddim250"
BUNDLED_DIR = Path(__file__).parent / "assets" / "small64"
# The bundled prior is small and briefly trained: it helps near the clean end of the chain and harms
# from t=400 on, so its default start is lower (measured in docs/model-card.md).
BUNDLED_START_STEP = 20
BUNDLED_ETA = 0.0  # at start 20, eta 0 beat 0.5 on both PSNR-Y and NIQE (docs/model-card.md)


def image_seed(seed: int, image: torch.Tensor) -> int:
    """A per-image seed from the user's seed and the image's content (float32 bytes).

    Each image gets its own noise (no shared artefact pattern across a folder), and its result
    depends only on the image and the seed: not on file names, order, batching or sharding.
    """
    digest = hashlib.sha256(image.detach().float().contiguous().cpu().numpy().tobytes()).digest()
    return (int(seed) * 1_000_003 + int.from_bytes(digest[:8], "little")) % 2**63


class BundledModelMissing(FileNotFoundError):
    pass


def bundled_model_paths() -> tuple[Path, Path]:
    """(prior, estimator) safetensors of the small model shipped inside the package."""
    prior, est = BUNDLED_DIR / "prior.safetensors", BUNDLED_DIR / "estimator.safetensors"
    if not (prior.is_file() and est.is_file()):
        from difface.weights import local_path

        raise BundledModelMissing(
            "no bundled model is installed with this copy of difface, so name the official weights:\n"
            f"  --prior iddpm-ffhq512 --estimator swinir-ffhq512  (downloaded on first use into "
            f"{local_path('iddpm-ffhq512').parent}),\n"
            "  or, offline, put iddpm_ffhq512_ema500000.pth and swinir_restoration512_L1.pth from\n"
            "  https://github.com/zsyOAOA/DifFace/releases/tag/V1.0 into that folder, or pass their paths:\n"
            "  --prior /path/iddpm_ffhq512_ema500000.pth --estimator /path/swinir_restoration512_L1.pth"
        )
    return prior, est


@dataclass
class Restoration:
    """result, estimate: (B, 3, H, W) in [0, 1] at the input size (estimate = clamped f(y))."""

    result: torch.Tensor
    estimate: torch.Tensor


@dataclass
class DifFace:
    """A prior (diffusion UNet), an estimator (e.g. SwinIR) and the respaced diffusion they run on."""

    prior: nn.Module
    estimator: nn.Module
    diffusion: Diffusion
    image_size: int
    name: str = "difface"
    default_start_step: int = DEFAULT_START_STEP
    default_eta: float = DEFAULT_ETA

    @classmethod
    def from_modules(
        cls, prior: nn.Module, estimator: nn.Module, respacing: str = DEFAULT_RESPACING, name: str = "difface"
    ) -> DifFace:
        size = prior.config.image_size if hasattr(prior, "config") else 512
        return cls(prior, estimator, Diffusion.create(1000, "linear", respacing), size, name)

    @classmethod
    def load(
        cls, prior: str | None = None, estimator: str | None = None, respacing: str = DEFAULT_RESPACING
    ) -> DifFace:
        """Load from registry names or files; with neither given, the bundled small model."""
        from difface import weights

        bundled = prior is None and estimator is None
        if bundled:
            prior, estimator = bundled_model_paths()
            name = "bundled small model (difface-small64, trained on CelebA; see docs/model-card.md)"
        elif prior is None or estimator is None:
            raise ValueError("give both a prior and an estimator (or neither, for the bundled model)")
        else:
            name = f"prior={Path(str(prior)).name}, estimator={Path(str(estimator)).name}"
        p, e = weights.load_network(prior), weights.load_network(estimator)
        model = cls.from_modules(p, e, respacing, name=name)
        if bundled:
            model.default_start_step, model.default_eta = BUNDLED_START_STEP, BUNDLED_ETA
        return model

    def optimize(self, *, channels_last: bool = False, compile: bool = False) -> DifFace:
        """Speed options that keep the parameters: channels-last memory layout and torch.compile.

        fp32 outputs stay within 1e-4 of eager (docs/speed.md); compilation costs minutes on a CPU the first time.
        """
        self.prior = _Fast(self.prior, channels_last)
        self.estimator = _Fast(self.estimator, channels_last)
        if compile:
            import torch._inductor.config as inductor_config

            inductor_config.freezing = True  # constant-fold the frozen weights (inference only)
            self.prior = torch.compile(self.prior)
            self.estimator = torch.compile(self.estimator)
        return self

    def to(self, device: torch.device | str) -> DifFace:
        self.prior.to(device)
        self.estimator.to(device)
        return self

    @property
    def base_diffusion(self) -> Diffusion:
        """The un-respaced 1000-step chain (for the few-step solvers)."""
        if getattr(self, "_base", None) is None:
            self._base = Diffusion.create(1000, "linear", "")
        return self._base

    @property
    def device(self) -> torch.device:
        return next(self.prior.parameters()).device

    @torch.inference_mode()
    def restore(
        self,
        lq: torch.Tensor,
        *,
        start_step: int | None = None,
        eta: float | None = None,
        seeds: Sequence[int] | None = None,
        noise_fn: NoiseFn | None = None,
        dtype: torch.dtype = torch.float32,
        method: str = "ddim",
        sampler: str | None = None,
        nfe: int | None = None,
        callback: Callable[[dict], None] | None = None,
    ) -> Restoration:
        """Restore aligned faces lq (B, 3, H, W) in [0, 1].

        Randomness: either `seeds` (one per image; image b draws from its own generator, so its result
        does not depend on the batch) or an explicit `noise_fn` (replays). `start_step` is the
        respaced index N the estimate is diffused to (the loop then calls the prior at N-1, ..., 0;
        default: the model's, 100 for the official models); 0 returns the estimator's output.

        `sampler` ("ddim" or "dpmpp2m", see difface.diffusion.solvers) with `nfe` network evaluations
        replaces the official respaced loop: the same start state (original timestep
        timestep_map[start_step], 400 by default), then `nfe` steps to the clean image.
        """
        start_step = self.default_start_step if start_step is None else start_step
        eta = self.default_eta if eta is None else eta
        if lq.ndim != 4 or lq.shape[1] != 3:
            raise ValueError(f"expected lq of shape (B, 3, H, W), got {tuple(lq.shape)}")
        if not 0 <= start_step < self.diffusion.num_timesteps:
            raise ValueError(f"start_step must be in [0, {self.diffusion.num_timesteps - 1}], got {start_step}")
        dev = self.device
        y0 = lq.to(dev, torch.float32)
        h, w = y0.shape[2:]
        s = self.image_size
        resized = (h, w) != (s, s)
        y = F.interpolate(y0, size=(s, s), mode="bicubic", antialias=True) if resized else y0
        amp = (lambda: autocast_ctx(dev, dtype)) if dtype != torch.float32 else None
        with autocast_ctx(dev, dtype):
            im_hq = self.estimator(y)
        im_hq = im_hq.float().clamp_(0, 1)
        if start_step == 0:
            sample = im_hq
        else:
            if noise_fn is None:
                if seeds is None or len(seeds) != y.shape[0]:
                    raise ValueError("give one seed per image (seeds) or an explicit noise_fn")
                noise_fn = generator_noise([torch.Generator().manual_seed(int(sd)) for sd in seeds])
            x0 = (im_hq - 0.5) / 0.5
            t = torch.full((y.shape[0],), start_step, dtype=torch.long, device=dev)
            x = self.diffusion.q_sample(x0, t, noise_fn(x0))
            if sampler is None:
                denoiser = EpsDenoiser(self.prior, self.diffusion, clip=True, autocast=amp)
                x = sample_loop(denoiser, self.diffusion, x, start_step, eta=eta, method=method,
                                noise_fn=noise_fn, callback=callback)
            else:
                base = self.base_diffusion
                ts = solver_timesteps(int(self.diffusion.timestep_map[start_step]), nfe or 10)
                denoiser = EpsDenoiser(self.prior, base, clip=True, autocast=amp)
                x = solve(denoiser, base, x, ts, method=sampler, eta=eta, noise_fn=noise_fn, callback=callback)
            sample = (x * 0.5 + 0.5).clamp(0, 1)
        if resized:
            sample = F.interpolate(sample, size=(h, w), mode="bicubic", antialias=True).clamp(0, 1)
            im_hq = F.interpolate(im_hq, size=(h, w), mode="bicubic", antialias=True).clamp(0, 1)
        return Restoration(result=sample, estimate=im_hq)


class _Fast(nn.Module):
    """Wraps a network to feed it channels-last inputs (and keeps `.config` reachable)."""

    def __init__(self, net: nn.Module, channels_last: bool):
        super().__init__()
        self.net, self.channels_last = net, channels_last
        self.config = getattr(net, "config", None)
        if channels_last:
            net.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor, *args) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x, *args).contiguous()
