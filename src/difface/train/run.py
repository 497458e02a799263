"""Wiring: a TrainConfig -> network, dataset, step function, sample hook -> `loop.train`.

`run_training(cfg, run_dir)` is what `difface train prior|estimator|inpainter` calls; it works in a single
process and under `torchrun` (one process per device; see difface.distributed).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import nn

from difface import distributed
from difface.data.datasets import ImageFolder, MaskedFaces, PairedFolder, SyntheticPairs
from difface.data.degrade import get_degradation
from difface.data.masks import seeded_mask
from difface.diffusion.schedule import Diffusion
from difface.models import SwinIR, build_from_config
from difface.train.checkpoint import checkpoint_path, list_checkpoints
from difface.train.config import TrainConfig, from_dict
from difface.train.loop import SampleFn, TrainState, export_metadata, train
from difface.train.samples import make_estimator_sample_fn, make_inpainter_sample_fn, make_prior_sample_fn
from difface.train.steps import (
    StepFn,
    TimestepSampler,
    make_diffusion_step,
    make_estimator_step,
    make_inpainter_step,
)
from difface.weights import load_network, load_weights, resolve, save_network

log = logging.getLogger("difface.train")


def init_swinir_(model: SwinIR, generator: torch.Generator) -> SwinIR:
    """Training init of SwinIR (official `_init_weights`): Linear weights trunc-normal(0.02) and zero biases, LayerNorm
    (1, 0), relative-position tables trunc-normal(0.02); convolutions keep PyTorch's defaults."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02, generator=generator)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for name, p in model.named_parameters():
            if name.endswith("relative_position_bias_table"):
                nn.init.trunc_normal_(p, std=0.02, generator=generator)
    return model


def build_model(cfg: TrainConfig, *, warm_start: bool = True) -> nn.Module:
    """The network of cfg.model, initialised from cfg.seed (identical on every rank), then loaded from
    cfg.init when that is set and `warm_start` (a resumed run loads its checkpoint instead)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = build_from_config(cfg.model)
    if isinstance(model, SwinIR):
        init_swinir_(model, torch.Generator().manual_seed(cfg.seed))
    if cfg.init and warm_start:
        load_weights(model, resolve(cfg.init))
        log.info("warm start from %s", cfg.init)
    return model.train()


def build_dataset(cfg: TrainConfig):
    """ImageFolder in [-1, 1] (prior), SyntheticPairs in [0, 1] (estimator) or MaskedFaces in [0, 1]
    (inpainter) of cfg.data.folder."""
    d = cfg.data
    if not d.folder:
        raise ValueError("no training images: set data.folder in the config or pass --data DIR")
    if cfg.task == "prior":
        return ImageFolder(d.folder, size=cfg.image_size, recursive=d.recursive, flip=d.flip, seed=cfg.seed)
    if cfg.task == "inpainter":
        return MaskedFaces(d.folder, size=cfg.image_size, seed=cfg.seed, mask_kind=cfg.masks.kind, flip=d.flip,
                           recursive=d.recursive)
    preset = get_degradation(d.degradation)
    return SyntheticPairs(d.folder, preset, seed=cfg.seed, size=cfg.image_size, flip=d.flip, recursive=d.recursive)


def load_validation(cfg: TrainConfig) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The first data.val_count validation images: (lq, hq) as (N, 3, S, S) in [0, 1] (None if absent)."""
    d, n = cfg.data, cfg.data.val_count
    if not d.val_lq or n == 0:
        return None, None
    if d.val_hq:
        pairs = PairedFolder(d.val_lq, d.val_hq, size=cfg.image_size)
        items = [pairs.item(i) for i in range(min(n, len(pairs)))]
        return torch.stack([x["lq"] for x in items]), torch.stack([x["gt"] for x in items])
    lq = ImageFolder(d.val_lq, size=cfg.image_size, recursive=False, value_range=(0.0, 1.0))
    return torch.stack([lq.item(i) for i in range(min(n, len(lq)))]), None


