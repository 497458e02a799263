"""Training of the DifFace networks: the diffusion prior (UNet), the diffused estimator (SwinIR) and the
inpainting estimator (LaMa).

    from difface.train import load_config, run_training
    cfg = load_config("configs/train/prior_tiny64.yaml", "prior")
    run_training(cfg, "runs/prior")      # or: difface train prior --config ... --out runs/prior

Modules: config (TrainConfig, strict YAML), loop (train, lr_at, accumulate_gradients), steps
(diffusion / estimator / inpainter steps), ema (EMA), batchnorm (global-batch BatchNorm statistics),
data (process-count-independent batches), checkpoint, samples (grids, validation), distributed
(torchrun helpers), run (wiring).
"""

from difface.distributed import is_main_process
from difface.train.checkpoint import find_checkpoint, load_checkpoint
from difface.train.config import (
    DEFAULTS,
    ConfigError,
    DataConfig,
    MaskConfig,
    OptimConfig,
    SampleConfig,
    TimestepConfig,
    TrainConfig,
    apply_overrides,
    dump_config,
    from_dict,
    load_config,
)
from difface.train.ema import EMA
from difface.train.loop import TrainState, accumulate_gradients, export_weights, lr_at, train
from difface.train.run import build_dataset, build_model, build_step, run_training
from difface.train.steps import (
    StepOutput,
    TimestepSampler,
    make_diffusion_step,
    make_estimator_step,
    make_inpainter_step,
    weighted_pixel_loss,
)

__all__ = [
    "DEFAULTS", "EMA", "ConfigError", "DataConfig", "MaskConfig", "OptimConfig", "SampleConfig", "StepOutput",
    "TimestepConfig", "TimestepSampler", "TrainConfig", "TrainState", "accumulate_gradients", "apply_overrides",
    "build_dataset", "build_model", "build_step", "dump_config", "export_weights", "find_checkpoint", "from_dict",
    "is_main_process", "load_checkpoint", "load_config", "lr_at", "make_diffusion_step", "make_estimator_step",
    "make_inpainter_step", "run_training", "train", "weighted_pixel_loss",
]
