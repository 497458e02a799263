"""Training of the DifFace networks: the diffusion prior (UNet) and the diffused estimator (SwinIR).

    from difface.train import load_config, run_training
    cfg = load_config("configs/train/prior_tiny64.yaml", "prior")
    run_training(cfg, "runs/prior")      # or: difface train prior --config ... --out runs/prior

Modules: config (TrainConfig, strict YAML), loop (train, lr_at, accumulate_gradients), steps
(diffusion / estimator steps), ema (EMA), data (process-count-independent batches), checkpoint,
samples (grids, validation), distributed (torchrun helpers), run (wiring).
"""

from difface.distributed import is_main_process
from difface.train.checkpoint import find_checkpoint, load_checkpoint
from difface.train.config import (
    DEFAULTS,
    ConfigError,
    DataConfig,
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
from difface.train.steps import StepOutput, TimestepSampler, make_diffusion_step, make_estimator_step

__all__ = [
    "DEFAULTS", "EMA", "ConfigError", "DataConfig", "OptimConfig", "SampleConfig", "StepOutput", "TimestepConfig",
    "TimestepSampler", "TrainConfig", "TrainState", "accumulate_gradients", "apply_overrides", "build_dataset",
    "build_model", "build_step", "dump_config", "export_weights", "find_checkpoint", "from_dict",
    "is_main_process", "load_checkpoint", "load_config", "lr_at", "make_diffusion_step", "make_estimator_step",
    "run_training", "train",
]