def load_inpainting_validation(cfg: TrainConfig) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The first data.val_count faces of data.val_hq (else data.val_lq) as (N, 3, S, S) in [0, 1], and their
    fixed masks (N, 1, S, S): seeded_mask("mixed", S, masks.val_seed, i) for image i. (None, None) if absent."""
    d, n = cfg.data, cfg.data.val_count
    folder = d.val_hq or d.val_lq
    if not folder or n == 0:
        return None, None
    faces = ImageFolder(folder, size=cfg.image_size, recursive=False, value_range=(0.0, 1.0))
    gt = torch.stack([faces.item(i) for i in range(min(n, len(faces)))])
    masks = torch.stack([torch.from_numpy(seeded_mask("mixed", cfg.image_size, cfg.masks.val_seed, i))[None]
                         for i in range(len(gt))])
    return gt, masks


def build_step(cfg: TrainConfig) -> StepFn:
    if cfg.task == "prior":
        t = cfg.diffusion
        return make_diffusion_step(Diffusion.create(t.steps, t.schedule, ""), TimestepSampler(t), cfg.seed)
    if cfg.task == "inpainter":
        return make_inpainter_step(cfg.masks.hole_weight, cfg.loss)
    return make_estimator_step(cfg.loss)


def build_sample_fn(cfg: TrainConfig) -> SampleFn:
    if cfg.task == "inpainter":
        val_gt, val_mask = load_inpainting_validation(cfg)
        if val_gt is None:
            log.info("no data.val_hq: inpainter validation is skipped")
        return make_inpainter_sample_fn(val_gt, val_mask, cfg.masks.hole_weight)
    val_lq, val_hq = load_validation(cfg)
    if cfg.task == "estimator":
        if val_lq is None or val_hq is None:
            log.info("no data.val_lq / data.val_hq: estimator validation is skipped")
        return make_estimator_sample_fn(val_lq, val_hq)
    estimator = None
    if cfg.sample.estimator:
        estimator = load_network(cfg.sample.estimator).eval()
    elif val_lq is not None:
        log.info("no sample.estimator: the sample grids show unconditional samples only")
    return make_prior_sample_fn(cfg, estimator, val_lq, val_hq)


def run_training(cfg: TrainConfig, run_dir: str | Path, *, device: str = "auto", resume: dict | None = None,
                 info: distributed.DistInfo | None = None) -> TrainState:
    """Train per `cfg` into `run_dir` (optionally continuing the loaded checkpoint `resume`)."""
    run_dir = Path(run_dir)
    own = info is None
    info = info or distributed.setup(device)
    try:
        if resume is None and list_checkpoints(run_dir):
            raise FileExistsError(f"{run_dir} already holds checkpoints: continue it with --resume {run_dir} "
                                  "or choose another --out")
        dataset = build_dataset(cfg)
        dataset.check_readable()  # all files unreadable: NoReadableImages naming the folder, before the network
        sample_fn = build_sample_fn(cfg) if info.is_main else None
        model = build_model(cfg, warm_start=resume is None)
        native = cfg.native_size
        if info.is_main and native is not None and cfg.image_size != native:
            log.warning("training on %dx%d images, but the network is configured for %dx%d", cfg.image_size,
                        cfg.image_size, native, native)
        if info.is_main:
            log.info("%s: %d parameters, %d training images, %d process(es) on %s", cfg.task,
                     sum(p.numel() for p in model.parameters()), len(dataset), info.world_size, info.device)
        return train(model, build_step(cfg), dataset, cfg, run_dir, info, resume=resume, sample_fn=sample_fn)
    finally:
        if own:
            distributed.cleanup()


def _better(metric: str) -> str:
    """'max' for quality metrics (PSNR, SSIM), 'min' for errors and losses."""
    return "max" if any(k in metric for k in ("psnr", "ssim")) else "min"


def best_checkpoint(run_dir: str | Path, metric: str) -> tuple[Path, float]:
    """The kept checkpoint of `run_dir` whose validation `metric` (val.jsonl) is best.

    Higher is better for PSNR/SSIM metrics, lower for everything else (errors, losses). Raises
    ValueError naming the run and the metric when no kept checkpoint has it.
    """
    run_dir = Path(run_dir)
    log_path = run_dir / "val.jsonl"
    if not log_path.is_file():
        raise ValueError(f"{run_dir}: no val.jsonl (the run has no validation to choose by)")
    scores: dict[int, float] = {}
    for line in log_path.read_text().splitlines():
        row = json.loads(line) if line.strip() else {}
        if metric in row and "step" in row:
            scores[int(row["step"])] = float(row[metric])  # a resumed run may log a step twice: keep the last
    kept = {int(p.stem.split("_")[-1]): p for p in list_checkpoints(run_dir)}
    candidates = {s: v for s, v in scores.items() if s in kept}
    if not candidates:
        known = sorted({k for line in log_path.read_text().splitlines() if line.strip()
                        for k in json.loads(line) if k != "step"})
        raise ValueError(f"{run_dir}: no kept checkpoint has validation metric {metric!r} "
                         f"(metrics logged: {', '.join(known) or 'none'})")
    pick = max if _better(metric) == "max" else min
    step = pick(candidates, key=lambda s: candidates[s])
    return checkpoint_path(run_dir, step), candidates[step]


def export_checkpoint(saved: dict, out: str | Path) -> Path:
    """Write the weights of a loaded checkpoint (its EMA when it has one) to `out` (.safetensors),
    with the metadata a finished run's export carries (step, weights, task, t_max for priors)."""
    cfg = from_dict(saved["config"], where=saved.get("path", ""))
    model = build_model(cfg, warm_start=False)
    sd = saved["ema"] if saved.get("ema") is not None else saved["model"]
    model.load_state_dict(sd, strict=True)
    out = Path(out)
    save_network(model.eval(), out, extra=export_metadata(cfg, saved["step"], ema=saved.get("ema") is not None))
    return out
